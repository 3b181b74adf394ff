"""The runner against a scripted stub provider: real files, real asyncio, real clips and probe."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from runner_stub import StubProvider, clip_source, make_job
from state_kit import seed

from kling_render.errors import BudgetError
from kling_render.jobs import Job
from kling_render.records.ledger import KeyLedger
from kling_render.records.lifecycle import Status
from kling_render.records.lockfile import LockFile, read_lock
from kling_render.records.state import ShotState, StateStore, read_ledger, read_state
from kling_render.report.progress import Event, JsonLinesSink, ListSink, PlainSink
from kling_render.report.sinks import make_sink
from kling_render.run.scheduler import RunOptions, RunReport, execute, run
from kling_render.store.cache import ClipCache

FAST = RunOptions(poll_interval=0.01)


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    for seconds in (1, 3):
        clip_source(root, seconds)
    return root


class World:
    """One project directory: its state file, cache and lock file, and a stub provider."""

    def __init__(self, root: Path, sources: Path) -> None:
        self.project = root / "teaser.yaml"
        self.cache = ClipCache(root / ".kling-render" / "cache")
        self.lock = LockFile(root / "teaser.lock")
        self.state_path = StateStore.for_project(self.project, "stub").path
        self.provider = StubProvider(sources)

    def render(
        self, jobs: Sequence[Job], options: RunOptions = FAST, sink: ListSink | None = None
    ) -> RunReport:
        with StateStore.for_project(self.project, "stub") as state:
            return asyncio.run(
                execute(jobs, self.provider, state=state, cache=self.cache, options=options,
                        events=sink or ListSink(), lock=self.lock)
            )  # fmt: skip

    def state(self) -> dict[str, ShotState]:
        return read_state(self.state_path)

    def ledger(self, key: str) -> KeyLedger:
        return read_ledger(self.state_path).get(key, KeyLedger())

    def cache_files(self) -> list[str]:
        return sorted(
            p.name for p in self.cache.root.rglob("*")
            if p.is_file() and p.suffix in (".mp4", ".json") and p.relative_to(self.cache.root).parts[0] != "probes"
        )  # clips and sidecars (not the put lock, the verification memos, nor the probe memos by digest)


@pytest.fixture
def world(tmp_path: Path, sources: Path) -> World:
    return World(tmp_path, sources)


JOBS = [make_job("intro", index=0), make_job("pour", index=1), make_job("hero", index=2)]


def test_render_then_rerender_submits_nothing_and_costs_nothing(world: World) -> None:
    sink = ListSink()
    report = world.render(JOBS, sink=sink)
    assert report.exit_code == 0
    assert report.spent_usd == pytest.approx(0.3)
    assert report.by_status("done") == ["intro", "pour", "hero"]
    assert dict(world.provider.submits) == {"intro": 1, "pour": 1, "hero": 1}
    state = world.state()
    assert all(
        s.status == "done" and s.output_sha256 and s.task_id and s.cost_usd == 0.1 for s in state.values()
    )
    lock = read_lock(world.lock.path)
    assert set(lock) == {"intro", "pour", "hero"}
    assert (
        lock["intro"].output_sha256
        == state["intro"].output_sha256
        == world.cache.get("stub", JOBS[0].key).sha256
    )  # type: ignore[union-attr]
    assert len(world.cache_files()) == 6 and not list(world.cache.tmp_dir.iterdir())
    assert sink.kinds("intro") == ["submitting", "submitted", "polling", "downloaded", "done"]
    assert sink.kinds()[0] == "start" and sink.kinds()[-1] == "finish"

    lock_text = world.lock.path.read_text()
    sink2 = ListSink()
    again = world.render(JOBS, sink=sink2)
    assert again.exit_code == 0 and again.spent_usd == 0
    assert again.by_status("cached") == ["intro", "pour", "hero"]
    assert sum(world.provider.submits.values()) == 3
    assert world.lock.path.read_text() == lock_text
    assert sink2.kinds("pour") == ["skipped-cached"]


def test_every_transition_is_on_disk_before_the_next_step(world: World) -> None:
    world.provider.gates["pour"] = asyncio.Event()
    world.provider.submit_gates["intro"] = asyncio.Event()
    seen: dict[str, ShotState] = {}

    async def scenario() -> RunReport:
        with StateStore.for_project(world.project, "stub") as state:
            task = asyncio.create_task(
                execute(JOBS, world.provider, state=state, cache=world.cache, options=FAST, lock=world.lock)
            )
            await _wait_for(world.provider, "intro")
            seen["intro"] = world.state()["intro"]
            await _wait_for(world.provider, "pour")
            seen["pour"] = world.state()["pour"]
            world.provider.submit_gates["intro"].set()
            world.provider.gates["pour"].set()
            return await task

    report = asyncio.run(scenario())
    assert report.exit_code == 0
    assert (
        seen["intro"].status == "submitting" and seen["intro"].task_id is None and seen["intro"].attempts == 1
    )
    assert seen["pour"].status == "submitted" and seen["pour"].task_id and seen["pour"].cost_usd == 0.1
    assert not [p for p in world.state_path.parent.iterdir() if p.name.endswith(".tmp")]


async def _wait_for(provider: StubProvider, shot: str) -> None:
    for _ in range(500):
        if shot in provider.entered:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{shot} never reached its gate")


def test_a_submitted_shot_is_polled_again_never_resubmitted(world: World) -> None:
    world.provider.tasks["t-old"] = {"shot": "intro", "behaviour": "ok", "duration": 1, "polls": 0}
    seed(world.state_path, {"intro": ShotState(JOBS[0].key, Status.SUBMITTED, 1, "t-old", cost_usd=0.1)})
    report = world.render(JOBS[:1])
    assert report.by_status("done") == ["intro"] and report.spent_usd == 0
    assert world.provider.submits["intro"] == 0 and world.provider.polls["t-old"] == 1
    assert world.state()["intro"].cost_usd == 0.1
    assert read_lock(world.lock.path)["intro"].task_id == "t-old"


def test_a_crash_during_submit_makes_the_shot_unknown_until_resubmit_is_asked(world: World) -> None:
    seed(world.state_path, {"intro": ShotState(key=JOBS[0].key, status=Status.SUBMITTING, attempts=1)})
    sink = ListSink()
    report = world.render(JOBS[:2], sink=sink)
    assert report.outcomes["intro"].status == "unknown" and report.exit_code == 1
    assert "--resubmit-unknown" in (report.outcomes["intro"].error or "")
    assert world.state()["intro"].status == "unknown" and world.provider.submits["intro"] == 0
    assert report.outcomes["pour"].status == "done"
    assert world.render(JOBS[:2]).outcomes["intro"].status == "unknown"  # still skipped
    report = world.render(JOBS[:2], RunOptions(poll_interval=0.01, resubmit_unknown=True))
    assert report.exit_code == 0 and world.provider.submits["intro"] == 1
    assert world.state()["intro"].attempts == 2


def test_an_uncertain_submit_is_unknown_and_counts_against_the_budget(world: World) -> None:
    world.provider.lists_tasks = False  # a provider without a task list: nothing can settle it
    world.provider.script = {"intro": ["uncertain"]}
    report = world.render(JOBS, RunOptions(poll_interval=0.01, concurrency=1, budget_usd=0.3))
    assert report.outcomes["intro"].status == "unknown" and report.uncertain_usd == pytest.approx(0.1)
    assert world.state()["intro"].status == "unknown"
    assert report.exit_code == 1 and report.spent_usd == pytest.approx(0.2)
    again = world.render(JOBS)
    assert again.outcomes["intro"].status == "unknown" and world.provider.submits["intro"] == 1


def test_a_refused_submit_fails_this_run_and_the_next_run_renders_it(world: World) -> None:
    world.provider.script = {"pour": ["refused"]}
    report = world.render(JOBS)
    assert report.outcomes["pour"].status == "failed" and report.exit_code == 1
    assert "429" in (world.state()["pour"].error or "") and world.state()["pour"].status == "failed"
    assert report.spent_usd == pytest.approx(0.2)
    again = world.render(JOBS)
    assert (
        again.exit_code == 0 and again.by_status("done") == ["pour"] and again.spent_usd == pytest.approx(0.1)
    )


@pytest.mark.parametrize("bad", ["fail", "fail:5000"])
def test_a_failed_task_is_refunded_and_retried_as_a_new_task_in_the_same_run(world: World, bad: str) -> None:
    world.provider.script = {"intro": [bad, "ok"]}
    sink = ListSink()
    report = world.render(JOBS[:1], sink=sink)
    assert report.exit_code == 0 and world.provider.submits["intro"] == 2
    record = world.state()["intro"]
    assert record.cost_usd == pytest.approx(0.2) and record.refunded_usd == pytest.approx(0.1)
    assert report.spent_usd == pytest.approx(0.1) and report.refunded_usd == pytest.approx(0.1)
    assert "retry" in sink.kinds("intro")
    assert record.attempts == 2
    ledger = world.ledger(JOBS[0].key)
    assert [t.outcome for t in ledger.tasks] == ["failed", "done"]
    assert not list(world.cache.tmp_dir.iterdir())


@pytest.mark.parametrize("bad", ["bad", "empty"])
def test_an_unusable_result_is_never_paid_twice_in_one_run_and_fetched_again_first(world: World, bad: str) -> None:
    """Free first: a paid task whose output cannot be used fails the shot with its task kept; the
    next run fetches that task again (free), and pays a replacement only when that fails too."""
    world.provider.script = {"intro": [bad, "ok"]}
    report = world.render(JOBS[:1])
    assert report.exit_code == 1 and world.provider.submits["intro"] == 1  # not paid twice this run
    record = world.state()["intro"]
    assert record.status == "submitted" and record.task_id  # kept for the next run
    assert "fetches its output again" in (record.error or "")
    assert [t.outcome for t in world.ledger(JOBS[0].key).tasks] == ["unusable"]
    again = world.render(JOBS[:1])  # fetched again: still unusable, so now a replacement is paid
    assert again.exit_code == 0 and world.provider.submits["intro"] == 2
    assert [t.outcome for t in world.ledger(JOBS[0].key).tasks] == ["unusable", "done"]
    assert world.render(JOBS[:1]).by_status("cached") == ["intro"] and world.provider.submits["intro"] == 2
    assert not list(world.cache.tmp_dir.iterdir())


def test_a_clip_of_the_wrong_length_is_kept_with_a_warning(world: World) -> None:
    world.provider.script = {"intro": ["wrong-duration"]}
    sink = ListSink()
    report = world.render(JOBS[:1], sink=sink)
    assert report.exit_code == 0 and world.provider.submits["intro"] == 1  # paid once, not again
    warning = report.outcomes["intro"].warning or ""
    assert "the clip lasts 3.00s, the shot 1s: kept" in warning
    done = [e for e in sink.events if e.kind == "done"]
    assert done and done[0].message == warning
    entry = world.cache.get("stub", JOBS[0].key)
    assert entry is not None and entry.duration == pytest.approx(3.0, abs=0.05)  # its real length
    assert world.render(JOBS[:1]).by_status("cached") == ["intro"]


def test_retries_stop_at_the_limit(world: World) -> None:
    world.provider.script = {"intro": ["fail"] * 5}
    report = world.render(JOBS[:1], RunOptions(poll_interval=0.01, max_task_attempts=2))
    assert report.outcomes["intro"].status == "failed" and world.provider.submits["intro"] == 2
    record = world.state()["intro"]
    assert record.status == "failed" and "moderation" in (record.error or "")
    assert "the cap of 2" in (record.error or "")
    assert world.cache.get("stub", JOBS[0].key) is None
    again = world.render(JOBS[:1], RunOptions(poll_interval=0.01, max_task_attempts=2))
    assert again.outcomes["intro"].status == "failed" and world.provider.submits["intro"] == 2


@pytest.mark.parametrize("trouble", ["poll-error", "download-error"])
def test_poll_or_download_trouble_keeps_the_task_for_the_next_run(world: World, trouble: str) -> None:
    world.provider.script = {"intro": [trouble]}
    report = world.render(JOBS[:1])
    assert report.outcomes["intro"].status == "failed" and report.exit_code == 1
    record = world.state()["intro"]
    assert record.status == "submitted" and record.task_id and "next run" in (record.error or "")
    world.provider.tasks[record.task_id]["behaviour"] = "ok"  # the service recovered
    again = world.render(JOBS[:1])
    assert again.exit_code == 0 and world.provider.submits["intro"] == 1 and again.spent_usd == 0


def test_budget_refuses_to_start_and_submits_nothing(world: World) -> None:
    with pytest.raises(BudgetError, match=r"\$0\.3000.*\$0\.2500"):
        world.render(JOBS, RunOptions(poll_interval=0.01, budget_usd=0.25))
    assert sum(world.provider.submits.values()) == 0 and world.state() == {}
    # cached shots cost nothing, so the same budget is enough once two are rendered
    world.render(JOBS[:2])
    assert world.render(JOBS, RunOptions(poll_interval=0.01, budget_usd=0.15)).exit_code == 0


def test_budget_stops_submitting_when_a_replacement_would_pass_it(world: World) -> None:
    world.provider.script = {"intro": ["bad", "ok"]}  # an unusable result is paid (a failed task is not)
    first = world.render(JOBS, RunOptions(poll_interval=0.01, concurrency=1, budget_usd=0.3))
    assert first.exit_code == 1 and first.spent_usd == pytest.approx(0.3)  # intro's task kept, not re-paid
    sink = ListSink()
    # The next run fetches intro's task again (free: the start's budget check sees nothing to
    # submit); it is unusable again, and its replacement would pass the budget of this run.
    report = world.render(JOBS, RunOptions(poll_interval=0.01, concurrency=1, budget_usd=0.05), sink)
    assert report.budget_stopped and report.exit_code == 3
    assert report.spent_usd == pytest.approx(0.0) and report.by_status("cached") == ["pour", "hero"]
    assert "budget-stop" in sink.kinds("intro") and sum(world.provider.submits.values()) == 3
    assert world.render(JOBS).by_status("done") == ["intro"] and sum(world.provider.submits.values()) == 4


def test_a_partial_run_keeps_other_shots_in_state_and_lock(world: World) -> None:
    world.render(JOBS)
    changed = make_job("pour", take=2)
    report = world.render([changed])
    assert report.by_status("done") == ["pour"] and world.provider.submits["pour"] == 2
    assert set(world.state()) == {"intro", "pour", "hero"}
    lock = read_lock(world.lock.path)
    assert set(lock) == {"intro", "pour", "hero"} and lock["pour"].key == changed.key
    assert world.state()["pour"].key == changed.key and world.state()["pour"].cost_usd == 0.1


def test_shots_with_the_same_inputs_are_rendered_once(world: World) -> None:
    twin = make_job("intro")
    twin = Job(**{**twin.__dict__, "shot_id": "intro-again"})
    report = world.render([JOBS[0], twin])
    assert report.exit_code == 0 and sum(world.provider.submits.values()) == 1
    assert report.outcomes["intro-again"].status == "cached" and report.spent_usd == pytest.approx(0.1)


def test_concurrency_is_limited(world: World) -> None:
    jobs = [make_job(f"s{i}") for i in range(6)]
    in_flight = peak = 0
    original = world.provider.poll

    async def counting_poll(task_id: str):  # type: ignore[no-untyped-def]
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return await original(task_id)

    world.provider.poll = counting_poll  # type: ignore[method-assign]
    assert world.render(jobs, RunOptions(poll_interval=0.01, concurrency=2)).exit_code == 0
    assert peak == 2


def test_cancelling_keeps_task_ids_and_marks_an_interrupted_submit_unknown(world: World) -> None:
    world.provider.gates["intro"] = asyncio.Event()
    world.provider.submit_gates["pour"] = asyncio.Event()

    async def scenario() -> None:
        with StateStore.for_project(world.project, "stub") as state:
            task = asyncio.create_task(
                execute(JOBS[:2], world.provider, state=state, cache=world.cache, options=FAST)
            )
            await _wait_for(world.provider, "intro")
            await _wait_for(world.provider, "pour")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    state = world.state()
    assert state["intro"].status == "submitted" and state["intro"].task_id
    assert state["pour"].status == "unknown"
    world.provider.gates.clear()
    world.provider.submit_gates.clear()
    # pour's POST never reached the stub: once the grace has passed, its task list proves it
    report = world.render(JOBS[:2], RunOptions(poll_interval=0.01, reconcile_grace=0.3))
    assert report.outcomes["intro"].status == "done" and world.provider.submits["intro"] == 1
    assert report.outcomes["pour"].status == "done" and world.provider.submits["pour"] == 1
    assert world.provider.listings >= 1
    assert not list(world.cache.tmp_dir.iterdir())


def test_run_wrapper_turns_ctrl_c_into_an_interrupted_report(world: World) -> None:
    world.provider.gates["intro"] = asyncio.Event()
    original = world.provider.poll

    async def interrupting_poll(task_id: str):  # type: ignore[no-untyped-def]
        asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
        return await original(task_id)

    world.provider.poll = interrupting_poll  # type: ignore[method-assign]
    with StateStore.for_project(world.project, "stub") as state:
        report = run(JOBS[:1], world.provider, state=state, cache=world.cache, options=FAST)
    assert report.interrupted and report.exit_code == 130 and world.provider.closed
    assert world.state()["intro"].status == "submitted"


def test_run_wrapper_closes_the_provider(world: World) -> None:
    with StateStore.for_project(world.project, "stub") as state:
        report = run(JOBS[:1], world.provider, state=state, cache=world.cache, options=FAST)
    assert report.exit_code == 0 and world.provider.closed


def test_report_as_json(world: World) -> None:
    doc = world.render(JOBS[:1]).to_json()
    assert doc["exit_code"] == 0 and doc["shots"][0]["id"] == "intro" and doc["spent_usd"] == 0.1
    json.dumps(doc)


# -- progress sinks -------------------------------------------------------------------------------


def test_plain_lines_and_json_lines(world: World) -> None:
    out = io.StringIO()
    with StateStore.for_project(world.project, "stub") as state:
        asyncio.run(execute(JOBS[:1], world.provider, state=state, cache=world.cache, options=FAST,
                            events=PlainSink(out)))  # fmt: skip
    lines = out.getvalue().splitlines()
    # Clock time, then the count of shots finished so far (in order), then the event.
    assert re.fullmatch(r"\d\d:\d\d:\d\d \[0/1\] intro: submitted \(task t001-intro-\w+\)", lines[1]), lines
    done = next(line for line in lines if " intro: done" in line)
    assert re.fullmatch(r"\d\d:\d\d:\d\d \[1/1\] intro: done \(\$0\.1000\) · spent \$0\.1000", done), done
    assert lines[-1].endswith("finish: 1 done; spent $0.1000")
    stream = io.StringIO()
    sink = JsonLinesSink(stream)
    sink.emit(Event("submitted", shot_id="a", index=1, total=2, task_id="t1", cost_usd=0.25))
    sink.emit(Event("done", shot_id="a", index=1, total=2, cost_usd=0.25))
    sink.close()
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["version"] == 1
    # The fields a consumer already reads are unchanged; the running figures come beside them.
    expected = {"event": "submitted", "shot_id": "a", "index": 1, "total": 2, "task_id": "t1", "cost_usd": 0.25}
    assert {k: second[k] for k in expected} == expected
    assert datetime.fromisoformat(second["ts"]).tzinfo is not None
    assert (second["finished"], second["spent_usd"]) == (0, 0.25)
    assert (third["event"], third["finished"], third["spent_usd"]) == ("done", 1, 0.25)


def test_plain_heartbeat_during_a_long_poll(world: World) -> None:
    """A task that stays "processing" for a while: the plain log gets "still working" lines naming it."""
    out = io.StringIO()
    world.provider.polls_to_complete = 8  # polls before the task completes (every 0.05 s here)
    sink = PlainSink(out, heartbeat=0.1)
    try:
        with StateStore.for_project(world.project, "stub") as state:
            asyncio.run(execute(JOBS[:1], world.provider, state=state, cache=world.cache,
                                options=replace(FAST, poll_interval=0.05), events=sink))  # fmt: skip
    finally:
        sink.close()
    beats = [line for line in out.getvalue().splitlines() if "still working" in line]
    assert beats, out.getvalue()
    pattern = r"\d\d:\d\d:\d\d still working: 1 in flight \(intro: \w+ for \d+s\) · 0/1 finished.*"
    assert any(re.fullmatch(pattern, beat) for beat in beats), beats  # (a beat may come before the submit)


def test_make_sink_is_plain_off_a_terminal() -> None:
    assert isinstance(make_sink(stream=io.StringIO()), PlainSink)
    assert isinstance(make_sink(json_lines=True, stream=io.StringIO()), JsonLinesSink)


def test_with_the_real_local_provider(tmp_path: Path) -> None:
    from kling_render.providers.local import LocalProvider

    cache = ClipCache(tmp_path / "cache")
    lock = LockFile(tmp_path / "p.lock")
    jobs = [make_job("a"), make_job("b")]
    for attempt in range(2):
        provider = LocalProvider(cache_dir=cache.root)
        with StateStore.for_project(tmp_path / "p.yaml", "local") as state:
            report = run(jobs, provider, state=state, cache=cache, options=FAST, lock=lock)
        assert report.exit_code == 0, report.to_json()
        assert report.by_status("cached" if attempt else "done") == ["a", "b"]
    assert cache.get("local", jobs[0].key) is not None and set(read_lock(lock.path)) == {"a", "b"}


def test_rich_sink_runs_without_a_terminal() -> None:
    from kling_render.report.live import RichSink

    out = io.StringIO()
    sink = RichSink(out)
    sink.emit(Event("start", total=2))
    sink.emit(Event("submitted", shot_id="a", index=1, total=2, task_id="t1"))
    sink.emit(Event("polling", shot_id="a", index=1, total=2, task_id="t1", status="processing"))
    sink.emit(Event("done", shot_id="a", index=1, total=2, cost_usd=0.5))
    sink.emit(Event("skipped-cached", shot_id="b", index=2, total=2))
    sink.close()
    assert "[1/2] a: done ($0.5000)" in out.getvalue()
