"""Slow answers (issue 23, item 3): a poll or a download answered a few bytes a second keeps every
read within its read timeout, so only a total deadline per request and a minimum throughput per
download end it. Through the real CLI against the stand-in WaveSpeed (a process) taught to drip,
with the bounds shrunk through the environment (the product's: 120 s per API call, 1,024 bytes/s
over any 30 s): a dripped poll is retried like a 5xx, a dripped download fails its attempt and the
task is kept for the next run, which fetches it for free."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from e2e_cli import Workspace, small_workspace, ws_env
from e2e_fake import FakeProcess

ONE_SHOT = """\
version: 1
name: slow
provider: wavespeed
defaults: {model: kling-v3.0-std/image-to-video, duration: 3, sound: false}
shots:
  - id: alpha
    prompt: "shot alpha: the mug on a table"
    image: images/mug.png
output: {path: renders/final.mp4, width: 192, height: 108, fps: 24}
"""
BOUNDS = {
    "KLING_RENDER_HTTP_DEADLINE": "3",
    "KLING_RENDER_DOWNLOAD_DEADLINE": "20",
    "KLING_RENDER_STALL_RATE": "64",
    "KLING_RENDER_STALL_WINDOW": "1",
}
POLL = "/api/v3/predictions/"


pytestmark = pytest.mark.stand_in(latency=0.3)


@pytest.fixture
def fake(fake_process: FakeProcess) -> FakeProcess:
    """The stand-in as its own process (conftest's ``fake_process``, options from this module's marker)."""
    return fake_process


def workspace(tmp_path: Path, fake: FakeProcess) -> Workspace:
    return small_workspace(tmp_path / "p", {**ws_env(fake.base_url), **BOUNDS}, ONE_SHOT)


def paid(fake: FakeProcess) -> int:
    return len(fake.stats()["tasks"])


@pytest.mark.parametrize("head", [False, True], ids=["body", "status line and headers"])
def test_a_dripped_poll_is_cut_off_and_retried(tmp_path: Path, fake: FakeProcess, head: bool) -> None:
    """Two polls answered at 2 bytes/s (each would take minutes): each ends within its bounds (the
    body under the minimum rate, the head at the total deadline) and is retried; the shot is done."""
    ws = workspace(tmp_path, fake)
    fake.fault("drip", POLL, count=2, method="GET", rate=2, head=head)
    started = time.monotonic()
    done = ws.render(timeout=40)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert ws.statuses() == {"alpha": "done"} and paid(fake) == 1
    polls = [r for r in fake.requests() if r["method"] == "GET" and r["path"].startswith(POLL)]
    assert len(polls) >= 3  # the two dripped ones, retried
    assert took < 30, took
    ws.assert_no_secret()


def test_a_dripped_download_fails_its_attempts_and_the_next_run_fetches_it_free(
    tmp_path: Path, fake: FakeProcess
) -> None:
    """The clip sent at 2 bytes/s, both download attempts: each is aborted for want of throughput, the
    shot fails this run with its task kept, and the next run downloads the same task ($0)."""
    ws = workspace(tmp_path, fake)
    fake.fault("stall", "/outputs/", count=2, rate=2, seconds=600)
    started = time.monotonic()
    first = ws.render(timeout=40)
    assert time.monotonic() - started < 30
    assert first.returncode == 1
    [line] = [ln for ln in first.stderr.splitlines() if ln.startswith("  alpha: failed: ")]
    assert "stalled" in line and "the next run tries again" in line, first.stderr
    assert ws.state()["alpha"]["status"] == "submitted" and paid(fake) == 1
    second = ws.render(timeout=40)
    assert second.returncode == 0, second.stderr
    assert ws.statuses() == {"alpha": "done"} and paid(fake) == 1
    downloads = Counter(r["path"] for r in fake.requests() if r["path"].startswith("/outputs/"))
    assert list(downloads.values()) == [3]  # two aborted, one whole: the same task's output
