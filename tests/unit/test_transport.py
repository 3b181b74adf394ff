"""Transport bounds (issue 11 item 6, issue 12 "network answers"): no answer may hang a run or fill
its memory. Against the stand-in over real sockets, with the limits shrunk for the tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from e2e_cli import small_workspace, ws_env
from e2e_fake import FakeProcess
from fake_wavespeed import FakeWaveSpeed
from money_kit import submit as paid_submit
from test_wavespeed import KEY, O3, POLL, SIMPLE, SUBMIT, job, make, run

from kling_render.errors import DownloadError, ProviderError, SubmitUncertainError, TransientError
from kling_render.jobs import TaskResult
from kling_render.providers.transport import Limits, Redactor, StallGuard
from kling_render.providers.wavespeed.client import WaveSpeedProvider

pytestmark = pytest.mark.stand_in(latency=0.15, api_key=KEY)

FAST_LIMITS = Limits(api_deadline=1.0, download_deadline=5.0, stall_rate=1024, stall_window=0.5)


def poll_once(fake_wavespeed: FakeWaveSpeed, tmp_path: Path, **kwargs: object) -> TaskResult:
    async def work(p: WaveSpeedProvider) -> TaskResult:
        return await p.poll(await paid_submit(p, job(O3, SIMPLE)))

    return run(make(fake_wavespeed, tmp_path, **kwargs), work)


def render_one(provider: WaveSpeedProvider, dest: Path) -> None:
    async def work(p: WaveSpeedProvider) -> None:
        task_id = await paid_submit(p, job(O3, SIMPLE))
        for _ in range(200):
            result = await p.poll(task_id)
            if result.completed and result.output_url:
                await p.download(result.output_url, dest)
                return
            await asyncio_sleep(0.03)
        raise AssertionError("never completed")

    run(provider, work)


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# -- the stall rule --------------------------------------------------------------------------------


def test_stall_guard_windows() -> None:
    guard = StallGuard(rate=100, window=10, now=0.0)  # 1,000 bytes per any 10 s
    assert guard.deadline() == 10.0  # nothing yet: 10 s to get them
    guard.add(600, 2.0)
    assert guard.deadline() == 10.0  # 600 < 1000: still due by 10 s
    guard.add(600, 4.0)  # 1,200 by 4 s: the window (0, 10] is fine; due again when 1,000 bytes ago ages out
    assert guard.deadline() == 12.0
    guard.add(5000, 30.0)
    assert guard.deadline() == 40.0
    for t in range(31, 60):  # a steady 150 bytes/s never stalls
        guard.add(150, float(t))
        assert guard.deadline() > t


# -- JSON answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("announce", [True, False], ids=["announced", "unannounced"])
def test_a_huge_poll_answer_is_refused_at_the_cap(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path, announce: bool
) -> None:
    fake_wavespeed.faults.add("huge", POLL, size=256 * 1024 * 1024, announce=announce)
    with pytest.raises(ProviderError, match="8388608-byte cap") as info:
        poll_once(fake_wavespeed, tmp_path)
    assert not isinstance(info.value, TransientError)  # not fetched again and again


def test_a_gzip_bomb_is_refused_at_the_cap(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("gzip", POLL, size=64 * 1024 * 1024)
    with pytest.raises(ProviderError, match="exceeds the 8388608-byte cap"):
        poll_once(fake_wavespeed, tmp_path)


def test_a_gzip_answer_within_the_cap_is_read(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("gzip", POLL, size=1024 * 1024)
    assert poll_once(fake_wavespeed, tmp_path).status == "processing"


def test_a_poll_that_never_completes_is_cut_at_the_deadline(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("hang", POLL, count=10, seconds=30)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"no complete answer within 1s"):
        poll_once(fake_wavespeed, tmp_path, limits=FAST_LIMITS)
    assert time.monotonic() - started < 25  # four attempts of 1 s, not four of 30


def test_a_submit_cut_at_the_deadline_is_uncertain(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("hang", SUBMIT, seconds=30)
    with pytest.raises(SubmitUncertainError, match=r"no complete answer within 1s.*a paid task may exist"):
        run(make(fake_wavespeed, tmp_path, limits=FAST_LIMITS), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert len(fake_wavespeed.submits()) == 1


# -- downloads ------------------------------------------------------------------------------------


def test_a_stalled_download_is_aborted(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("stall", "/outputs/", rate=100, seconds=30)
    dest = tmp_path / "o.mp4"
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"stalled: under 1024 bytes/s for 0.5s"):
        render_one(make(fake_wavespeed, tmp_path, limits=FAST_LIMITS), dest)
    assert time.monotonic() - started < 20 and not dest.exists()


def test_a_slow_but_steady_download_is_not_a_stall(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    limits = Limits(stall_rate=1024, stall_window=0.5)
    fake_wavespeed.faults.add("stall", "/outputs/", rate=500_000, seconds=60)  # slower than a LAN, above the floor
    dest = tmp_path / "o.mp4"
    render_one(make(fake_wavespeed, tmp_path, limits=limits), dest)
    assert dest.stat().st_size > 0


def test_a_download_over_the_total_deadline_is_aborted(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    limits = Limits(download_deadline=1.0, stall_rate=1, stall_window=30)
    fake_wavespeed.faults.add("stall", "/outputs/", rate=2000, seconds=30)
    with pytest.raises(DownloadError, match=r"no complete answer within 1s"):
        render_one(make(fake_wavespeed, tmp_path, limits=limits), tmp_path / "o.mp4")


# -- redaction ------------------------------------------------------------------------------------


def test_the_redactor_removes_the_key_in_every_spelling() -> None:
    redact = Redactor("sk/a+b=c")
    assert redact("key sk/a+b=c and sk%2Fa%2Bb%3Dc") == "key *** and ***"
    assert redact.line("line\none\x1b[31m\tred " + "x" * 400, limit=30) == "line one [31m red xxxxxxxxx..."


def test_an_upload_url_that_echoes_the_key_is_refused(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    from test_wavespeed import image

    original = fake_wavespeed.base_url
    fake_wavespeed.base_url = f"{original}/{KEY}"  # the stand-in's upload answers now carry the key

    shot = job(O3, {"prompt": "x", "image": image(tmp_path, "a.png")}, duration=5)
    provider = WaveSpeedProvider(KEY, original, tmp_path / "cache")
    with pytest.raises(ProviderError, match="carries the API key") as info:
        run(provider, lambda p: paid_submit(p, shot))
    assert KEY not in str(info.value) and fake_wavespeed.submits() == []
    assert not (tmp_path / "cache" / "uploads.json").exists()


# -- through the CLI: memory ----------------------------------------------------------------------


@pytest.mark.stand_in(latency=0.3)
def test_a_256_mb_poll_answer_costs_the_cli_little_memory(tmp_path: Path, fake_process: FakeProcess) -> None:
    """The CLI's peak resident memory while the stand-in answers every poll with 256 MB (issue 12
    saw 815 MB): measured by a parent process whose only child is the CLI."""
    ws = small_workspace(tmp_path / "small", ws_env(fake_process.base_url))
    fake_process.fault("huge", "/api/v3/predictions/", count=100, size=256 * 1024 * 1024, announce=False)
    measure = textwrap.dedent(
        """
        import resource, subprocess, sys
        done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
        print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        sys.stderr.write(done.stderr)
        """
    )
    cmd = [sys.executable, "-c", measure, sys.executable, "-m", "kling_render", "render", str(ws.project),
           "--no-stitch", "--poll-interval", "0.05"]  # fmt: skip
    done = subprocess.run(cmd, env=ws.env, cwd=ws.root, capture_output=True, text=True, timeout=300, check=False)
    code, peak_kb = (int(x) for x in done.stdout.split())
    assert code == 1, done.stderr
    assert "exceeds the 8388608-byte cap" in done.stderr and "the next run polls it again" in done.stderr
    print(f"CLI peak resident memory with 256 MB poll answers: {peak_kb / 1024:.0f} MB")
    assert peak_kb < 200 * 1024, f"peak {peak_kb / 1024:.0f} MB"
    state = json.loads(ws.state_path.read_text())["shots"]
    assert all(rec["status"] == "submitted" and rec["task_id"] for rec in state.values())  # ids kept
