"""Two runs at once, an unusable cache, a full disk, a vanished output directory (SPEC §6):
one clear line each (no traceback), the state file intact, and the next run resumes.

Exit codes: a second run that finds the project locked raises LockedError (a StateError), exit 1
("the same command resumes" once the other run is done); ``--wait-lock SECONDS`` waits instead.

How the trouble is made, robustly and also as root (where chmod 0o500 does not stop writes):
- unusable cache: ``KLING_RENDER_CACHE`` names an existing regular file (ENOTDIR/EEXIST for root too);
- full disk: the render runs with RLIMIT_FSIZE below a clip's size and SIGXFSZ ignored, so a clip
  write fails with EFBIG while the small state file still fits, as on a nearly full disk.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_wavespeed import FakeWaveSpeed
from stress_kit import (
    API_KEY,
    assert_cache_sound,
    assert_decodes,
    cli_cmd,
    cli_env,
    render_args,
    state_of,
    write_project,
)

from kling_render.records.state import StateStore

pytestmark = pytest.mark.stand_in(latency=0.3, api_key=API_KEY)

SHOTS = 3
FSIZE_LIMIT = 16_000  # bytes: more than the state file of 3 shots, less than one fake clip


def run(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False, **kw)  # type: ignore[call-overload, no-any-return]


def small_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


def assert_one_clean_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def submits_per_shot(fake_wavespeed: FakeWaveSpeed) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in fake_wavespeed.submits():
        sid = r.body["prompt"].split(",", 1)[0].removeprefix("shot ")
        counts[sid] = counts.get(sid, 0) + 1
    return counts


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- two runs of one project ------------------------------------------------------------------


def test_second_run_exits_with_a_clear_lock_message(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.latency = 3600.0  # the first run's tasks stay running until the second run has been refused
    project = write_project(tmp_path, SHOTS)
    env = cli_env(fake_wavespeed.base_url)
    owner = StateStore.for_project(project, "wavespeed").owner_path
    with subprocess.Popen(render_args(project), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as first:
        wait_for(owner.exists)
        second = run(render_args(project), env)
        with fake_wavespeed.lock:  # now let the first run finish: its tasks complete at once
            fake_wavespeed.latency = 0.0
            for task in fake_wavespeed.tasks.values():
                task.latency = 0.0
        assert first.wait(timeout=60) == 0
    assert second.returncode == 1
    assert_one_clean_error(second.stderr, "another kling-render run of this project holds", "pid ")
    assert submits_per_shot(fake_wavespeed) == {f"s{n:03d}": 1 for n in range(SHOTS)}
    assert_cache_sound(project, SHOTS)


def test_two_runs_started_together_one_waits(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.latency = 1.0
    project = write_project(tmp_path, SHOTS)
    env = cli_env(fake_wavespeed.base_url)
    args = render_args(project, "--wait-lock", "60", "--json")
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    finished = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    spent = sorted(doc["spent_usd"] for doc in finished)
    assert spent[0] == 0 and spent[1] > 0  # the one that waited found every clip cached
    assert submits_per_shot(fake_wavespeed) == {f"s{n:03d}": 1 for n in range(SHOTS)}
    assert_cache_sound(project, SHOTS)


def test_two_runs_started_together_without_waiting(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.latency = 1.0
    project = write_project(tmp_path, SHOTS)
    env = cli_env(fake_wavespeed.base_url)
    procs = [
        subprocess.Popen(render_args(project), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in "ab"
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 1)
    assert_one_clean_error(loser, "another kling-render run of this project holds")
    assert submits_per_shot(fake_wavespeed) == {f"s{n:03d}": 1 for n in range(SHOTS)}
    assert_cache_sound(project, SHOTS)


# -- an unusable cache, a full disk -----------------------------------------------------------


def test_cache_path_that_is_a_file_stops_before_any_submit(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    project = write_project(tmp_path, SHOTS)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache should be")
    for cache in (blocker, blocker / "sub"):
        failed = run(render_args(project), cli_env(fake_wavespeed.base_url, KLING_RENDER_CACHE=str(cache)))
        assert failed.returncode == 1, failed.stderr
        assert_one_clean_error(failed.stderr, "clip cache", "not a writable directory")
        assert not fake_wavespeed.submits()  # nothing paid for a clip that could not be kept
        assert all(rec.status == "pending" for rec in state_of(project).values())
    resumed = run(render_args(project), cli_env(fake_wavespeed.base_url))
    assert resumed.returncode == 0, resumed.stderr
    assert submits_per_shot(fake_wavespeed) == {f"s{n:03d}": 1 for n in range(SHOTS)}
    assert_cache_sound(project, SHOTS)


def test_full_disk_fails_the_shots_keeps_their_tasks_and_resumes(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    project = write_project(tmp_path, SHOTS)
    env = cli_env(fake_wavespeed.base_url)
    full = run(render_args(project), env, preexec_fn=small_disk)
    assert full.returncode == 1, full.stderr
    assert "Traceback" not in full.stderr and "internal error" not in full.stderr, full.stderr
    assert full.stderr.count("File too large; the next run tries again") == 2 * SHOTS, full.stderr  # event + summary
    state = state_of(project)
    assert all(rec.status == "submitted" and rec.task_id for rec in state.values()), state
    cache = tmp_path / ".kling-render" / "cache"
    assert not list((cache / "tmp").iterdir())
    assert not list((cache / "wavespeed").rglob("*.mp4")) if (cache / "wavespeed").exists() else True

    resumed = run(render_args(project), env)
    assert resumed.returncode == 0, resumed.stderr
    assert submits_per_shot(fake_wavespeed) == {f"s{n:03d}": 1 for n in range(SHOTS)}  # polled again, not re-paid
    assert_cache_sound(project, SHOTS)

    stitch = cli_cmd("stitch", str(project), "--provider", "wavespeed")
    no_room = run(stitch, env, preexec_fn=small_disk)
    assert no_room.returncode == 1
    assert_one_clean_error(no_room.stderr, "ffmpeg failed")
    assert not list((tmp_path / "renders").glob("*")) if (tmp_path / "renders").exists() else True
    again = run(stitch, env)
    assert again.returncode == 0, again.stderr
    assert_decodes(tmp_path / "renders" / "final.mp4", 3.0 * SHOTS)


# -- a vanished output directory --------------------------------------------------------------


def test_output_directory_deleted_between_runs_and_mid_run(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.latency = 1.0
    project = write_project(tmp_path, SHOTS)
    env = cli_env(fake_wavespeed.base_url)
    renders = tmp_path / "renders"
    renders.mkdir()
    (renders / "old.txt").write_text("from before")
    args = [a for a in render_args(project) if a != "--no-stitch"]
    state_path = StateStore.for_project(project, "wavespeed").path
    with subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        wait_for(lambda: state_path.exists() and '"submitted"' in state_path.read_text())
        shutil.rmtree(renders)  # the output directory and the cache's temp directory vanish mid-run
        shutil.rmtree(tmp_path / ".kling-render" / "cache" / "tmp", ignore_errors=True)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_decodes(renders / "final.mp4", 3.0 * SHOTS)
    shutil.rmtree(renders)
    again = run(args, env)
    assert again.returncode == 0, again.stderr
    assert_decodes(renders / "final.mp4", 3.0 * SHOTS)
    assert submits_per_shot(fake_wavespeed) == {f"s{n:03d}": 1 for n in range(SHOTS)}
    assert_cache_sound(project, SHOTS)


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    from kling_render.fsutil import atomic_write_json

    dest = tmp_path / "state.json"
    dead = tmp_path / ".state.json.999999999.x1.tmp"  # above any pid_max: that process is gone
    alive = tmp_path / f".state.json.{os.getpid()}.x2.tmp"  # a write in progress in this process
    other = tmp_path / ".other.json.999999999.x3.tmp"
    for path in (dead, alive, other):
        path.write_text("{")
    atomic_write_json(dest, {"ok": True})
    assert json.loads(dest.read_text()) == {"ok": True}
    assert not dead.exists() and alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, dest.name])


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_path_fsyncs_only_durable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool) -> None:
    """The final cut (durable=False) skips the fsyncs but keeps the all-or-nothing rename."""
    from kling_render import fsutil

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(fsutil.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    dest = tmp_path / "final.mp4"
    dest.write_bytes(b"old cut")
    with pytest.raises(RuntimeError), fsutil.atomic_path(dest, durable=durable) as tmp:
        tmp.write_bytes(b"half a ne")
        raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old cut" and [p.name for p in tmp_path.iterdir()] == ["final.mp4"]
    with fsutil.atomic_path(dest, durable=durable) as tmp:
        tmp.write_bytes(b"new cut")
    assert dest.read_bytes() == b"new cut" and [p.name for p in tmp_path.iterdir()] == ["final.mp4"]
    assert (len(synced) == 2) if durable else (synced == [])  # the file and its directory
