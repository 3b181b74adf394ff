"""WaveSpeedProvider against the fake service over real sockets (no httpx mocking)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fake_wavespeed import FakeWaveSpeed, Faults, clip_bytes, validate
from money_kit import submit as paid_submit

from kling_render.errors import (
    AuthError,
    DownloadError,
    ProviderError,
    SubmitRefusedError,
    SubmitUncertainError,
    TransientError,
)
from kling_render.fsutil import sha256_file
from kling_render.jobs import Job, MediaRef, TaskResult
from kling_render.providers.wavespeed.client import UPLOADS_FILE, WaveSpeedProvider
from kling_render.retry import RetryPolicy, parse_retry_after

KEY = "sk-live-SECRET-7f3a9c2e"
pytestmark = pytest.mark.stand_in(latency=0.15, api_key=KEY)
SUBMIT = "/api/v3/kwaivgi/"
POLL = "/api/v3/predictions/"
SIMPLE = {"prompt": "x", "image": "https://cdn.example.com/a.png", "duration": 5}
O3 = "kling-video-o3-std/image-to-video"
T = TypeVar("T")


class Sleeps:
    """An injected sleep: records the waits, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def make(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path, sleeps: Sleeps | None = None, *, key: str = KEY, **kwargs: Any
) -> WaveSpeedProvider:
    policy = RetryPolicy(attempts=4, base_delay=0.01, sleep=sleeps or Sleeps())
    return WaveSpeedProvider(key, fake_wavespeed.base_url, tmp_path / "cache", retry=policy, **kwargs)


