"""The fal provider against the stand-in (tests/fake_fal.py): fal's paths, the Key header, the queue's
answers, what a failure costs, the requests list, uploads, cancel and prices (SPEC §5)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_fal import FakeFal
from money_kit import submit as paid_submit

from kling_render.errors import AuthError, SubmitRejectedError, SubmitUncertainError
from kling_render.jobs import Job, MediaRef
from kling_render.providers.fal.client import REQUESTS_FILE, FalProvider
from kling_render.providers.transport import Limits
from kling_render.retry import RetryPolicy

SECRET = "fal-SECRET-key-5f3c9a7e1d"
ENDPOINT = "fal-ai/kling-video/v3/pro/image-to-video"


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


FAST = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0, max_total=5.0, sleep=_no_sleep)


@pytest.fixture
def server() -> Iterator[FakeFal]:
    with FakeFal(latency=0.3, api_key=SECRET) as fake:
        yield fake


def provider(server: FakeFal, cache: Path, key: str = SECRET) -> FalProvider:
    url = server.base_url
    return FalProvider(key, url, url, url, cache, retry=FAST, limits=Limits(api_deadline=10.0))


def job(image: MediaRef, prompt: str = "a mug", **params: object) -> Job:
    wire = {"start_image_url": image, "prompt": prompt, "cfg_scale": 0.5, "generate_audio": False, "duration": "3"}
    return Job(
        shot_id="a", model="kling-v3.0-pro/image-to-video", params={**wire, **params}, duration=3, sound=False,
        aspect_ratio=None, key="k" * 64, cost_usd=0.336, endpoint=ENDPOINT, provider="fal",
    )  # fmt: skip


@pytest.fixture
def image(tmp_path: Path) -> MediaRef:
    from conftest import make_image

    from kling_render.fsutil import sha256_file

    path = make_image(tmp_path / "mug.png", 640, 360)
    return MediaRef(path=path, sha256=sha256_file(path))


async def finish(fal: FalProvider, request_id: str) -> object:
    for _ in range(100):
        result = await fal.poll(request_id)
        if result.terminal:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("the request never ended")


def test_a_request_goes_by_fals_paths_with_the_key_header(server: FakeFal, tmp_path: Path, image: MediaRef) -> None:
    async def main() -> None:
        fal = provider(server, tmp_path)
        try:
            request_id = await paid_submit(fal, job(image))
            result = await finish(fal, request_id)
            assert result.completed and result.output_url  # type: ignore[attr-defined]
            await fal.download(result.output_url, tmp_path / "clip.mp4")  # type: ignore[attr-defined]
        finally:
            await fal.aclose()
        assert (tmp_path / "clip.mp4").stat().st_size > 1000

    asyncio.run(main())
    paths = [(r.method, r.path) for r in server.requests]
    assert ("POST", "/storage/upload/initiate") in paths
    assert ("POST", f"/{ENDPOINT}") in paths
    request_id = next(iter(server.queue))
    # The status and result URLs name only owner and app, as fal gave them.
    assert ("GET", f"/fal-ai/kling-video/requests/{request_id}/status") in paths
    assert ("GET", f"/fal-ai/kling-video/requests/{request_id}") in paths
    for r in server.requests:
        keyed = r.path.startswith(("/upload/", "/files/"))
        assert (r.headers.get("Authorization") == f"Key {SECRET}") != keyed, r.path
    (submit,) = server.submits()
    assert submit.body["start_image_url"].startswith(server.base_url + "/files/upload/")
    assert submit.body["duration"] == "3" and "x-fal-no-retry" not in {k.lower() for k in submit.headers}
    assert len(server.charged()) == 1
    assert request_id in (tmp_path / REQUESTS_FILE).read_text()


def test_503_on_status_is_retried_and_429_on_submit_creates_nothing(
    server: FakeFal, tmp_path: Path, image: MediaRef
) -> None:
    server.faults.add("503", "/fal-ai/kling-video/requests/", count=2)
    server.faults.add("429", f"/{ENDPOINT}", count=2, retry_after=0)

    async def main() -> object:
        fal = provider(server, tmp_path)
        try:
            return await finish(fal, await paid_submit(fal, job(image)))
        finally:
            await fal.aclose()

    assert asyncio.run(main()).completed  # type: ignore[attr-defined]
    assert len(server.submits()) == 3 and len(server.queue) == 1, "429s created nothing, the third POST one request"
    assert server.faults.injected["503"] == 2


@pytest.mark.parametrize("kind", ["503", "lost", "no_id"])
def test_a_lost_submit_answer_is_uncertain_and_the_list_finds_its_request(
    server: FakeFal, tmp_path: Path, image: MediaRef, kind: str
) -> None:
    server.faults.add(kind, f"/{ENDPOINT}")

    async def main() -> None:
        fal = provider(server, tmp_path)
        try:
            with pytest.raises(SubmitUncertainError) as info:
                await paid_submit(fal, job(MediaRef(url="https://e.com/a.png"), prompt="x"))
            assert SECRET not in str(info.value)
            (created,) = server.queue.values()
            import time

            now = time.time()
            assert await fal.list_tasks(ENDPOINT, now - 600, now + 600) == [], "a running request is not listed"
            await asyncio.sleep(0.4)
            (listed,) = await fal.list_tasks(ENDPOINT, now - 600, now + 600)
            assert listed.id == created.id and listed.inputs == created.body and listed.status == "completed"
        finally:
            await fal.aclose()

    asyncio.run(main())
    assert len(server.submits()) == 1, "never sent again"


def test_a_rejected_submit_shows_fals_detail_and_creates_nothing(server: FakeFal, tmp_path: Path) -> None:
    async def main() -> None:
        fal = provider(server, tmp_path)
        try:
            with pytest.raises(SubmitRejectedError, match=r"rejected \(422\).*duration: input should be one of"):
                await paid_submit(fal, job(MediaRef(url="https://e.com/a.png"), duration=3))
        finally:
            await fal.aclose()

    asyncio.run(main())
    assert server.queue == {}


@pytest.mark.parametrize(
    ("status_code", "error_type", "cause", "refunded"),
    [(422, "content_policy_violation", "permanent", False), (500, "runner_server_error", "transient", True),
     (422, None, "permanent", False), (400, "odd_new_kind", "unclassified", False)],
)  # fmt: skip
def test_a_failed_request_says_its_cause_and_whether_it_may_be_charged(
    server: FakeFal, tmp_path: Path, image: MediaRef, status_code: int, error_type: str | None, cause: str,
    refunded: bool,
) -> None:  # fmt: skip
    server.faults.add("fail", f"/{ENDPOINT}", status_code=status_code, error_type=error_type)

    async def main() -> object:
        fal = provider(server, tmp_path)
        try:
            return await finish(fal, await paid_submit(fal, job(image)))
        finally:
            await fal.aclose()

    result = asyncio.run(main())
    assert result.failed and result.cause == cause and result.refunded is refunded  # type: ignore[attr-defined]
    assert "flagged" in (result.error or "")  # type: ignore[attr-defined]
    assert len(server.charged()) == (0 if refunded else 1)


def test_an_expired_result_is_found_in_the_requests_list(server: FakeFal, tmp_path: Path, image: MediaRef) -> None:
    server.faults.add("result_gone", "/fal-ai/kling-video/requests/")

    async def main() -> object:
        fal = provider(server, tmp_path)
        try:
            return await finish(fal, await paid_submit(fal, job(image)))
        finally:
            await fal.aclose()

    result = asyncio.run(main())
    assert result.completed and result.output_url.endswith(".mp4")  # type: ignore[attr-defined]
    assert any(r.path == "/v1/models/requests/by-endpoint" and "request_id=" in r.query for r in server.requests)


def test_a_later_run_follows_a_request_by_its_recorded_urls(server: FakeFal, tmp_path: Path, image: MediaRef) -> None:
    async def first() -> str:
        fal = provider(server, tmp_path)
        try:
            return await paid_submit(fal, job(image))
        finally:
            await fal.aclose()

    request_id = asyncio.run(first())

    async def resume(cache: Path) -> object:
        fal = provider(server, cache)
        try:
            return await finish(fal, request_id)
        finally:
            await fal.aclose()

    assert asyncio.run(resume(tmp_path)).completed  # type: ignore[attr-defined]

    # Another machine (a remote claim's follower) has no record: it finds the request by its app.
    async def elsewhere() -> object:
        url = server.base_url
        fal = FalProvider(SECRET, url, url, url, tmp_path / "other", retry=FAST, endpoints=[ENDPOINT])
        try:
            return await finish(fal, request_id)
        finally:
            await fal.aclose()

    (tmp_path / "other").mkdir()
    assert asyncio.run(elsewhere()).completed  # type: ignore[attr-defined]


def test_cancel_drops_a_queued_request_only(server: FakeFal, tmp_path: Path, image: MediaRef) -> None:
    server.faults.add("slow", f"/{ENDPOINT}", latency=60.0)

    async def main() -> tuple[bool, bool]:
        fal = provider(server, tmp_path)
        try:
            queued = await paid_submit(fal, job(image))
            first = await fal.cancel(queued)
            done = await paid_submit(fal, job(image, prompt="another"))
            await finish(fal, done)
            return first, await fal.cancel(done)
        finally:
            await fal.aclose()

    assert asyncio.run(main()) == (True, False)
    assert len(server.charged()) == 1, "the cancelled request is never billed"


def test_the_key_is_never_in_an_error_even_when_fal_echoes_it(server: FakeFal, tmp_path: Path) -> None:
    wrong = "fal-WRONG-key-0987654321"

    async def main() -> None:
        fal = provider(server, tmp_path, key=wrong)
        try:
            with pytest.raises(AuthError) as info:
                await paid_submit(fal, job(MediaRef(url="https://e.com/a.png")))
            assert wrong not in str(info.value) and "rejected (401)" in str(info.value)
        finally:
            await fal.aclose()

    asyncio.run(main())
    assert server.queue == {}


def test_an_exhausted_balance_stops_the_run(server: FakeFal, tmp_path: Path) -> None:
    from kling_render.errors import AccountError

    server.faults.add("balance", f"/{ENDPOINT}")

    async def main() -> None:
        fal = provider(server, tmp_path)
        try:
            with pytest.raises(AccountError, match="cannot pay"):
                await paid_submit(fal, job(MediaRef(url="https://e.com/a.png")))
        finally:
            await fal.aclose()

    asyncio.run(main())


def test_prices_come_from_fals_pricing_api(server: FakeFal, tmp_path: Path) -> None:
    async def main() -> dict[str, tuple[float, str]]:
        fal = provider(server, tmp_path)
        try:
            return await fal.unit_prices([ENDPOINT, "fal-ai/kling-video/v4/text-to-video", "acme/unknown"])
        finally:
            await fal.aclose()

    prices = asyncio.run(main())
    assert prices == {ENDPOINT: (0.112, "video_second"), "fal-ai/kling-video/v4/text-to-video": (0.157, "video_second")}
    assert server.queue == {}, "pricing runs nothing"


def test_plain_http_is_refused_to_a_host_that_is_not_loopback(tmp_path: Path) -> None:
    from kling_render.errors import UsageError

    with pytest.raises(UsageError, match="plain http to a host that is not loopback"):
        FalProvider(SECRET, "http://fal.example", "https://api.fal.ai", "https://rest.fal.ai", tmp_path)


def test_a_submit_answer_pointing_elsewhere_is_not_followed_with_the_key(server: FakeFal, tmp_path: Path) -> None:
    from kling_render.providers.fal.answers import handle

    fal = provider(server, tmp_path)
    body = {"request_id": "abc", "status_url": "https://evil.example/x/requests/abc/status",
            "response_url": f"{server.base_url}/fal-ai/kling-video/requests/abc", "cancel_url": None}  # fmt: skip
    found = handle(body, fal._ours)
    assert found is not None and found.status_url is None and found.response_url == body["response_url"]
    asyncio.run(fal.aclose())
