"""kill -9 the real ``kling-render render`` CLI (``--provider wavespeed`` against the fake server
running as its own process) at several points, then run it again to completion.

After the final run: every shot is done, no shot whose task id the state file had recorded
was submitted again (POSTs per shot, read from the prompts the server received), the cache
holds exactly one complete entry per shot and no temp file, and the final cut decodes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_cli import SMALL_CUT_SECONDS, SMALL_SHOTS, Workspace, decodes, small_workspace, ws_env
from e2e_fake import FakeProcess

from kling_render.store.cache import ClipCache

LATENCY = 1.0  # seconds from submit to completed, on the fake
pytestmark = pytest.mark.stand_in(latency=LATENCY)


@pytest.fixture
def ws(tmp_path: Path, fake_process: FakeProcess) -> Workspace:
    # a short grace: a POST killed before it arrived is proven absent within the test
    return small_workspace(tmp_path / "small", ws_env(fake_process.base_url) | {"KLING_RENDER_RECONCILE_GRACE": "1"})


def recorded_state(ws: Workspace) -> dict[str, dict[str, object]]:
    return ws.state() if ws.state_path.exists() else {}


def kill_render_when(ws: Workspace, ready: Callable[[], bool], *, timeout: float = 30) -> None:
    """Start ``render`` and SIGKILL it as soon as ``ready()`` holds (fails if it never does)."""
    # three tasks at once (the default is 2, the entry tier's): every shot is in flight at the kill points
    cmd = [sys.executable, "-m", "kling_render", "render", str(ws.project), "--poll-interval", "0.05",
           "--concurrency", "3"]  # fmt: skip
    with subprocess.Popen(
        cmd, env=ws.env, cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        deadline = time.monotonic() + timeout
        hit = False
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                hit = True
                break
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        ws.outputs += [out, err]
        assert hit, f"the kill point was never reached (exit {proc.returncode}):\n{err}"
        assert proc.returncode == -signal.SIGKILL, err


def finish(ws: Workspace) -> None:
    """Run again: one plain run finishes (a shot killed mid-POST is found in the task list, or
    proven absent after the grace and submitted again): no --resubmit-unknown is needed."""
    done = ws.render()
    assert done.returncode == 0, done.stderr


def assert_converged(ws: Workspace, fake_process: FakeProcess, had_task: dict[str, str]) -> Counter[str]:
    submits = fake_process.submits_by_shot()
    for sid in had_task:  # a recorded task is polled again, never re-submitted
        assert submits[sid] == 1, (sid, submits)
    assert set(submits) == set(SMALL_SHOTS) and all(n <= 2 for n in submits.values()), submits
    state = ws.state()
    assert {sid: rec["status"] for sid, rec in state.items()} == dict.fromkeys(SMALL_SHOTS, "done")
    for sid, task in had_task.items():
        assert state[sid]["task_id"] == task
    cache = ClipCache(ws.cache_dir)
    clips, sidecars = ws.clips(), sorted((ws.cache_dir / "wavespeed").rglob("*.json"))
    assert len(clips) == len(sidecars) == len(SMALL_SHOTS)
    lock = json.loads((ws.root / "project.lock").read_text())["shots"]
    for sid in SMALL_SHOTS:
        entry = cache.get("wavespeed", str(state[sid]["key"]))
        assert entry is not None and cache.verify("wavespeed", entry.key)
        assert state[sid]["output_sha256"] == entry.sha256 == lock[sid]["output_sha256"]
    assert not cache.tmp_dir.exists() or list(cache.tmp_dir.iterdir()) == []
    assert decodes(ws.final_cut).duration == pytest.approx(SMALL_CUT_SECONDS, abs=2 / 24)
    ws.assert_no_secret()
    return submits


def tasks_recorded(ws: Workspace) -> dict[str, str]:
    return {sid: str(rec["task_id"]) for sid, rec in recorded_state(ws).items() if rec.get("task_id")}


def test_kill_while_tasks_are_processing(ws: Workspace, fake_process: FakeProcess) -> None:
    """Every shot submitted, none complete yet: the next run polls all three, submits none."""
    kill_render_when(ws, lambda: len(tasks_recorded(ws)) == len(SMALL_SHOTS))
    had_task = tasks_recorded(ws)
    assert {rec["status"] for rec in ws.state().values()} == {"submitted"}
    assert fake_process.submits_by_shot() == Counter(dict.fromkeys(SMALL_SHOTS, 1))
    assert ws.clips() == []
    # finishing paid tasks costs nothing: a budget of $0 must not refuse the resume
    resumed = ws.render("--max-cost", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert "spent $0.0000" in resumed.stderr
    finish(ws)
    assert assert_converged(ws, fake_process, had_task) == Counter(dict.fromkeys(SMALL_SHOTS, 1))


def test_kill_during_a_slow_download(ws: Workspace, fake_process: FakeProcess) -> None:
    """Killed with half a clip in the cache's temp dir: it is cleaned up, the task fetched again."""
    fake_process.fault("trickle", "/outputs/", count=1, seconds=30)
    tmp_dir = ws.cache_dir / "tmp"

    def half_written() -> bool:
        return tmp_dir.is_dir() and any(p.stat().st_size > 0 for p in tmp_dir.iterdir())

    kill_render_when(ws, half_written)
    partial = [p for p in tmp_dir.iterdir() if p.stat().st_size > 0]
    assert partial, "no partial download to clean up"
    had_task = tasks_recorded(ws)
    assert len(had_task) == len(SMALL_SHOTS)
    finish(ws)
    assert assert_converged(ws, fake_process, had_task) == Counter(dict.fromkeys(SMALL_SHOTS, 1))
    assert not any(p.exists() for p in partial)