def run(provider: WaveSpeedProvider, work: Callable[[WaveSpeedProvider], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await work(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def image(tmp_path: Path, name: str, payload: bytes = b"\x89PNG fake image") -> MediaRef:
    path = tmp_path / name
    path.write_bytes(payload + name.encode())
    return MediaRef(path=path, sha256=sha256_file(path))


def job(model: str, params: dict[str, Any], shot_id: str = "s1", duration: int = 3) -> Job:
    return Job(shot_id, model, params, duration, False, None, key="k", cost_usd=0.0)


async def until_done(provider: WaveSpeedProvider, task_id: str) -> TaskResult:
    for _ in range(200):
        result = await provider.poll(task_id)
        if result.terminal:
            return result
        await asyncio.sleep(0.03)
    raise AssertionError("task never finished")


async def render(provider: WaveSpeedProvider, shot: Job, dest: Path) -> TaskResult:
    result = await until_done(provider, await paid_submit(provider, shot))
    if result.completed:
        assert result.output_url is not None
        await provider.download(result.output_url, dest)
    return result


def paths(fake_wavespeed: FakeWaveSpeed, method: str, prefix: str) -> list[str]:
    return [r.path for r in fake_wavespeed.requests if r.method == method and r.path.startswith(prefix)]


# -- happy paths ----------------------------------------------------------------------------

MODEL_CASES: list[tuple[str, Callable[[MediaRef, MediaRef], dict[str, Any]], tuple[str, bool]]] = [
    (
        "kling-video-o3-std/image-to-video",
        lambda a, b: {"prompt": "a mug", "image": a, "end_image": b, "duration": 3, "sound": True},
        ("16:9", True),
    ),
    (
        "kling-v3.0-pro/image-to-video",
        lambda a, b: {
            "image": a,
            "multi_prompt": [{"prompt": "wide", "duration": 2}, {"prompt": "close", "duration": 1}],
            "negative_prompt": "blur",
            "cfg_scale": 0.6,
            "duration": 3,
            "sound": False,
        },
        ("16:9", False),
    ),
    (
        "kling-v3.0-std/image-to-video",
        lambda a, b: {"image": a, "prompt": "pour", "end_image": b, "duration": 3},
        ("16:9", False),
    ),
    (
        "kling-video-o1-std/image-to-video",
        lambda a, b: {"prompt": "pour", "image": a, "last_image": b, "duration": 3},
        ("16:9", False),
    ),
    (
        "kling-video-o3-std/reference-to-video",
        lambda a, b: {
            "prompt": "spin",
            "images": [a, b, MediaRef(url="https://cdn.example.com/side.png")],
            "aspect_ratio": "9:16",
            "duration": 3,
        },
        ("9:16", False),
    ),
]


@pytest.mark.parametrize(("model", "params", "clip"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_happy_path_per_model(
    fake_wavespeed: FakeWaveSpeed,
    tmp_path: Path,
    model: str,
    params: Callable[[MediaRef, MediaRef], dict[str, Any]],
    clip: tuple[str, bool],
) -> None:
    a, b = image(tmp_path, "a.png"), image(tmp_path, "b.png")
    dest = tmp_path / "out.mp4"
    shot = job(model, params(a, b))
    result = run(make(fake_wavespeed, tmp_path), lambda p: render(p, shot, dest))

    assert result.completed
    assert dest.read_bytes() == clip_bytes(3, *clip)
    [submit] = fake_wavespeed.submits(model)
    assert submit.status == 200 and submit.headers["Authorization"] == f"Bearer {KEY}"
    sent = json.dumps(submit.body)
    assert "MediaRef" not in sent and f"{fake_wavespeed.base_url}/media/" in sent
    if "images" in submit.body:
        assert submit.body["images"][-1] == "https://cdn.example.com/side.png"
        assert len(submit.body["images"]) == 3
    puts = [r for r in fake_wavespeed.requests if r.method == "PUT"]
    assert len(puts) == len({r for r in shot.media() if r.path}) >= 1
    assert all("Authorization" not in r.headers for r in puts)
    download = next(r for r in fake_wavespeed.requests if r.path.startswith("/outputs/"))
    assert "Authorization" not in download.headers  # the key goes only to the API


def test_uploads_reused_across_shots_and_runs_and_redone_after_six_days(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    a = image(tmp_path, "a.png")
    now = [1_700_000_000.0]
    model = "kling-video-o3-std/image-to-video"

    async def two_shots(p: WaveSpeedProvider) -> None:
        await asyncio.gather(
            paid_submit(p, job(model, {"prompt": "x", "image": a}, "one", 5)),
            paid_submit(p, job(model, {"prompt": "y", "image": a}, "two", 5)),
        )

    run(make(fake_wavespeed, tmp_path, wall_clock=lambda: now[0]), two_shots)
    assert len(paths(fake_wavespeed, "POST", "/api/v3/media/uploads")) == 1
    records = json.loads((tmp_path / "cache" / UPLOADS_FILE).read_text())
    assert set(records) == {a.sha256} and records[a.sha256]["download_url"].startswith(fake_wavespeed.base_url)

    now[0] += 6 * 24 * 3600 - 60  # a later run, still inside the 6 days: reused
    run(make(fake_wavespeed, tmp_path, wall_clock=lambda: now[0]), two_shots)
    assert len(paths(fake_wavespeed, "POST", "/api/v3/media/uploads")) == 1

    now[0] += 120  # now older than 6 days: uploaded again, once
    run(make(fake_wavespeed, tmp_path, wall_clock=lambda: now[0]), two_shots)
    assert len(paths(fake_wavespeed, "POST", "/api/v3/media/uploads")) == 2
    assert len(fake_wavespeed.submits()) == 6


def test_changed_file_is_not_uploaded_under_its_old_hash(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    a = image(tmp_path, "a.png")
    assert a.path is not None
    a.path.write_bytes(b"edited after planning")
    shot = job("kling-video-o3-std/image-to-video", {"prompt": "x", "image": a}, duration=5)
    with pytest.raises(ProviderError, match="changed since it was planned"):
        run(make(fake_wavespeed, tmp_path), lambda p: paid_submit(p, shot))
    assert fake_wavespeed.submits() == []


def test_missing_media_file_is_a_provider_error(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    gone = MediaRef(path=tmp_path / "gone.png", sha256=None)
    with pytest.raises(ProviderError, match=r"cannot read gone\.png"):
        run(
            make(fake_wavespeed, tmp_path),
            lambda p: paid_submit(p, job(O3, {"prompt": "x", "image": gone}, duration=5)),
        )


def test_wrong_wire_field_is_the_servers_message(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    shot = job("kling-video-o3-std/image-to-video", {"prompt": "x", "image_url": "https://e.com/a.png"})
    with pytest.raises(ProviderError, match=r"rejected \(400\).*unknown parameter 'image_url'"):
        run(make(fake_wavespeed, tmp_path), lambda p: paid_submit(p, shot))


ALIASES = {
    "o3": "kling-video-o3-std/image-to-video",
    "o1": "kling-video-o1-std/image-to-video",
    "v3": "kling-v3.0-std/image-to-video",
    "pro": "kling-v3.0-pro/image-to-video",
}


@pytest.mark.parametrize(
    ("alias", "body", "problem"),
    [
        ("o3", {"last_image": "https://e/x"}, "unknown parameter 'last_image'"),
        ("o1", {"end_image": "https://e/x"}, "unknown parameter 'end_image'"),
        ("o1", {"sound": True}, "unknown parameter 'sound'"),
        ("o3", {"aspect_ratio": "16:9"}, "unknown parameter 'aspect_ratio'"),
        ("v3", {"images": []}, "unknown parameter 'images'"),
        ("pro", {"keep_original_sound": True}, "unknown parameter 'keep_original_sound'"),
        ("o3", {"cfg_scale": 0.5}, "unknown parameter 'cfg_scale'"),
        ("o1", {"multi_prompt": []}, "unknown parameter 'multi_prompt'"),
        ("o1", {"negative_prompt": "x"}, "unknown parameter 'negative_prompt'"),
        ("o1", {"shot_type": "customize"}, "unknown parameter 'shot_type'"),
        ("o3", {"shot_type": "x"}, "shot_type must be one of customize, intelligent"),
        ("v3", {"shot_type": "intelligence"}, "shot_type must be one of"),
        ("o3", {"multi_prompt": [{"prompt": "a", "duration": 5}]}, "not both"),
        ("o3", {"image_url": "https://e/x"}, "unknown parameter 'image_url'"),
        ("v3", {"duration_seconds": 5}, "unknown parameter 'duration_seconds'"),
        ("pro", {"audio_enabled": True}, "unknown parameter 'audio_enabled'"),
        ("o1", {"duration": 4}, "only 5s or 10s"),
        ("pro", {"cfg_scale": 1.5}, "cfg_scale"),
    ],
)
def test_fake_rejects_what_the_service_rejects(alias: str, body: dict[str, Any], problem: str) -> None:
    base: dict[str, Any] = {"prompt": "p", "image": "https://e/a.png"}
    assert problem in (validate(ALIASES[alias], {**base, **body}) or "")


def test_fake_accepts_the_wire_fields_of_each_model() -> None:
    ok: dict[str, dict[str, Any]] = {
        "kling-v3.0-std/image-to-video": {"image": "u", "prompt": "p", "shot_type": "customize", "element_list": []},
        "kling-video-o3-std/reference-to-video": {"prompt": "p", "video": "u", "keep_original_sound": False},
        "kling-video-o3-std/image-to-video": {
            "image": "u", "multi_prompt": [{"prompt": "a", "duration": 5}], "shot_type": "customize",
        },
        "kling-v3.0-std/text-to-video": {"prompt": "p", "aspect_ratio": "9:16", "shot_type": "intelligent"},
        "kling-v3.0-pro/text-to-video": {"multi_prompt": [{"prompt": "a", "duration": 5}], "cfg_scale": 0.2},
    }  # fmt: skip
    for model, body in ok.items():
        assert validate(model, body) is None
    v3 = "kling-v3.0-pro/image-to-video"
    assert "not both" in (validate(v3, {"image": "u", "prompt": "p", "multi_prompt": []}) or "")
    ref = "kling-video-o3-std/reference-to-video"
    assert "sound" in (validate(ref, {"prompt": "p", "video": "u", "sound": True}) or "")
    t2v = "kling-v3.0-std/text-to-video"
    assert "unknown parameter 'image'" in (validate(t2v, {"prompt": "p", "image": "u"}) or "")
    assert "aspect_ratio" in (validate(t2v, {"prompt": "p", "aspect_ratio": "4:3"}) or "")


# -- submit: refused, uncertain, unsent ---------------------------------------------------


def test_429_retry_after_is_honoured(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("429", SUBMIT, count=2, retry_after=7)
    sleeps = Sleeps()
    task_id = run(make(fake_wavespeed, tmp_path, sleeps), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert sleeps.waits == [7.0, 7.0]
    assert [r.status for r in fake_wavespeed.submits()] == [429, 429, 200]
    assert list(fake_wavespeed.tasks) == [task_id]


def test_429_retry_after_as_http_date(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("429", SUBMIT, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    sleeps = Sleeps()
    run(make(fake_wavespeed, tmp_path, sleeps), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert len(sleeps.waits) == 1 and 27 <= sleeps.waits[0] <= 30


def test_refusals_run_out_as_submit_refused(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("429", SUBMIT, count=10, retry_after=1)
    with pytest.raises(SubmitRefusedError, match="refused \\(429\\)") as info:
        run(make(fake_wavespeed, tmp_path), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert info.value.retry_after == 1.0
    assert len(fake_wavespeed.submits()) == 4 and fake_wavespeed.tasks == {}


@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "drop"])
def test_uncertain_submit_is_sent_exactly_once(fake_wavespeed: FakeWaveSpeed, tmp_path: Path, kind: str) -> None:
    fake_wavespeed.faults.add(kind, SUBMIT, count=5)
    sleeps = Sleeps()
    with pytest.raises(SubmitUncertainError, match="paid task may exist"):
        run(make(fake_wavespeed, tmp_path, sleeps), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert len(fake_wavespeed.submits()) == 1 and sleeps.waits == []
    assert len(fake_wavespeed.tasks) == 1  # the fake did create it: exactly why it must not be re-sent


def test_submit_read_timeout_is_uncertain_and_not_resent(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("hang", SUBMIT, seconds=2)
    timeout = httpx.Timeout(5.0, read=0.3)
    with pytest.raises(SubmitUncertainError, match="no usable answer"):
        run(make(fake_wavespeed, tmp_path, timeout=timeout), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert len(fake_wavespeed.submits()) == 1


def test_connection_refused_is_retried_then_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=3, base_delay=0.01, sleep=sleeps)
    provider = WaveSpeedProvider(KEY, f"http://127.0.0.1:{port}", tmp_path, retry=policy)
    with pytest.raises(SubmitRefusedError, match="cannot connect"):
        run(provider, lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert len(sleeps.waits) == 2


def test_upload_trouble_before_submit_is_a_refusal(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("503", "/upload/", count=10)
    shot = job(O3, {"prompt": "x", "image": image(tmp_path, "a.png")}, duration=5)
    with pytest.raises(SubmitRefusedError, match=r"upload of a\.png"):
        run(make(fake_wavespeed, tmp_path), lambda p: paid_submit(p, shot))
    assert fake_wavespeed.submits() == []


# -- poll -----------------------------------------------------------------------------------


@pytest.mark.stand_in(latency=600, api_key=KEY)  # the task is still running after the 4 polls, however slow
def test_dropped_and_failing_polls_are_retried(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("drop", POLL, count=1)
    fake_wavespeed.faults.add("500", POLL, count=1)
    fake_wavespeed.faults.add("429", POLL, count=1, retry_after=3)
    sleeps = Sleeps()

    async def work(p: WaveSpeedProvider) -> TaskResult:
        task_id = await paid_submit(p, job(O3, SIMPLE))
        return await p.poll(task_id)

    result = run(make(fake_wavespeed, tmp_path, sleeps), work)
    assert result.status in {"created", "processing"}
    assert [r.status for r in fake_wavespeed.requests if r.path.startswith(POLL)] == [0, 500, 429, 200]
    assert sleeps.waits[-1] == 3.0 and len(sleeps.waits) == 3


def test_poll_gives_up_with_transient_error(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("503", POLL, count=10)

    async def work(p: WaveSpeedProvider) -> TaskResult:
        return await p.poll(await paid_submit(p, job(O3, SIMPLE)))

    with pytest.raises(TransientError, match="503"):
        run(make(fake_wavespeed, tmp_path), work)


def test_failed_task_reports_the_reason(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("fail", SUBMIT, error="NSFW content detected")
    result = run(make(fake_wavespeed, tmp_path), lambda p: render(p, job(O3, SIMPLE), tmp_path / "o.mp4"))
    assert result.failed and result.error == "NSFW content detected" and result.output_url is None
    assert not (tmp_path / "o.mp4").exists()


# -- download -------------------------------------------------------------------------------


def test_expired_output_is_a_download_error(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("expired")
    with pytest.raises(DownloadError, match=r"output URL expired or gone \(404\)"):
        run(make(fake_wavespeed, tmp_path), lambda p: render(p, job(O3, SIMPLE), tmp_path / "o.mp4"))
    assert not (tmp_path / "o.mp4").exists()


def test_redirects_are_followed_only_to_http(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("redirect")
    dest = tmp_path / "o.mp4"
    run(make(fake_wavespeed, tmp_path), lambda p: render(p, job(O3, SIMPLE), dest))
    assert dest.read_bytes() == clip_bytes(5)

    fake_wavespeed.faults.add("redirect_file")
    with pytest.raises(DownloadError, match="refusing a redirect to a 'file' URL"):
        run(make(fake_wavespeed, tmp_path), lambda p: render(p, job(O3, SIMPLE), tmp_path / "p.mp4"))
    assert not (tmp_path / "p.mp4").exists()


def test_non_http_output_url_is_refused(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/a.mp4", "/etc/passwd"):
        with pytest.raises(DownloadError, match="only http"):
            run(make(fake_wavespeed, tmp_path), lambda p, u=url: p.download(u, tmp_path / "o.mp4"))  # type: ignore[misc]
    assert fake_wavespeed.requests == []


def test_download_over_the_cap_is_refused(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    provider = make(fake_wavespeed, tmp_path, max_download_bytes=10_000)
    with pytest.raises(DownloadError, match="10000-byte cap"):
        run(provider, lambda p: render(p, job(O3, SIMPLE), tmp_path / "o.mp4"))
    assert not (tmp_path / "o.mp4").exists()


def test_truncated_download_is_retried_then_reported(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("truncate", count=1)
    dest = tmp_path / "o.mp4"
    run(make(fake_wavespeed, tmp_path), lambda p: render(p, job(O3, SIMPLE), dest))
    assert dest.read_bytes() == clip_bytes(5)
    assert [r.status for r in fake_wavespeed.requests if r.path.startswith("/outputs/")] == [0, 200]

    fake_wavespeed.faults.add("truncate", count=10)
    with pytest.raises(DownloadError, match="after retries"):
        run(make(fake_wavespeed, tmp_path), lambda p: render(p, job(O3, SIMPLE), tmp_path / "p.mp4"))
    assert not (tmp_path / "p.mp4").exists()


# -- the key --------------------------------------------------------------------------------


def test_missing_key_points_to_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    with pytest.raises(AuthError, match=r"WAVESPEED_API_KEY is not set.*--provider local"):
        WaveSpeedProvider.from_env(cache_dir=tmp_path)


def test_from_env_reads_key_and_base_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WAVESPEED_API_KEY", KEY)
    monkeypatch.setenv("WAVESPEED_BASE_URL", "http://127.0.0.1:9/")
    provider = WaveSpeedProvider.from_env(cache_dir=tmp_path)
    assert provider.base_url == "http://127.0.0.1:9" and KEY not in repr(provider)
    asyncio.run(provider.aclose())


def test_key_never_appears_in_errors(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def collect(work: Callable[[WaveSpeedProvider], Awaitable[Any]], **kwargs: Any) -> None:
        provider = make(fake_wavespeed, tmp_path, **kwargs)
        assert KEY not in repr(provider) and KEY not in str(provider)
        with pytest.raises(Exception) as info:
            run(provider, work)
        errors.append(info.value)

    wrong = KEY + "-revoked"  # the fake echoes the token it got in its 401 message
    collect(lambda p: paid_submit(p, job(O3, SIMPLE)), key=wrong)
    collect(lambda p: p.poll("nope"), key=wrong)
    collect(lambda p: paid_submit(p, job(O3, {"prompt": "x", "image": image(tmp_path, "a.png")})), key=wrong)
    for kind in ("500", "drop", "429"):
        fake_wavespeed.faults.add(kind, SUBMIT, count=10)
        collect(lambda p: paid_submit(p, job(O3, SIMPLE)))
        fake_wavespeed.faults.clear()
    fake_wavespeed.faults.add("503", POLL, count=10)
    collect(lambda p: p.poll("nope"))
    collect(lambda p: p.poll("missing-task"))
    with pytest.raises(AuthError) as bad_header:
        WaveSpeedProvider(KEY + "\n" + KEY, fake_wavespeed.base_url, tmp_path)
    errors.append(bad_header.value)

    assert isinstance(errors[0], AuthError) and "rejected (401)" in str(errors[0])
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:  # the whole cause chain, as a traceback would show it
            for secret in (KEY, wrong):
                assert secret not in str(chain) and secret not in repr(chain), repr(chain)
            chain = chain.__cause__ or chain.__context__


# -- the retry policy -----------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("12", now=now) == 12.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None and parse_retry_after(None) is None


def test_backoff_is_capped_full_jitter_and_budgeted() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    for attempt in range(1, 12):
        ceiling = min(8.0, 2.0 ** (attempt - 1))
        assert all(0 <= policy.backoff(attempt) <= ceiling for _ in range(50))

    clock = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    async def refused() -> None:
        raise SubmitRefusedError("busy", retry_after=40)

    budgeted = RetryPolicy(attempts=10, max_total=100, sleep=sleep, clock=lambda: clock[0])
    with pytest.raises(SubmitRefusedError):
        asyncio.run(budgeted.call(refused))
    assert waits == [40, 40]  # a third 40 s wait would pass the 100 s budget: give up, don't undercut


def test_only_retryable_errors_are_retried() -> None:
    calls = []

    async def uncertain() -> None:
        calls.append(1)
        raise SubmitUncertainError("maybe")

    with pytest.raises(SubmitUncertainError):
        asyncio.run(RetryPolicy(sleep=Sleeps()).call(uncertain))
    assert calls == [1]


# -- the fake as a process, and chaos ---------------------------------------------------------


def test_fake_runs_as_a_process() -> None:
    script = Path(__file__).parents[1] / "fake_wavespeed.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--latency", "0.1", "--fault", "503:/api/v3/kwaivgi/:1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base) as client:
            fault = client.post("/_fake/faults", json={"kind": "429", "path_prefix": POLL, "retry_after": 2})
            assert fault.json()["kind"] == "429"
            assert client.post(SUBMIT + O3, json=SIMPLE).status_code == 503  # --fault
            assert client.post(SUBMIT + O3, json=SIMPLE).status_code == 401  # no key
            assert client.get("/_fake/stats").json()["submits"] == 2
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.stand_in(latency=0.1, api_key=KEY)
def test_safe_faults_still_render(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    # "Safe" is by endpoint, not by a shared random draw: a 503 on a submit may follow creation
    # (never re-sent, issue 11), so submits get only 429s (nothing created) and polls the 503s.
    # A seeded draw shared by submits and polls put a 503 on a submit whenever a slow machine
    # polled a different number of times.
    fake_wavespeed.faults.add("429", "/api/v3/kwaivgi/", count=2, method="POST", every=2, retry_after=0)
    fake_wavespeed.faults.add("503", "/api/v3/predictions/", count=3, method="GET")
    policy = RetryPolicy(attempts=8, base_delay=0.001, sleep=Sleeps())
    provider = WaveSpeedProvider(KEY, fake_wavespeed.base_url, tmp_path / "c", retry=policy)
    shots = [job(O3, {**SIMPLE, "prompt": f"shot {i}"}, f"s{i}") for i in range(3)]

    async def work(p: WaveSpeedProvider) -> list[TaskResult]:
        return [await render(p, s, tmp_path / f"{s.shot_id}.mp4") for s in shots]

    results = run(provider, work)
    assert all(r.completed for r in results)
    assert len(fake_wavespeed.tasks) == 3  # refusals never created a task
    statuses = [r.status for r in fake_wavespeed.requests]
    assert statuses.count(429) == 2 and statuses.count(503) == 3


@pytest.mark.stand_in(latency=0.05, api_key=KEY, faults=Faults(seed=5, rate=1.0, kinds={"fail"}))
def test_chaos_can_fail_tasks_when_asked(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    result = run(make(fake_wavespeed, tmp_path), lambda p: render(p, job(O3, SIMPLE), tmp_path / "o.mp4"))
    assert result.failed and result.error == "chaos: generation failed"
