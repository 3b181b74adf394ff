"""Fetching a provider's output (and shared helpers of the HTTP providers): bounded, retried, never
partial. Outputs live on the providers' CDNs: no API key is ever sent with these requests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import httpx

from kling_render.errors import DownloadError, DownloadInterrupted, OutputGoneError, TransientError
from kling_render.providers import transport as net
from kling_render.providers.transport import Limits, TooLarge, Transfer
from kling_render.retry import RetryPolicy

MAX_REDIRECTS = 5

RetryAfter = Callable[[httpx.Headers], "float | None"]


async def download(
    client: httpx.AsyncClient, url: str, dest: Path, *, limits: Limits, retry: RetryPolicy, retry_after: RetryAfter
) -> None:
    """Write ``url`` to ``dest`` (a temp path): DownloadError when the output is bad (not http(s), over
    the size cap, refused, empty), OutputGoneError on 404/410, DownloadInterrupted when the network or
    this machine's disk failed it (the task is kept); transient failures are retried first."""
    if not is_http(url):
        raise DownloadError(f"refusing a {scheme(url)!r} output URL: only http(s) is downloaded")
    try:
        await retry.call(lambda: _download_once(client, url, dest, limits, retry_after), what="download")
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()  # no partial output behind
        if isinstance(exc, TransientError):
            raise DownloadInterrupted(f"download failed after retries: {exc}") from exc
        raise


async def _download_once(
    client: httpx.AsyncClient, url: str, dest: Path, limits: Limits, retry_after: RetryAfter
) -> None:
    current = httpx.URL(url)
    try:
        async with Transfer(limits.download_deadline, limits) as transfer:
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    async with client.stream("GET", current, headers={"Accept-Encoding": "identity"}) as response:
                        if response.is_redirect:
                            current = _redirect_target(response)
                            continue
                        await _save(response, dest, transfer, limits, retry_after)
                        return
                except httpx.TransportError as exc:  # dropped or truncated mid-body: fetch again
                    raise TransientError(f"download: {describe(exc)}") from exc
                except httpx.HTTPError as exc:
                    raise DownloadError(f"download: {describe(exc)}") from exc
    except (net.Stalled, net.TimedOut, net.BadEncoding) as exc:
        raise DownloadInterrupted(f"download aborted: {exc}") from exc
    except TooLarge:
        raise DownloadError(f"output exceeds the {limits.download_max_bytes}-byte cap") from None
    raise DownloadError(f"download: more than {MAX_REDIRECTS} redirects")


async def _save(
    response: httpx.Response, dest: Path, transfer: Transfer, limits: Limits, retry_after: RetryAfter
) -> None:
    status = response.status_code
    if status in (404, 410):
        raise OutputGoneError(f"output URL expired or gone ({status})")
    if status == 429 or status >= 500:
        raise TransientError(f"download: server answered {status}", retry_after(response.headers))
    if status != 200:
        raise DownloadError(f"download refused ({status})")
    declared = net.content_length(response)
    try:
        with dest.open("wb") as fh:
            received = await transfer.read(response, fh.write, limits.download_max_bytes)
    except OSError as exc:  # disk full, file too large: the task stays, the next run fetches again
        raise DownloadInterrupted(f"cannot write the download to {dest.parent}: {exc.strerror or exc}") from None
    encoded = response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
    if declared is not None and not encoded and received != declared:
        raise TransientError(f"download truncated: {received} of {declared} bytes")
    if received == 0:
        raise DownloadError("output is empty (0 bytes)")


def _redirect_target(response: httpx.Response) -> httpx.URL:
    location = response.headers.get("Location", "")
    try:
        target = response.url.join(location)
    except httpx.InvalidURL as exc:
        raise DownloadError("download: invalid redirect location") from exc
    if target.scheme not in ("http", "https"):
        raise DownloadError(f"download: refusing a redirect to a {target.scheme!r} URL (only http(s))")
    return target


def scheme(url: str) -> str:
    return url.split(":", 1)[0].lower() if ":" in url else ""


def is_http(url: str) -> bool:
    return scheme(url) in ("http", "https") and url.lower().startswith(("http://", "https://"))


def describe(exc: BaseException) -> str:
    """An exception as one short line: its type and message."""
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
