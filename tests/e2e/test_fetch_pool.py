"""Downloads and clip checks off the provider's slots (issue 16 item 3), counting paid tasks.

The real runner and WaveSpeed client against the stand-in on a real socket (and the real CLI,
killed mid-download), real ffmpeg checks on real clips.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import SECRET, SMALL_SHOTS, Workspace, small_workspace, ws_env
from e2e_fake import FakeProcess
from fake_wavespeed import FakeWaveSpeed, clip_bytes

from kling_render.jobs import Job
from kling_render.media.check import CheckedClip
from kling_render.providers.wavespeed.client import WaveSpeedProvider
from kling_render.records.state import StateStore, read_ledger
from kling_render.run.fetcher import FetchPool
from kling_render.run.scheduler import RunOptions, RunReport, default_verify, run
from kling_render.store.cache import ClipCache

MODEL = "kling-v3.0-std/text-to-video"


def job(shot_id: str, index: int = 0) -> Job:
    prompt = f"shot {shot_id}: a mug on a table"
    return Job(
        shot_id=shot_id,
        model=MODEL,
        params={"prompt": prompt, "duration": 3},
        duration=3,
        sound=False,
        aspect_ratio=None,
        key=hashlib.sha256(prompt.encode()).hexdigest(),
        cost_usd=0.252,
        index=index,
        prompt=prompt,
    )


JOBS = [job("a", 0), job("b", 1), job("c", 2)]


def render(
    fake_wavespeed: FakeWaveSpeed, root: Path, *, concurrency: int = 1, verify: Any = default_verify
) -> RunReport:
    cache = ClipCache(root / "cache")
    provider = WaveSpeedProvider(SECRET, fake_wavespeed.base_url, cache.root)
    options = RunOptions(concurrency=concurrency, poll_interval=0.05)
    with StateStore(root / "state.json") as state:
        return run(JOBS, provider, state=state, cache=cache, options=options, verify=verify)


def shot_of(body: Any) -> str:
    return str(body["prompt"]).split(":")[0].removeprefix("shot ") if isinstance(body, dict) else "?"


def submits_by_shot(fake_wavespeed: FakeWaveSpeed) -> Counter[str]:
    return Counter(shot_of(r.body) for r in fake_wavespeed.submits())


def test_a_slow_download_holds_no_slot_other_shots_are_submitted_and_finished_meanwhile(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    """One task at a time; shot a's download hangs half-sent until b and c have both been
    submitted *and* downloaded, so the run can only finish if a's download holds no slot. If it
    did, the hang would last its full 60 s and the test fail on the timing record below."""
    release = threading.Event()
    fake_wavespeed.faults.add("trickle", "/outputs/", count=1, seconds=60, release=release)
    seen: dict[str, float] = {}

    def watch() -> None:
        while not release.is_set():
            outputs = [r for r in fake_wavespeed.requests if r.method == "GET" and r.path.startswith("/outputs/")]
            if len(fake_wavespeed.submits()) == 3 and len(outputs) == 3 and all(r.status == 200 for r in outputs[1:]):
                seen["released"] = time.monotonic()
                release.set()
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    report = render(fake_wavespeed, tmp_path, concurrency=1)
    release.set()
    watcher.join(timeout=5)
    assert report.exit_code == 0, report.to_json()
    assert report.by_status("done") == ["a", "b", "c"]
    assert submits_by_shot(fake_wavespeed) == Counter(a=1, b=1, c=1)  # nothing paid twice
    assert fake_wavespeed.max_running == 1
    assert sorted(t.downloads for t in fake_wavespeed.tasks.values()) == [1, 1, 1]  # a's slow download was never cut
    # the slow download was released by b's and c's progress, not by its 60 s running out
    assert "released" in seen and seen["released"] - started < 55
    # b was submitted while a's clip was still coming in: before a's download was let go. (Not
    # "after a's download began": the slot is free once a's task completes, so b's submit and a's
    # first GET race, and on a loaded machine either comes first.)
    b_submit = next(r for r in fake_wavespeed.submits() if shot_of(r.body) == "b")
    assert b_submit.at < seen["released"]


@pytest.mark.parametrize("kind", ["html", "cut_short"])
def test_a_download_that_fails_its_check_is_fetched_again_and_costs_nothing_more(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path, kind: str
) -> None:
    """A web page where the clip should be, or a clip cut short (a complete HTTP answer of half
    the file) fails the structural check; a second download of the same task is clean: one task
    per shot."""
    fake_wavespeed.faults.add(kind, "/outputs/", count=1)
    report = render(fake_wavespeed, tmp_path, concurrency=3)
    assert report.exit_code == 0, report.to_json()
    assert submits_by_shot(fake_wavespeed) == Counter(a=1, b=1, c=1)
    downloads = sorted(t.downloads for t in fake_wavespeed.tasks.values())
    assert downloads == [1, 1, 2]


def test_a_clip_bad_at_every_download_is_kept_and_fetched_again_for_free(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    """Both downloads of a's task are cut short: that task is unusable (paid, counted in the ledger)
    and kept, not paid again this run; the next run fetches it again (free), and it is good now."""
    fake_wavespeed.faults.add("cut_short", "/outputs/", count=2)
    report = render(fake_wavespeed, tmp_path, concurrency=1)
    assert report.exit_code == 1 and report.outcomes["a"].status == "failed", report.to_json()
    assert submits_by_shot(fake_wavespeed) == Counter(a=1, b=1, c=1)
    ledger = read_ledger(tmp_path / "state.json")[JOBS[0].key]
    assert [t.outcome for t in ledger.tasks] == ["unusable"]
    assert "not a valid clip" in (ledger.tasks[0].error or "")
    assert "truncated" in (ledger.tasks[0].error or "")  # the check says what is wrong
    again = render(fake_wavespeed, tmp_path, concurrency=1)
    assert again.exit_code == 0, again.to_json()
    assert submits_by_shot(fake_wavespeed) == Counter(a=1, b=1, c=1)  # fetched again for free
    assert [t.outcome for t in read_ledger(tmp_path / "state.json")[JOBS[0].key].tasks] == ["done"]


def test_a_clip_bad_at_every_task_stops_at_the_lifetime_cap(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("html", "/outputs/", count=1000)
    for paid in (1, 2, 3):  # one paid task per shot and run: each kept task is fetched again first
        report = render(fake_wavespeed, tmp_path, concurrency=3)
        assert report.exit_code == 1
        assert submits_by_shot(fake_wavespeed) == Counter(a=paid, b=paid, c=paid)
    again = render(fake_wavespeed, tmp_path, concurrency=3)
    assert again.exit_code == 1
    assert submits_by_shot(fake_wavespeed) == Counter(a=3, b=3, c=3)  # the cap of 3, and not one more


def test_bit_rot_passes_the_download_check_and_is_left_to_the_stitch_decode(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    """Flipped bits inside a NAL unit's payload keep the file's structure: no decode at download
    (the stitch's segment encode is the one decode, and it fails loudly: unit/test_clip_check.py), so
    the shot is done with one download and one task."""
    fake_wavespeed.faults.add("corrupt", "/outputs/", count=100)
    report = render(fake_wavespeed, tmp_path, concurrency=3)
    assert report.exit_code == 0, report.to_json()
    assert submits_by_shot(fake_wavespeed) == Counter(a=1, b=1, c=1)
    assert sorted(t.downloads for t in fake_wavespeed.tasks.values()) == [1, 1, 1]


def test_checks_run_at_most_one_per_core(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def verify(path: Path) -> CheckedClip:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return default_verify(path)
        finally:
            with lock:
                running -= 1

    report = render(fake_wavespeed, tmp_path, concurrency=3, verify=verify)
    assert report.exit_code == 0, report.to_json()
    assert 1 <= most <= FetchPool().workers


def test_the_stand_in_serves_real_720p_media(tmp_path: Path) -> None:
    """Only the generation is checked here (once per machine: cached in the temp dir)."""
    data = clip_bytes(3, "16:9", False, "720p")
    assert data == clip_bytes(3, "16:9", False, "720p")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(data)
    checked = default_verify(clip)
    assert checked.duration == pytest.approx(3, abs=1 / 24) and checked.frames == 72
    assert (checked.info.width, checked.info.height) == (1280, 720)
    assert checked.info.fps == 24 and checked.info.video_codec == "h264"
    assert len(data) / 3 > 800_000  # a real bitrate (~1.25 MB/s), not a test pattern's few KB


# -- the real CLI, killed mid-download -------------------------------------------------------


@pytest.mark.stand_in(latency=0.5)
def test_a_kill_during_a_download_while_the_next_shot_runs_then_resume_pays_nothing(
    tmp_path: Path, fake_process: FakeProcess
) -> None:
    """One slot; alpha's clip hangs half-sent; the CLI is killed once beta's task was submitted
    meanwhile. The resume downloads alpha's and beta's tasks again, pays for gamma only."""
    ws: Workspace = small_workspace(tmp_path / "small", ws_env(fake_process.base_url))
    fake_process.fault("trickle", "/outputs/", count=1, seconds=60)
    cmd = [sys.executable, "-m", "kling_render", "render", str(ws.project), "--poll-interval", "0.05",
           "--concurrency", "1"]  # fmt: skip
    with subprocess.Popen(cmd, env=ws.env, cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if len(fake_process.gets("/outputs/")) >= 1 and sum(fake_process.submits_by_shot().values()) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1]
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
    before = fake_process.submits_by_shot()
    assert sum(before.values()) == 2 and before["alpha"] == 1, before  # alpha downloading, beta submitted
    state = ws.state()
    assert state["alpha"]["status"] == "submitted" and state["alpha"]["task_id"]  # recorded before the download
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert fake_process.submits_by_shot() == Counter(dict.fromkeys(SMALL_SHOTS, 1))  # 0 extra tasks
    assert ws.statuses() == dict.fromkeys(SMALL_SHOTS, "done")
    assert ws.state()["alpha"]["task_id"] == state["alpha"]["task_id"]
