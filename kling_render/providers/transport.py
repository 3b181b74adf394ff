"""Bounded HTTP for providers (SPEC §5, §8): no transfer may hang a run or fill its memory.

- Every transfer has a total deadline, and a body that arrives slower than ``stall_rate``
  bytes/s over any ``stall_window`` seconds is aborted (a trickle never holds a run).
- Answers are read streaming and refused past a size cap (a 256 MB JSON answer costs at most
  the cap in memory); a compressed body is inflated under the same bound.
- A base URL that will carry the API key is https, or http to a loopback address only.
- Every string a server sends passes through a ``Redactor`` before it is stored or shown.

The errors here (``TransferError``) are internal: the provider maps them to kling_render
errors with what the failed request meant (a lost submit answer is not a failed poll).
"""

from __future__ import annotations

import asyncio
import json
import math
import select
import socket
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

import httpcore
import httpx

from kling_render import env
from kling_render.errors import UsageError
from kling_render.loopback import is_loopback_host
from kling_render.masking import mask
from kling_render.providers.base import MAX_DOWNLOAD_BYTES

# The connection pool of a provider's client. httpx keeps 20 idle connections by default, and
# httpcore 1.0 closes an idle one whenever the pool holds more than that many in all: a run polling
# 20 tasks while it downloads their outputs closed and reopened hundreds of connections a minute.
# 32 covers a run at concurrency 20 with its downloads; more is not kept, because the pool's
# bookkeeping checks every kept connection on every request (event-loop time, measured).
POOL = httpx.Limits(max_connections=100, max_keepalive_connections=32, keepalive_expiry=5.0)


def client_transport() -> httpx.AsyncHTTPTransport:
    """The transport of a provider's client: httpx's own, with the ``POOL`` limits, whose
    connections tell the pool cheaply whether an idle one was closed by the server.

    httpcore's pool asks every idle connection that on every request it queues and every response
    it closes; through anyio each ask built the socket's attribute table anew (a dict of closures)
    to find the socket. With 20 tasks polled at once that was about a third of a poll's CPU on the
    event loop (py-spy); 60 tasks at C 20 with tiny clips took 3.15 user-s of CPU instead of 3.55
    (wall 10.53 s against 10.67, 4 runs each, interleaved). The connections here find their socket
    once (``_Stream``); everything else is httpcore's."""
    transport = httpx.AsyncHTTPTransport(limits=POOL)
    # httpx builds its pool with anyio's backend and takes no other: the same pool, built the same
    # way (httpx 0.27-0.29: AsyncHTTPTransport.__init__) but for the backend. tests/unit/test_transport.py
    # checks that the pool in use is this one, so an httpx that stores it elsewhere fails a test.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=POOL.max_connections,
        max_keepalive_connections=POOL.max_keepalive_connections,
        keepalive_expiry=POOL.keepalive_expiry,
        network_backend=_Backend(),
    )
    return transport


class _Stream(httpcore.AsyncNetworkStream):
    """An anyio stream of httpcore's whose socket is looked up once, for ``is_readable``."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._sock: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._sock)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would not block: data, or the server's close (httpcore's rule: a socket that
    is gone counts as readable, so the pool drops its connection)."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, its streams wrapped in ``_Stream``."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _Stream(inner)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


RESCHEDULE_EVERY = 0.1  # seconds between moves of a body's stall deadline


@dataclass(frozen=True)
class Limits:
    """Bounds of every transfer; tests shrink them, the defaults are the product's."""

    api_deadline: float = 120.0  # seconds for a whole API call: connect, send, answer
    download_deadline: float = 1800.0  # seconds for a whole output download, redirects included
    json_max_bytes: int = 8 * 1024 * 1024  # a page of 100 listed tasks with inputs is well under 1 MB
    download_max_bytes: int = MAX_DOWNLOAD_BYTES
    stall_rate: float = 1024.0  # bytes/s a body must keep up ...
    stall_window: float = 30.0  # ... over any window of this many seconds