@pytest.mark.slow
def test_kill_right_after_the_first_submit_is_seen(ws: Workspace, fake_process: FakeProcess) -> None:
    """The server has a POST; the state file may or may not have its task id yet."""
    kill_render_when(ws, lambda: len(fake_process.submits()) >= 1)
    had_task = tasks_recorded(ws)
    seen = fake_process.submits_by_shot()
    mid_post = {sid for sid, rec in recorded_state(ws).items() if rec["status"] == "submitting"}
    assert sum(seen.values()) >= 1 and mid_post | set(had_task) >= set(seen)
    finish(ws)
    submits = assert_converged(ws, fake_process, had_task)
    # a shot killed between its POST and the answer is found in the task list: nothing paid twice
    assert submits == Counter(dict.fromkeys(SMALL_SHOTS, 1)), submits
    print(f"at the kill: server saw {dict(seen)}, state had tasks for {sorted(had_task)}, mid-POST {mid_post}")


@pytest.mark.slow
def test_kill_when_some_clips_are_cached(ws: Workspace, fake_process: FakeProcess) -> None:
    """One task slower than the others: killed once the two fast clips are in the cache."""
    fake_process.fault("slow", "/api/v3/kwaivgi/kling-video-o3-std/reference-to-video", count=1, latency=5)
    kill_render_when(ws, lambda: len(ws.clips()) == 2)
    had_task = tasks_recorded(ws)
    assert ws.state()["gamma"]["status"] == "submitted" and len(had_task) == len(SMALL_SHOTS)
    finish(ws)
    assert assert_converged(ws, fake_process, had_task) == Counter(dict.fromkeys(SMALL_SHOTS, 1))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_repeated_kills_at_random_moments_converge(ws: Workspace, fake_process: FakeProcess, seed: int) -> None:
    """Kill, start again, kill again ... at random moments; then run to the end."""
    rng = random.Random(seed)
    had_task: dict[str, str] = {}
    kills = 0
    for _ in range(4):
        delay = rng.uniform(0.2, 1.2)  # within a run: with 1 s tasks a whole run takes ~2 s when the box is quiet
        started = time.monotonic()
        try:
            kill_render_when(ws, lambda d=delay, t=started: time.monotonic() - t >= d)
        except AssertionError:
            break  # the run ended before its kill point: nothing left to interrupt
        kills += 1
        for sid, task in tasks_recorded(ws).items():
            assert had_task.setdefault(sid, task) == task  # a recorded task id is never replaced
    assert kills >= 1
    finish(ws)
    submits = assert_converged(ws, fake_process, had_task)
    print(f"seed {seed}: {kills} kills, submits {dict(submits)}, tasks known at a kill {sorted(had_task)}")
