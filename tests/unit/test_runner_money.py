"""The ledger rules of the runner (SPEC §6) against the scripted stub: failures by cause, refunds,
the lifetime cap per shot key, bad task ids in the state file. Every test counts the tasks the
stub created (``provider.submits``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runner_stub import clip_source, make_job
from state_kit import seed
from test_runner import JOBS, World

from kling_render.records.lifecycle import Status
from kling_render.records.state import ShotState
from kling_render.report.progress import ListSink
from kling_render.run.scheduler import RunOptions

FAST = RunOptions(poll_interval=0.01)
RETRY_FAILED = RunOptions(poll_interval=0.01, retry_failed=True)


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    for seconds in (1, 3):
        clip_source(root, seconds)
    return root


@pytest.fixture
def world(tmp_path: Path, sources: Path) -> World:
    return World(tmp_path, sources)


def test_a_permanent_failure_is_never_paid_again_for_the_same_inputs(world: World) -> None:
    world.provider.script = {"intro": ["fail:1200"]}
    first = world.render(JOBS[:2])
    outcome = first.outcomes["intro"]
    assert outcome.status == "failed" and outcome.error_code == "1200" and world.provider.submits["intro"] == 1
    assert "(code 1200): content moderation (stub); refunded" in (outcome.error or "")
    assert "--retry-failed" in (outcome.error or "")
    assert first.refunded_usd == pytest.approx(0.1) and first.spent_usd == pytest.approx(0.1)  # pour's only
    record = world.state()["intro"]
    assert record.status == "failed" and record.error_code == "1200" and record.refunded_usd == pytest.approx(0.1)

    for _ in range(2):  # later runs: nothing submitted, the same message, exit 1
        again = world.render(JOBS[:2])
        assert again.outcomes["intro"].status == "failed" and again.exit_code == 1
        assert "failed for good (code 1200)" in (again.outcomes["intro"].error or "")
        assert again.outcomes["intro"].error_code == "1200"
        assert world.provider.submits["intro"] == 1 and again.spent_usd == 0

    forced = world.render(JOBS[:2], RETRY_FAILED)  # the user asks: one new task
    assert forced.exit_code == 0 and world.provider.submits["intro"] == 2
    assert [t.outcome for t in world.ledger(JOBS[0].key).tasks] == ["failed", "done"]


def test_a_new_take_may_be_submitted_after_a_permanent_failure(world: World) -> None:
    world.provider.script = {"intro": ["fail:1401"]}
    assert world.render(JOBS[:1]).exit_code == 1
    bumped = make_job("intro", take=2)
    assert world.render([bumped]).exit_code == 0 and world.provider.submits["intro"] == 2
    # back to the first take: its key's history is kept, although the shot's record was reset
    back = world.render(JOBS[:1])
    assert back.outcomes["intro"].status == "failed" and world.provider.submits["intro"] == 2


@pytest.mark.parametrize("transient", ["fail:5000", "fail:5003", "fail:5004", "fail:1300", "fail"])
def test_transient_and_unclassified_failures_are_replaced_within_the_cap(world: World, transient: str) -> None:
    world.provider.script = {"intro": [transient, transient, "ok"]}
    report = world.render(JOBS[:1])
    assert report.exit_code == 0 and world.provider.submits["intro"] == 3
    assert report.refunded_usd == pytest.approx(0.2) and report.spent_usd == pytest.approx(0.1)


def test_the_cap_counts_every_task_of_a_key_over_all_runs(world: World) -> None:
    world.provider.script = {"intro": ["fail:5000", "empty", "fail:5003", "ok"]}
    first = world.render(JOBS[:1], RunOptions(poll_interval=0.01, max_task_attempts=2))
    assert first.outcomes["intro"].status == "failed" and world.provider.submits["intro"] == 2
    # the default cap of 3 allows one more task, over all runs, not three more
    second = world.render(JOBS[:1])
    assert second.outcomes["intro"].status == "failed" and world.provider.submits["intro"] == 3
    error = second.outcomes["intro"].error or ""
    assert "these inputs have created 3 tasks over all runs, the cap of 3" in error
    third = world.render(JOBS[:1])
    assert third.outcomes["intro"].status == "failed" and world.provider.submits["intro"] == 3
    assert third.spent_usd == 0
    # an edit and back: the shot's record is reset each time, the key's history is not
    assert world.render([make_job("intro", take=2)]).exit_code == 0  # a new key: "ok"
    assert world.render(JOBS[:1]).outcomes["intro"].status == "failed"
    assert world.provider.submits["intro"] == 4
    ledger = world.ledger(JOBS[0].key)
    assert ledger.created == 3 and ledger.refunded_usd == pytest.approx(0.2) and ledger.paid_usd == pytest.approx(0.1)
    assert world.render(JOBS[:1], RETRY_FAILED).exit_code == 0  # the user asks: more tasks
    assert world.provider.submits["intro"] == 5


def test_unusable_results_are_paid_count_and_are_fetched_again_before_a_replacement(world: World) -> None:
    world.provider.script = {"intro": ["empty", "bad", "empty", "ok"]}
    spent = []
    for _ in range(3):  # each run: the kept task fetched again, unusable again, one replacement paid
        report = world.render(JOBS[:1])
        assert report.outcomes["intro"].status == "failed" and report.refunded_usd == 0
        spent.append(report.spent_usd)
    assert world.provider.submits["intro"] == 3 and spent == pytest.approx([0.1, 0.1, 0.1])
    assert [t.outcome for t in world.ledger(JOBS[0].key).tasks] == ["unusable"] * 3
    last = world.render(JOBS[:1])  # the third task is fetched again; no fourth: the cap of 3
    assert last.outcomes["intro"].status == "failed" and "the cap of 3" in (last.outcomes["intro"].error or "")
    assert world.provider.submits["intro"] == 3 and last.spent_usd == 0


def test_refunded_failures_free_the_budget(world: World) -> None:
    world.provider.script = {"intro": ["fail:5000", "ok"]}
    report = world.render(JOBS[:2], RunOptions(poll_interval=0.01, concurrency=1, budget_usd=0.2))
    assert report.exit_code == 0 and not report.budget_stopped
    assert report.spent_usd == pytest.approx(0.2) and report.refunded_usd == pytest.approx(0.1)


def test_the_run_summary_shows_refunds(world: World) -> None:
    world.provider.script = {"intro": ["fail:5000", "ok"]}
    sink = ListSink()
    world.render(JOBS[:1], sink=sink)
    finish = next(e for e in sink.events if e.kind == "finish")
    assert finish.message == "1 done; spent $0.1000 ($0.1000 refunded)"


@pytest.mark.parametrize("bad_id", ["abc\ndef", "x" * 70_000, "../../etc/passwd", 42])
def test_a_bad_task_id_in_the_state_file_makes_the_shot_unknown(world: World, bad_id: object) -> None:
    seed(world.state_path, {"intro": ShotState(JOBS[0].key, Status.SUBMITTED, 1, "t-good")})
    doc = json.loads(world.state_path.read_text())
    doc["shots"]["intro"]["task_id"] = bad_id
    world.state_path.write_text(json.dumps(doc))
    report = world.render(JOBS[:2])
    outcome = report.outcomes["intro"]
    assert outcome.status == "unknown" and "unusable task id" in (outcome.error or "")
    assert len(outcome.error or "") < 600
    assert not [t for t in world.provider.polls if "intro" in t]  # never polled
    assert world.provider.submits["intro"] == 0  # nor paid again
    assert report.outcomes["pour"].status == "done"
