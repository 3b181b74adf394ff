"""Finding the task behind a lost submit answer (SPEC §6): the decision rules, the runner against
the scripted stub, and the WaveSpeed task list against the stand-in. Every runner test counts the
tasks the stub created (``provider.submits``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fake_wavespeed import FakeWaveSpeed, Task
from money_kit import reserve
from money_kit import submit as paid_submit
from runner_stub import clip_source
from state_kit import seed
from test_runner import JOBS, World
from test_wavespeed import KEY, O3, SIMPLE, job, make, run

from kling_render.errors import ProviderError
from kling_render.jobs import ListedTask
from kling_render.plan.keys import fingerprint
from kling_render.records.lifecycle import Status
from kling_render.records.state import ShotState
from kling_render.report.progress import ListSink
from kling_render.run.reconcile import decide, inputs_match
from kling_render.run.scheduler import RunOptions

pytestmark = pytest.mark.stand_in(latency=0.15, api_key=KEY)

NOW = 1_700_000_000.0
BODY = {"prompt": "a mug", "image": "https://cdn/a.png", "duration": 5, "cfg_scale": 0.5}
WIRE = fingerprint(BODY)


def listed(task_id: str, inputs: dict[str, object] | None = BODY, at: float = NOW + 1) -> ListedTask:
    return ListedTask(task_id, "processing", at, inputs)


def decision(tasks: list[ListedTask], *, known: set[str] | None = None, asked: float = NOW + 5, wire=WIRE):  # type: ignore[no-untyped-def]
    return decide(tasks, wire=wire, known=known or set(), submitted_at=NOW, asked_at=asked, grace=60)


# -- the rules ------------------------------------------------------------------------------------


def test_inputs_are_compared_canonically_on_the_fields_sent() -> None:
    assert inputs_match(WIRE, {**BODY, "duration": 5.0})  # 5.0 is 5
    assert inputs_match(WIRE, {**BODY, "enable_safety_checker": True})  # fields the service adds
    assert not inputs_match(WIRE, {**BODY, "prompt": "a cup"})
    assert not inputs_match(WIRE, {k: v for k, v in BODY.items() if k != "image"})
    assert not inputs_match(WIRE, {**BODY, "cfg_scale": 0.6})
    assert not inputs_match({}, BODY)  # nothing recorded: nothing matches by inputs


def test_the_matching_task_is_adopted_and_known_ids_are_not() -> None:
    other = {**BODY, "prompt": "another shot"}
    tasks = [listed("new", other), listed("mine"), listed("known")]
    found = decision(tasks, known={"known"})
    assert (found.kind, found.task_id) == ("adopt", "mine") and "inputs match" in found.message
    assert decision([listed("known")], known={"known"}, asked=NOW + 61).kind == "absent"


def test_without_inputs_only_a_single_candidate_is_adopted() -> None:
    assert decision([listed("only", None)]).task_id == "only"
    two = decision([listed("a", None), listed("b", None)])
    assert two.kind == "ambiguous" and two.message.startswith("2 tasks in the provider's task list")
    mixed = decision([listed("a"), listed("b", None)])
    assert mixed.kind == "ambiguous" and "2 tasks" in mixed.message and "1 with matching inputs" in mixed.message


def test_two_tasks_with_the_same_inputs_are_ambiguous() -> None:
    both = decision([listed("a"), listed("b")])
    assert both.kind == "ambiguous" and "2 tasks" in both.message


def test_tasks_outside_the_window_are_not_candidates() -> None:
    far = [listed("early", at=NOW - 3600), listed("late", at=NOW + 3600)]
    assert decision(far, asked=NOW + 61).kind == "absent"


def test_absence_is_proven_only_after_the_grace() -> None:
    soon = decision([], asked=NOW + 5)
    assert soon.kind == "wait"
    late = decision([], asked=NOW + 60)
    assert late.kind == "absent" and "created nothing" in late.message


def test_a_matching_task_with_an_unusable_id_is_not_adopted() -> None:
    bad = decision([listed("bad\nid")])
    assert bad.kind == "ambiguous" and "cannot use" in bad.message


# -- the runner against the stub ------------------------------------------------------------------


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    clip_source(root, 1)
    return root


@pytest.fixture
def world(tmp_path: Path, sources: Path) -> World:
    return World(tmp_path, sources)


FAST = RunOptions(poll_interval=0.01, reconcile_grace=0.3)


def test_a_lost_answer_is_found_and_polled_in_the_same_run(world: World) -> None:
    world.provider.script = {"intro": ["uncertain"]}
    sink = ListSink()
    report = world.render(JOBS, FAST, sink)
    assert report.exit_code == 0 and world.provider.submits["intro"] == 1  # adopted, not paid again
    assert report.uncertain_usd == pytest.approx(0) and report.spent_usd == pytest.approx(0.3)
    kinds = sink.kinds("intro")
    assert kinds[:3] == ["submitting", "unknown", "reconciled"] and kinds[-1] == "done"
    reconciled = next(e for e in sink.events if e.kind == "reconciled")
    assert "inputs match" in (reconciled.message or "") and reconciled.task_id
    assert world.state()["intro"].task_id == reconciled.task_id


def test_a_submit_the_list_proves_absent_is_sent_again_after_the_grace(world: World) -> None:
    world.provider.script = {"intro": ["lost"]}
    sink = ListSink()
    started = time.monotonic()
    report = world.render(JOBS[:1], FAST, sink)
    assert time.monotonic() - started >= 0.3  # the grace was waited for
    assert report.exit_code == 0 and world.provider.submits["intro"] == 1  # the lost one created nothing
    assert world.provider.listings >= 2  # asked shortly after, then again after the grace
    reconciled = next(e for e in sink.events if e.kind == "reconciled")
    assert "created nothing" in (reconciled.message or "") and "submitted again" in (reconciled.message or "")
    ledger = world.ledger(JOBS[0].key)
    assert [t.outcome for t in ledger.tasks] == ["absent", "done"] and ledger.created == 1


def test_a_run_after_a_crash_adopts_the_task_at_the_start(world: World) -> None:
    world.provider.lists_tasks = False  # the first process could not settle it (as if killed)
    world.provider.script = {"intro": ["uncertain"]}
    first = world.render(JOBS[:2], FAST)
    assert first.outcomes["intro"].status == "unknown"
    world.provider.lists_tasks = True
    sink = ListSink()
    second = world.render(JOBS[:2], FAST, sink)
    assert second.exit_code == 0 and world.provider.submits["intro"] == 1
    assert sink.kinds("intro")[0] == "reconciled"
    assert second.spent_usd == 0  # paid by the first run, not this one


def test_ambiguity_stays_unknown_and_says_how_many(world: World) -> None:
    world.provider.list_inputs = False  # no inputs: two unknown submits of one model are indistinguishable
    world.provider.script = {"intro": ["uncertain"], "pour": ["uncertain"]}
    jobs = JOBS[:2]
    report = world.render(jobs, RunOptions(poll_interval=0.05, reconcile_grace=0.3, concurrency=2))
    for sid in ("intro", "pour"):
        assert report.outcomes[sid].status == "unknown"
        assert "2 tasks in the provider's task list could be this submit's" in (report.outcomes[sid].error or "")
    assert sum(world.provider.submits.values()) == 2
    again = world.render(jobs, FAST)  # the next run asks again: still two
    assert again.by_status("unknown") == ["intro", "pour"] and sum(world.provider.submits.values()) == 2
    forced = world.render(jobs, RunOptions(poll_interval=0.01, resubmit_unknown=True))  # the override
    assert forced.exit_code == 0 and sum(world.provider.submits.values()) == 4
    assert world.ledger(jobs[0].key).created == 2  # the abandoned one still counts against the cap


def test_known_task_ids_are_never_adopted(world: World) -> None:
    world.provider.list_inputs = False
    assert world.render(JOBS[:1], FAST).exit_code == 0  # intro's task is now known
    world.provider.script = {"pour": ["uncertain"]}
    report = world.render(JOBS[:2], FAST)
    assert report.exit_code == 0 and world.provider.submits["pour"] == 1  # the only unknown one: pour's


def test_an_unknown_from_an_old_state_without_a_fingerprint_is_matched_by_time(world: World) -> None:
    world.provider.lists_tasks = False
    world.provider.script = {"intro": ["uncertain"]}
    world.render(JOBS[:1], FAST)
    doc = json.loads(world.state_path.read_text())
    doc["shots"]["intro"]["wire"] = None
    world.state_path.write_text(json.dumps(doc))
    world.provider.lists_tasks = True
    assert world.render(JOBS[:1], FAST).exit_code == 0 and world.provider.submits["intro"] == 1


def test_a_task_list_that_fails_leaves_the_shot_unknown(world: World) -> None:
    async def broken(*args: object) -> list[ListedTask]:
        raise ProviderError("task list of x: server answered 503")

    world.provider.list_tasks = broken  # type: ignore[method-assign]
    world.provider.script = {"intro": ["uncertain"]}
    report = world.render(JOBS[:1], FAST)
    error = report.outcomes["intro"].error or ""
    assert report.outcomes["intro"].status == "unknown" and "task list could not be read" in error
    assert "--resubmit-unknown" in error and world.provider.submits["intro"] == 1


def test_an_unknown_older_than_the_retention_may_be_submitted_again(world: World) -> None:
    world.provider.output_retention = 3600.0
    old = ShotState(JOBS[0].key, Status.UNKNOWN, 1, submitted_at="2020-01-01T00:00:00+00:00")
    seed(world.state_path, {"intro": old})
    sink = ListSink()
    report = world.render(JOBS[:1], FAST, sink)
    assert report.exit_code == 0 and world.provider.submits["intro"] == 1 and world.provider.listings == 0
    reconciled = next(e for e in sink.events if e.kind == "reconciled")
    assert "whatever it created is gone" in (reconciled.message or "")


# -- the task list of the stand-in ----------------------------------------------------------------


def add_tasks(
    fake_wavespeed: FakeWaveSpeed, n: int, model: str = O3, start: float | None = None, prefix: str = "task"
) -> list[str]:
    ids = []
    base = time.time() if start is None else start
    for i in range(n):
        task = Task(f"{prefix}{i:04d}", model, {"prompt": f"p{i}"}, time.monotonic(), 1000.0)  # never done
        task.created_at = base - i  # task0000 is the newest
        fake_wavespeed.tasks[task.id] = task
        ids.append(task.id)
    return ids


def test_the_task_list_is_paged_newest_first_with_inputs(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    ids = add_tasks(fake_wavespeed, 230)
    # another model
    add_tasks(fake_wavespeed, 5, model="kling-v3.0-std/image-to-video", start=time.time() + 10, prefix="v3")
    now = time.time()
    tasks = run(make(fake_wavespeed, tmp_path), lambda p: p.list_tasks("kwaivgi/" + O3, now - 3600, now + 60))
    assert [t.id for t in tasks] == ids  # every page, newest first, one model
    assert all(t.inputs == {"prompt": f"p{i}"} for i, t in enumerate(tasks))
    bodies = [r.body for r in fake_wavespeed.listings()]
    assert [b["page"] for b in bodies] == [1, 2, 3]
    assert all(b["page_size"] == 100 and b["include_inputs"] is True for b in bodies)
    assert all(b["model"] == f"kwaivgi/{O3}" for b in bodies)


def test_the_task_list_stops_at_the_window(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    add_tasks(fake_wavespeed, 150)
    now = time.time()
    tasks = run(make(fake_wavespeed, tmp_path), lambda p: p.list_tasks("kwaivgi/" + O3, now - 20, now + 60))
    newest_first = sorted(fake_wavespeed.tasks.values(), key=lambda t: -t.created_at)
    expected = [t.id for t in newest_first if t.created_at >= now - 20]
    assert [t.id for t in tasks] == expected and len(expected) in (20, 21)
    assert len(fake_wavespeed.listings()) == 1  # one page: the service applied the window


def test_the_stand_in_lists_only_seven_days_and_checks_its_filters(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    old, new = add_tasks(fake_wavespeed, 2)
    fake_wavespeed.tasks[old].created_at = time.time() - 8 * 24 * 3600
    now = time.time()
    month = 30 * 24 * 3600
    tasks = run(make(fake_wavespeed, tmp_path), lambda p: p.list_tasks("kwaivgi/" + O3, now - month, now + 60))
    assert [t.id for t in tasks] == [new]
    import httpx

    with httpx.Client(base_url=fake_wavespeed.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for bad in ({"page": 1, "page_size": 101}, {"page": 0, "page_size": 10}, {"page": 1}):
            answer = client.post("/api/v3/predictions", json=bad)
            assert answer.status_code == 400 and answer.json()["code"] == 400
        done = client.post("/api/v3/predictions", json={"page": 1, "page_size": 10, "status": "completed"})
        assert done.json()["data"]["items"] == []  # both are still processing


def test_without_include_inputs_the_items_carry_none(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.listing_inputs = False

    async def work(p):  # type: ignore[no-untyped-def]
        task_id = await paid_submit(p, job(O3, SIMPLE))
        now = time.time()
        return task_id, await p.list_tasks("kwaivgi/" + O3, now - 60, now + 60)

    task_id, tasks = run(make(fake_wavespeed, tmp_path), work)
    assert [(t.id, t.inputs) for t in tasks] == [(task_id, None)]


def test_a_listed_task_carries_the_body_as_sent(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    async def work(p):  # type: ignore[no-untyped-def]
        res = await reserve(p, job(O3, SIMPLE))
        body = res.body
        await p.send(res)
        now = time.time()
        return body, await p.list_tasks("kwaivgi/" + O3, now - 60, now + 60)

    body, tasks = run(make(fake_wavespeed, tmp_path), work)
    assert len(tasks) == 1 and inputs_match(fingerprint(body), tasks[0].inputs or {})


def test_the_task_list_honours_its_envelope(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    add_tasks(fake_wavespeed, 3)
    now = time.time()
    fake_wavespeed.faults.add("envelope", "/api/v3/predictions", method="POST", code=500)  # retried
    tasks = run(make(fake_wavespeed, tmp_path), lambda p: p.list_tasks("kwaivgi/" + O3, now - 60, now + 60))
    assert len(tasks) == 3 and [r.status for r in fake_wavespeed.listings()] == [200, 200]
    fake_wavespeed.faults.add("envelope", "/api/v3/predictions", method="POST", code=400, message="bad filter")
    with pytest.raises(ProviderError, match=r"rejected \(code 400\): bad filter"):
        run(make(fake_wavespeed, tmp_path), lambda p: p.list_tasks("kwaivgi/" + O3, now - 60, now + 60))
