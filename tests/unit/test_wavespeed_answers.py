"""What each WaveSpeed answer means (SPEC §5), against the stand-in over real sockets.

The envelope's ``code`` counts as much as the HTTP status on every answer; a submit is
accepted, refused (429: nothing created), rejected (4xx: nothing created), an account problem
(401/403/402, balance) or uncertain (anything else: a task may exist, never re-sent). Every
case counts the tasks the stand-in created.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fake_wavespeed import FakeWaveSpeed
from money_kit import submit as paid_submit
from test_wavespeed import KEY, O3, POLL, SIMPLE, SUBMIT, Sleeps, image, job, make, run

from kling_render.errors import (
    AccountError,
    AuthError,
    ProviderError,
    SubmitRejectedError,
    SubmitUncertainError,
    TaskGoneError,
    UsageError,
)
from kling_render.jobs import TaskResult
from kling_render.providers.wavespeed.client import WaveSpeedProvider, failure_cause

pytestmark = pytest.mark.stand_in(latency=0.15, api_key=KEY)


def submit_raises(fake_wavespeed: FakeWaveSpeed, tmp_path: Path, error: type[Exception], match: str) -> Exception:
    sleeps = Sleeps()
    with pytest.raises(error, match=match) as info:
        run(make(fake_wavespeed, tmp_path, sleeps), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert sleeps.waits == []  # none of these is retried
    assert len(fake_wavespeed.submits()) == 1
    return info.value


# -- submit ---------------------------------------------------------------------------------------


def test_an_error_envelope_in_a_200_is_a_rejection_with_the_servers_words(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    fake_wavespeed.faults.add("envelope", SUBMIT, code=400, message="prompt is too long (max 2500 characters)")
    exc = submit_raises(fake_wavespeed, tmp_path, SubmitRejectedError, r"rejected \(code 400\): prompt is too long")
    assert isinstance(exc, SubmitRejectedError) and exc.code == 400
    assert fake_wavespeed.tasks == {}  # nothing was created, nothing is paid


@pytest.mark.parametrize("status", ["400", "404", "413", "422"])
def test_a_4xx_is_a_rejection(fake_wavespeed: FakeWaveSpeed, tmp_path: Path, status: str) -> None:
    fake_wavespeed.faults.add(status, SUBMIT, message=f"nope {status}")
    exc = submit_raises(fake_wavespeed, tmp_path, SubmitRejectedError, rf"rejected \({status}\): nope {status}")
    assert isinstance(exc, SubmitRejectedError) and exc.code == int(status) and fake_wavespeed.tasks == {}


@pytest.mark.parametrize(
    ("kind", "options", "error", "match"),
    [
        ("401", {}, AuthError, r"API key was rejected \(401\)"),
        ("403", {}, AuthError, r"API key was rejected \(403\)"),
        ("402", {}, AccountError, r"cannot pay \(402\): Insufficient balance"),
        ("balance", {}, AccountError, r"cannot pay \(code 400\): Insufficient balance, please top up"),
        ("balance", {"code": 402, "message": "balance is not enough"}, AccountError, r"code 402"),
        ("envelope", {"code": 401, "message": "token expired"}, AuthError, "token expired"),
    ],
)
def test_account_problems_are_their_own_error(
    fake_wavespeed: FakeWaveSpeed,
    tmp_path: Path,
    kind: str,
    options: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    fake_wavespeed.faults.add(kind, SUBMIT, **options)
    exc = submit_raises(fake_wavespeed, tmp_path, error, match)
    assert isinstance(exc, AccountError)
    # a rejected key is said to be one, never sent to top up a balance (issue 23 item 8)
    assert ("top up" in str(exc)) == (error is AccountError), str(exc)
    assert ("WAVESPEED_API_KEY" in str(exc)) == (error is AuthError), str(exc)
    assert fake_wavespeed.tasks == {}


@pytest.mark.parametrize(
    ("kind", "options", "match"),
    [
        ("envelope", {"code": 500, "message": "internal"}, r"server error \(code 500\) internal"),
        ("503", {}, r"server error \(503\)"),
        ("no_id", {}, "the answer has no task id"),
        ("bad_id", {"task_id": "abc\ndef"}, r"task id 'abc\\ndef' is not a usable id"),
        ("bad_id", {"task_id": "x" * 70_000}, r"task id 'x{40}\.\.\.' is not a usable id"),
        ("bad_id", {"task_id": "../../etc"}, "is not a usable id"),
        ("huge", {"size": 20 * 1024 * 1024}, "over the 8388608-byte cap"),
    ],
)
def test_a_possibly_created_task_is_uncertain_never_resent(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path, kind: str, options: dict[str, object], match: str
) -> None:
    fake_wavespeed.faults.add(kind, SUBMIT, **options)
    exc = submit_raises(fake_wavespeed, tmp_path, SubmitUncertainError, match)
    assert len(str(exc)) < 400
    assert len(fake_wavespeed.tasks) == 1  # it exists: exactly why the submit is never sent again


def test_a_500_that_created_nothing_is_still_uncertain(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("500", SUBMIT, create=False)
    submit_raises(fake_wavespeed, tmp_path, SubmitUncertainError, "a paid task may exist")
    assert fake_wavespeed.tasks == {}  # the client cannot know: the runner asks the task list


def test_only_429_is_retried(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("envelope", SUBMIT, code=429, message="slow down")
    sleeps = Sleeps()
    task_id = run(make(fake_wavespeed, tmp_path, sleeps), lambda p: paid_submit(p, job(O3, SIMPLE)))
    assert len(sleeps.waits) == 1 and list(fake_wavespeed.tasks) == [task_id]
    assert [r.status for r in fake_wavespeed.submits()] == [200, 200]


def test_an_upload_slot_error_envelope_fails_before_any_submit(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("envelope", "/api/v3/media/uploads", code=400, message="file type not allowed")
    shot = job(O3, {"prompt": "x", "image": image(tmp_path, "a.png")}, duration=5)
    with pytest.raises(ProviderError, match=r"upload of a\.png: rejected \(code 400\): file type not allowed"):
        run(make(fake_wavespeed, tmp_path), lambda p: paid_submit(p, shot))
    assert fake_wavespeed.submits() == []


def test_an_upload_slot_balance_envelope_is_an_account_problem(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("balance", "/api/v3/media/uploads")
    shot = job(O3, {"prompt": "x", "image": image(tmp_path, "a.png")}, duration=5)
    with pytest.raises(AccountError):
        run(make(fake_wavespeed, tmp_path), lambda p: paid_submit(p, shot))
    assert fake_wavespeed.submits() == []


# -- poll -----------------------------------------------------------------------------------------


def poll_once(fake_wavespeed: FakeWaveSpeed, tmp_path: Path, sleeps: Sleeps | None = None) -> TaskResult:
    async def work(p: WaveSpeedProvider) -> TaskResult:
        return await p.poll(await paid_submit(p, job(O3, SIMPLE)))

    return run(make(fake_wavespeed, tmp_path, sleeps), work)


@pytest.mark.stand_in(latency=600, api_key=KEY)  # the task is still running after the retried polls, however slow
def test_poll_envelopes_are_honoured(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    fake_wavespeed.faults.add("envelope", POLL, code=500)
    fake_wavespeed.faults.add("envelope", POLL, code=429)
    sleeps = Sleeps()
    assert poll_once(fake_wavespeed, tmp_path, sleeps).status in ("created", "processing")
    assert len(sleeps.waits) == 2  # retried like the HTTP statuses

    fake_wavespeed.faults.add("envelope", POLL, code=404, message="task not found")
    with pytest.raises(TaskGoneError, match=r"not found \(code 404\): task not found"):
        poll_once(fake_wavespeed, tmp_path)
    fake_wavespeed.faults.add("envelope", POLL, code=400, message="bad id")
    with pytest.raises(ProviderError, match=r"rejected \(code 400\): bad id"):
        poll_once(fake_wavespeed, tmp_path)
    fake_wavespeed.faults.add("balance", POLL)
    with pytest.raises(AccountError):
        poll_once(fake_wavespeed, tmp_path)


@pytest.mark.parametrize(
    ("options", "status", "code", "cause"),
    [
        ({"code": 1200, "error": "flagged by moderation"}, "failed", "1200", "permanent"),
        ({"code": 1402, "error": "cannot fetch image"}, "failed", "1402", "permanent"),
        ({"code": 1404, "error": "x"}, "failed", "1404", "permanent"),
        ({"code": 5000, "error": "internal"}, "failed", "5000", "transient"),
        ({"code": 5004, "error": "timed out"}, "failed", "5004", "transient"),
        ({"status": "timeout", "error": "took too long"}, "timeout", None, "transient"),
        ({"status": "cancelled", "error": "cancelled"}, "cancelled", None, "transient"),
        ({"code": 1300, "error": "something new"}, "failed", "1300", "unclassified"),
        ({"error": "no code at all"}, "failed", None, "unclassified"),
    ],
)
def test_a_failed_task_carries_its_code_and_cause(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path, options: dict[str, object], status: str, code: str | None, cause: str
) -> None:
    fake_wavespeed.faults.add("fail", SUBMIT, **options)

    async def work(p: WaveSpeedProvider) -> TaskResult:
        task_id = await paid_submit(p, job(O3, SIMPLE))
        for _ in range(200):
            result = await p.poll(task_id)
            if result.terminal:
                return result
            await asyncio.sleep(0.03)
        raise AssertionError("never finished")

    result = run(make(fake_wavespeed, tmp_path), work)
    assert (result.status, result.code, result.cause, result.error) == (status, code, cause, options["error"])
    assert result.failed and result.output_url is None


def test_failure_causes() -> None:
    assert failure_cause("failed", 1200) == "permanent"
    assert failure_cause("cancelled", 1200) == "permanent"  # the code says the inputs are at fault
    assert failure_cause("cancelled", None) == "transient"
    assert failure_cause("deleted", None) == "unclassified"


def test_a_completed_task_without_a_usable_output_is_completed_and_unusable(
    fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    for kind, options in (("no_outputs", {}), ("output_url", {"url": ""}), ("output_url", {"url": "   "})):
        fake_wavespeed.faults.add(kind, SUBMIT, **options)

        async def work(p: WaveSpeedProvider) -> TaskResult:
            task_id = await paid_submit(p, job(O3, SIMPLE))
            for _ in range(200):
                result = await p.poll(task_id)
                if result.terminal:
                    return result
                await asyncio.sleep(0.03)
            raise AssertionError("never finished")

        result = run(make(fake_wavespeed, tmp_path), work)
        assert result.completed and result.output_url is None and not result.failed, (kind, options)


def test_bad_task_ids_never_reach_a_url(fake_wavespeed: FakeWaveSpeed, tmp_path: Path) -> None:
    for bad in ("a\nb", "x" * 70_000, "../etc/passwd", "", "-leading-dash", "a/b"):
        with pytest.raises(ProviderError, match="not a usable task id"):
            run(make(fake_wavespeed, tmp_path), lambda p, b=bad: p.poll(b))  # type: ignore[misc]
    assert fake_wavespeed.requests == []


# -- the base URL ---------------------------------------------------------------------------------

GOOD = ["https://api.wavespeed.ai", "https://proxy.example.com/wavespeed/", "http://127.0.0.1:8080",
        "http://127.9.8.7", "http://[::1]:9", "http://localhost:7", "HTTP://LOCALHOST"]  # fmt: skip
BAD = [
    "http://example.invalid",  # plain http to a remote host: the key would travel in clear
    "http://10.0.0.1",
    "http://0x7f.1",  # loopback spelled in a way other parsers read differently: refused
    "ftp://api.wavespeed.ai",
    "https://user:pass@api.wavespeed.ai",
    "https://api.wavespeed.ai/?x=1",
    "https://api.wavespeed.ai/#f",
    "https://api.wave\nspeed.ai",
    "https://api.wavespeed.ai/a b",
    "api.wavespeed.ai",
    "https://",
    "https://api.wavespeed.ai:99999",
]


@pytest.mark.parametrize("url", GOOD)
def test_base_urls_that_may_carry_the_key(url: str, tmp_path: Path) -> None:
    provider = WaveSpeedProvider(KEY, url, tmp_path)
    assert not provider.base_url.endswith("/")
    asyncio.run(provider.aclose())


@pytest.mark.parametrize("url", BAD)
def test_base_urls_that_may_not(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"WAVESPEED_BASE_URL .*the API key is sent only over https") as info:
        WaveSpeedProvider(KEY, url, tmp_path)
    assert info.value.exit_code == 2 and "user:pass" not in str(info.value)
    monkeypatch.setenv("WAVESPEED_BASE_URL", url)
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    with pytest.raises(UsageError):  # checked before the key, so a missing key does not hide it
        WaveSpeedProvider.from_env(cache_dir=tmp_path)