def limits_from_env() -> Limits:
    """The product's Limits, with the bounds the environment sets (env.http_limits_overrides: tests
    shrink them to meet a trickling stand-in in seconds)."""
    given, base = env.http_limits_overrides(), Limits()
    return replace(
        base,
        api_deadline=given.get("api_deadline", base.api_deadline),
        download_deadline=given.get("download_deadline", base.download_deadline),
        stall_rate=given.get("stall_rate", base.stall_rate),
        stall_window=given.get("stall_window", base.stall_window),
    )


class TransferError(Exception):
    """A transfer broke a bound; the message says which (no server text, no key)."""


class Stalled(TransferError):
    pass


class TimedOut(TransferError):
    pass


class TooLarge(TransferError):
    pass


class BadEncoding(TransferError):
    pass


@dataclass(frozen=True)
class Answer:
    """A whole (bounded) HTTP answer."""

    status: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        """The parsed body; ValueError when it is not JSON."""
        return json.loads(self.content)

    def snippet(self) -> str:
        return self.content[:600].decode("utf-8", "replace")


class StallGuard:
    """Tells when a body falls under ``rate`` bytes/s over a sliding ``window`` seconds.

    Samples are (time, bytes so far). With no further bytes, the body stalls at the time of the
    first sample whose count exceeds ``total - rate*window``, plus ``window``.
    """

    def __init__(self, rate: float, window: float, now: float) -> None:
        self.need = rate * window
        self.window = window
        self.total = 0
        self.samples: deque[tuple[float, int]] = deque([(now, 0)])

    def add(self, n: int, now: float) -> None:
        self.total += n
        self.samples.append((now, self.total))
        while len(self.samples) >= 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()  # keep one sample at or before the window's start: the baseline

    def deadline(self) -> float:
        threshold = self.total - self.need
        for when, count in self.samples:
            if count > threshold:
                return when + self.window
        return math.inf  # pragma: no cover - the last sample always counts ``total`` > threshold


class Transfer:
    """One bounded transfer: ``async with Transfer(...)`` around the request, ``read`` for bodies.

    A single asyncio timeout covers the whole transfer; ``read`` moves it earlier whenever the
    body would stall first. Leaving the block on that timeout raises Stalled or TimedOut.
    """

    def __init__(self, seconds: float, limits: Limits) -> None:
        self.limits = limits
        self.seconds = seconds
        self._loop = asyncio.get_running_loop()
        self.deadline = self._loop.time() + seconds
        self._timeout: asyncio.Timeout | None = None
        self._guard: StallGuard | None = None

    async def __aenter__(self) -> Transfer:
        self._timeout = asyncio.timeout_at(self.deadline)
        await self._timeout.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._timeout is not None
        try:
            await self._timeout.__aexit__(*exc)
        except TimeoutError:
            guard = self._guard
            if guard is not None and guard.deadline() < self.deadline:
                rate, window = self.limits.stall_rate, self.limits.stall_window
                raise Stalled(
                    f"stalled: under {rate:g} bytes/s for {window:g}s ({guard.total} bytes received)"
                ) from None
            raise TimedOut(f"no complete answer within {self.seconds:g}s") from None

    async def read(self, response: httpx.Response, sink: Callable[[bytes], object], max_bytes: int) -> int:
        """Stream the body into ``sink``, decoded; the decoded byte count. TooLarge past ``max_bytes``."""
        declared = content_length(response)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("", "identity") and declared is not None and declared > max_bytes:
            raise TooLarge(f"the answer announces {declared} bytes, over the {max_bytes}-byte cap")
        inflate = _inflater(encoding)
        guard = self._guard = StallGuard(self.limits.stall_rate, self.limits.stall_window, self._loop.time())
        assert self._timeout is not None
        self._timeout.reschedule(min(self.deadline, guard.deadline()))
        received = 0
        moved = self._loop.time()  # when the timeout was last moved
        async for chunk in response.aiter_raw():
            now = self._loop.time()
            guard.add(len(chunk), now)
            data = inflate(chunk, max_bytes - received + 1)
            received += len(data)
            if received > max_bytes:
                raise TooLarge(f"the answer exceeds the {max_bytes}-byte cap")
            if data:
                sink(data)
            if now - moved >= RESCHEDULE_EVERY:
                # Not per chunk: moving the loop's timer for every 64 KB of a clip kept the event loop
                # (which polls the other tasks) busy; a deadline up to this much early is nothing
                # against a stall window of seconds.
                self._timeout.reschedule(min(self.deadline, guard.deadline()))
                moved = now
        tail = inflate(b"", max_bytes - received + 1)
        received += len(tail)
        if received > max_bytes:
            raise TooLarge(f"the answer exceeds the {max_bytes}-byte cap")
        if tail:
            sink(tail)
        self._timeout.reschedule(self.deadline)
        return received


