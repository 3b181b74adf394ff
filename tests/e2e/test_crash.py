"""kill -9 a real render process at several points, run again: every shot ends done, no task
that the state file knew is submitted again, and the cache holds no partial or duplicate clip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from runner_stub import StubProvider, clip_source

from kling_render.records.lockfile import read_lock
from kling_render.records.state import ShotState, StateStore, read_state
from kling_render.store.cache import ClipCache

HARNESS = Path(__file__).parents[1] / "runner_harness.py"
SHOTS = ("intro", "pour", "hero", "outro")


def harness(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HARNESS), str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def server_submits(root: Path) -> Counter[str]:
    return StubProvider(root / "sources", journal=root / "server").journal_submits()


def state_of(root: Path) -> dict[str, ShotState]:
    return read_state(StateStore.for_project(root / "teaser.yaml", "stub").path)


def assert_cache_sound(root: Path) -> None:
    cache = ClipCache(root / "cache")
    clips = sorted((root / "cache" / "stub").rglob("*.mp4"))
    sidecars = sorted((root / "cache" / "stub").rglob("*.json"))
    assert len(clips) == len(sidecars) == len(SHOTS)
    for clip in clips:
        assert cache.verify("stub", clip.stem), f"{clip} does not match its sidecar"
    assert not list(cache.tmp_dir.iterdir()) if cache.tmp_dir.exists() else True
    state = state_of(root)
    lock = read_lock(root / "teaser.lock")
    for shot in SHOTS:
        entry = cache.get("stub", state[shot].key)
        assert entry is not None and state[shot].output_sha256 == entry.sha256 == lock[shot].output_sha256


@pytest.fixture
def root(tmp_path: Path) -> Path:
    clip_source(tmp_path / "sources", 1)
    return tmp_path


@pytest.mark.parametrize("point", ["poll", "download"])
def test_kill_after_submit_resumes_without_paying_twice(root: Path, point: str) -> None:
    crashed = harness(root, "--kill-at", f"{point}:pour")
    assert crashed.returncode == -signal.SIGKILL
    before = state_of(root)
    assert before["pour"].status == "submitted" and before["pour"].task_id
    had_task = {s for s, rec in before.items() if rec.task_id}

    again = harness(root)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert {s["id"]: s["status"] for s in report["shots"]}["pour"] == "done"
    submits = server_submits(root)
    assert all(submits[s] == 1 for s in had_task), submits
    assert submits == Counter(dict.fromkeys(SHOTS, 1))
    assert all(rec.status == "done" for rec in state_of(root).values())
    assert_cache_sound(root)
    if point == "download":  # the half-written temp file of the dead process was cleaned up
        assert not list((root / "cache" / "tmp").iterdir())


def test_kill_during_submit_the_next_run_finds_the_task(root: Path) -> None:
    crashed = harness(root, "--kill-at", "submit:pour")
    assert crashed.returncode == -signal.SIGKILL
    assert state_of(root)["pour"].status == "submitting" and state_of(root)["pour"].task_id is None
    assert state_of(root)["pour"].wire  # what was sent, recorded before the POST
    assert server_submits(root)["pour"] == 1  # the service did create (and bill) a task

    again = harness(root)
    assert again.returncode == 0, again.stderr
    assert server_submits(root) == Counter(dict.fromkeys(SHOTS, 1))  # found in the task list, not paid again
    assert all(rec.status == "done" for rec in state_of(root).values())
    assert_cache_sound(root)


def test_kill_during_submit_without_a_task_list_stays_unknown_until_asked(root: Path) -> None:
    crashed = harness(root, "--kill-at", "submit:pour")
    assert crashed.returncode == -signal.SIGKILL

    again = harness(root, "--no-list")
    assert again.returncode == 1
    assert state_of(root)["pour"].status == "unknown"
    assert server_submits(root)["pour"] == 1
    assert all(state_of(root)[s].status == "done" for s in SHOTS if s != "pour")

    forced = harness(root, "--no-list", "--resubmit-unknown")
    assert forced.returncode == 0, forced.stderr
    assert server_submits(root) == Counter({"intro": 1, "pour": 2, "hero": 1, "outro": 1})
    assert_cache_sound(root)


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.25])
def test_external_kill_while_tasks_are_in_flight_converges(root: Path, delay: float) -> None:
    """SIGKILL from outside once a task is submitted (plus ``delay``), then let it finish."""
    state_path = StateStore.for_project(root / "teaser.yaml", "stub").path
    cmd = [sys.executable, str(HARNESS), str(root), "--polls", "10"]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if state_path.exists() and '"submitted"' in state_path.read_text():
                break
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    recorded = {s for s, rec in state_of(root).items() if rec.task_id and rec.status == "submitted"}
    assert recorded
    before = server_submits(root)
    final = harness(root, "--resubmit-unknown")
    assert final.returncode == 0, final.stderr
    after = server_submits(root)
    for shot in recorded:  # a task the state file knew is polled again, never resubmitted
        assert after[shot] == before[shot], (shot, before, after)
    assert all(after[s] <= 2 for s in SHOTS)
    assert all(rec.status == "done" for rec in state_of(root).values())
    assert_cache_sound(root)