def _inflater(encoding: str) -> Callable[[bytes, int], bytes]:
    """A bounded decoder for the body's Content-Encoding (none, gzip or deflate)."""
    if encoding in ("", "identity"):
        return lambda chunk, limit: chunk
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadEncoding(f"unsupported Content-Encoding {encoding[:20]!r}")
    decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected

    def inflate(chunk: bytes, limit: int) -> bytes:
        try:
            return decoder.decompress(decoder.unconsumed_tail + chunk, max(1, limit))
        except zlib.error as exc:
            raise BadEncoding(f"undecodable {encoding} body") from exc

    return inflate


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    limits: Limits,
    *,
    headers: dict[str, str],
    json_body: Any = None,
    max_bytes: int | None = None,
) -> Answer:
    """One bounded request with a small answer read whole (API calls)."""
    cap = limits.json_max_bytes if max_bytes is None else max_bytes
    buffer = bytearray()
    async with (
        Transfer(limits.api_deadline, limits) as transfer,
        client.stream(method, url, headers={**headers, "Accept-Encoding": "identity"}, json=json_body) as response,
    ):
        await transfer.read(response, buffer.extend, cap)
    return Answer(response.status_code, response.headers, bytes(buffer))


def content_length(response: httpx.Response) -> int | None:
    try:
        value = int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None
    return value if value >= 0 else None


# -- base URL and redaction -----------------------------------------------------------------------


def check_base_url(url: str, *, variable: str) -> str:
    """``url`` without a trailing slash, when it may carry the API key: https, or http to a loopback
    address (127.0.0.0/8, ::1, localhost). Anything else is a UsageError, raised before any request."""
    text = url.strip().rstrip("/")
    problem = _base_url_problem(text)
    if problem:
        raise UsageError(f"{variable} {_shown_url(text)} {problem}; the API key is sent only over https")
    return text


def _base_url_problem(text: str) -> str | None:
    if not text.isprintable() or any(c.isspace() for c in text):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "is not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.query or parts.fragment:
        return "must not carry a query or fragment"
    if parts.scheme == "http" and not is_loopback_host(host):
        return "is plain http to a host that is not loopback"
    return None



def check_key(key: str, *, variable: str) -> str:
    """The API key, stripped, when it can go in a header; AuthError (said without the value: httpx
    would echo an invalid header value in its error) when it is empty or holds whitespace."""
    from kling_render.errors import AuthError

    text = key.strip()
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        raise AuthError(f"{variable} is empty or contains whitespace/control characters")
    return text


def _shown_url(text: str) -> str:
    """The URL as an error may show it: scheme and host only (a path could hold anything)."""
    try:
        parts = urlsplit(text)
        if parts.scheme and parts.hostname:
            return repr(f"{parts.scheme}://{parts.hostname}")
    except ValueError:
        pass
    return "(unparseable)"


class Redactor:
    """Removes a secret (as is and URL-encoded) from text, and makes server text one short line."""

    def __init__(self, secret: str) -> None:
        self._variants = sorted({secret, quote(secret, safe="")}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for variant in self._variants:
            text = text.replace(variant, "***")
        return mask(text)  # and every other known secret (masking.py)

    def line(self, text: object, limit: int = 300) -> str:
        """Server-provided text as a message may carry it: no secret, printable, one line, short."""
        clean = self("".join(c if c.isprintable() else " " for c in str(text)))
        clean = " ".join(clean.split())
        return clean if len(clean) <= limit else clean[: limit - 3] + "..."
