"""The object-store seam: every obstore call of kling-render goes through :class:`RemoteStore`.

Here, and only here:
- obstore errors become RemoteError subclasses, with credentials redacted from every message;
- a lost race is a result (:class:`Lost`), never an exception: 412 Precondition Failed and 409
  Conflict alike (some S3-compatible stores answer 409 to a conditional write; obstore reports
  both as AlreadyExists/Precondition errors);
- transient failures are retried by the project's one retry policy (obstore's own retries are
  off, so a 503 is not retried twice over);
- a write that is answered "lost" is read back: when the object now holds exactly the bytes
  we wrote, it was our own write (a retried request whose first try landed), and it is won.

Every request has a total deadline (SPEC §8): obstore's own ``timeout`` (records, claims, lookups
and listing pages: ``KLING_RENDER_REMOTE_TIMEOUT``, default 60 s; clip transfers, through a second
client: ``KLING_RENDER_REMOTE_TRANSFER_TIMEOUT``, default 30 min, with a read timeout so a stalled
body fails sooner), and ``asyncio.wait_for`` a little later as a backstop. A request that misses
its deadline is not retried (an endpoint that accepts and never answers would hold a command for
minutes): it is one line naming the remote.

Time on the remote is the store's own: objects read carry their Last-Modified, and
:meth:`RemoteStore.now` reads the store's clock (the Last-Modified of a scratch object written
just now), so claims are judged by the store's time, never by a writer's stamp.

Every small object written passes the secret mask (masking.py).

obstore's blocking API runs in a worker thread (``asyncio.to_thread``): its asyncio API
(``put_async`` …) aborted the interpreter at exit in about one run in ten here (obstore 0.12.1,
Python 3.11), the blocking API never did.

Compare-and-swap on ``file://``: obstore's LocalStore has create-only puts (a hard link, atomic)
but no conditional update, so the update is made under an OS file lock held by every
kling-render process that writes the directory (:meth:`RemoteStore._local_cas`). That holds on
one machine and on file systems with working ``flock`` (not every NFS set-up).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import filelock

from kling_render import env
from kling_render.errors import KlingRenderError, RemoteError, RemoteIntegrityError, RemoteTransientError
from kling_render.masking import mask, mask_bytes
from kling_render.retry import RetryPolicy
from kling_render.store.remote.config import RemoteURL, S3Settings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig, S3Config

__all__ = ["Deadlines", "Listed", "Lost", "Meta", "RemoteStore", "Stored", "Written", "open_store"]

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_SMALL_OBJECT = 256 * 1024  # records and claims are a few hundred bytes; refuse to read a huge one
READ_CHUNK = 1024 * 1024
PART_SIZE = 5 * 1024 * 1024  # multipart part size (S3's minimum); memory per upload is about 2 parts
UPLOAD_CONCURRENCY = 2
CREATE_TRIES = 3  # a create answered 409 while nothing is there (a conflicting write in flight) is tried again
# A refusal obstore reports as a generic error (a LIST answered 403 is not mapped to PermissionDenied).
_DENIED = re.compile(r"status code: 40[13]\b|<Code>(AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch)</Code>")
_TRANSIENT = re.compile(r"status code: (5\d\d|429)|HTTP error|SlowDown|InternalError|timed out|connection", re.I)
_XML_CODE = re.compile(r"<Code>([^<]{1,80})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{1,200})</Message>")
_STATUS = re.compile(r"status code: (\d{3})")
# No credentials in the environment: the AWS client then asks the instance metadata service (or
# an ECS/web-identity source), which is not there off EC2.
_METADATA = re.compile(r"169\.254\.169\.254|169\.254\.170\.2|fd00:ec2::254|/latest/api/token|credential", re.I)
_UNREACHABLE = re.compile(
    r"error sending request|connection refused|dns error|failed to lookup|timed out|tcp connect", re.I
)
# What a store's own error code means, and the variable that fixes it.
_CODES = {
    "NoSuchBucket": "the bucket {bucket!r} does not exist{at}: check the bucket in KLING_RENDER_REMOTE "
    "(s3://BUCKET/prefix){endpoint_hint}",
    "InvalidAccessKeyId": "the store does not know the key id in AWS_ACCESS_KEY_ID{at}: check AWS_ACCESS_KEY_ID "
    "and AWS_SECRET_ACCESS_KEY{endpoint_hint}",
    "SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY does not match AWS_ACCESS_KEY_ID (the signature was refused): "
    "check both",
    "ExpiredToken": "the session token has expired: renew AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
    "AWS_SESSION_TOKEN",
    "InvalidToken": "AWS_SESSION_TOKEN was refused: renew it, or unset it for long-term keys",
    "AccessDenied": "access denied: the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) may not do this "
    "on the bucket (reading needs s3:GetObject and s3:ListBucket; rendering also s3:PutObject)",
    "AuthorizationHeaderMalformed": "the request was refused for its region: set AWS_REGION to the bucket's region",
    "PermanentRedirect": "the bucket is in another region: set AWS_REGION to the bucket's region",
}
# A request that missed its total deadline (reqwest's Timeout, in obstore's debug dump).
_TIMED_OUT = re.compile(r"kind: Timeout|TimedOut|operation timed out|deadline has elapsed", re.I)
REQUEST_TIMEOUT = 60.0  # seconds for one record, claim, lookup or listing page, connection included
TRANSFER_TIMEOUT = 1800.0  # seconds for one clip upload part or download
TRANSFER_READ_TIMEOUT = 60.0  # seconds a clip's body may send nothing
CONNECT_TIMEOUT = 10.0
BACKSTOP = 5.0  # seconds past obstore's own deadline before asyncio gives up on the call
CLOCK_PATH = "clock"  # a scratch object: its Last-Modified, just after a write, is the store's time


@dataclass(frozen=True)
class Deadlines:
    """The total deadline of one request: a small object, or a clip's transfer."""

    request: float = REQUEST_TIMEOUT
    transfer: float = TRANSFER_TIMEOUT

    @classmethod
    def from_env(cls) -> Deadlines:
        return cls(env.remote_timeout() or REQUEST_TIMEOUT, env.remote_transfer_timeout() or TRANSFER_TIMEOUT)


@dataclass(frozen=True)
class Stored:
    """A small object as read: its bytes, its ETag (for a later compare-and-swap) and its
    Last-Modified in the store's time (epoch seconds)."""

    data: bytes
    etag: str | None
    modified: float | None = None


@dataclass(frozen=True)
class Meta:
    size: int
    etag: str | None
    modified: float | None = None


@dataclass(frozen=True)
class Written:
    """The conditional write took effect; ``etag`` identifies the new version."""

    etag: str | None


@dataclass(frozen=True)
class Lost:
    """The conditional write lost a race (412/409): ``current`` is what is there now, if anything."""

    current: Stored | None


def default_policy() -> RetryPolicy:
    return RetryPolicy(attempts=5, base_delay=0.5, max_delay=10.0, max_total=60.0, retry_on=(RemoteTransientError,))


class RemoteStore:
    """One remote: conditional small-object writes, streamed uploads and verified downloads."""

    def __init__(
        self,
        store: ObjectStore,
        url: RemoteURL,
        *,
        secrets: Iterable[str] = (),
        policy: RetryPolicy | None = None,
        cas_lock: Path | None = None,
        transfers: ObjectStore | None = None,
        deadlines: Deadlines | None = None,
        endpoint: str | None = None,
        has_keys: bool = False,
    ) -> None:
        self._store = store
        self._transfers = transfers or store  # the client with the longer deadline, for clips
        self.url = url
        self.endpoint = endpoint  # AWS_ENDPOINT_URL, named in messages (None: the provider's own)
        self.has_keys = has_keys  # credentials came from the AWS variables
        self._secrets = tuple(s for s in secrets if len(s) >= 4)
        self.policy = policy or default_policy()
        self._cas_lock = cas_lock  # file:// only: the lock that makes read-compare-write atomic
        self.deadlines = deadlines or Deadlines()
        self._offset: float | None = None  # the store's clock minus this machine's, once measured
        self._clock_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def __repr__(self) -> str:
        return f"RemoteStore({str(self.url)!r})"

    # -- small objects (records, claims) -----------------------------------------------------

    async def read(self, path: str) -> Stored | None:
        """The object at ``path``, or None when there is none."""
        return await self._call(f"reading {path}", lambda: self._read(path))

    async def head(self, path: str) -> Meta | None:
        return await self._call(f"looking up {path}", lambda: self._head(path))

    async def write(self, path: str, data: bytes, *, expect_etag: str | None = None) -> Written | Lost:
        """Create ``path`` only if absent (``expect_etag`` None: If-None-Match: *), or replace it only
        if it is still the version ``expect_etag`` (If-Match). A lost race comes back as Lost.
        Known secrets are masked out of ``data`` first (records are made masked; this is the door)."""
        data = mask_bytes(data)
        for _ in range(CREATE_TRIES):
            outcome = await self._call(f"writing {path}", lambda: self._put(path, data, expect_etag))
            if isinstance(outcome, Written):
                return outcome
            current = await self.read(path)
            if current is not None and current.data == data:
                return Written(current.etag)  # our own earlier try landed; its answer was lost
            if current is not None or expect_etag is not None:
                return Lost(current)
            # Create answered 409 with nothing there: a conflicting write was in flight. Try again.
            await self.policy.sleep(self.policy.backoff(1))
        return Lost(None)

    # -- large objects (clips) ---------------------------------------------------------------

    async def upload(self, path: str, src: Path) -> None:
        """Write the file ``src`` to ``path``, streamed in parts (memory stays flat), replacing
        whatever is there: for content-addressed paths only, where any writer writes the same bytes."""
        await self._call(f"uploading {path}", lambda: self._upload(path, src), transfer=True)

    async def download(self, path: str, dest: Path, *, size: int, sha256: str) -> None:
        """Stream ``path`` into ``dest`` and check its size and sha256; RemoteIntegrityError (and
        ``dest`` removed) when they differ or the object is missing."""
        try:
            await self._call(f"downloading {path}", lambda: self._download(path, dest, size, sha256), transfer=True)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    async def list_paths(self, prefix: str) -> list[str]:
        """Paths of the objects under ``prefix`` (relative to the remote's own prefix)."""
        return [meta.path for meta in await self.list_meta(prefix)]

    async def list_meta(self, prefix: str) -> list[Listed]:
        """The objects under ``prefix`` with their size, ETag and Last-Modified (one listing)."""
        return await self._call(f"listing {prefix}", lambda: self._list(prefix))

    async def now(self) -> float:
        """The store's current time (epoch seconds of its clock), to judge an object's age by: the
        Last-Modified of a scratch object written just now, measured once per store."""
        loop = asyncio.get_running_loop()
        if self._clock_lock is None or self._clock_lock[0] is not loop:  # a lock belongs to one loop
            self._clock_lock = (loop, asyncio.Lock())
        async with self._clock_lock[1]:  # one measurement, however many claims are judged at once
            if self._offset is None:
                before = time.time()
                await self._call("writing its clock object", lambda: self._put_clock())
                meta = await self.head(CLOCK_PATH)
                after = time.time()
                if meta is None or meta.modified is None:
                    raise RemoteError(f"the remote {self.url} did not report when {CLOCK_PATH} was written")
                self._offset = meta.modified - (before + after) / 2
        return time.time() + self._offset

    # -- the blocking calls (worker threads) -------------------------------------------------

    def _read(self, path: str) -> Stored | None:
        import obstore

        try:
            result = obstore.get(self._store, path)
        except FileNotFoundError:
            return None
        meta = result.meta
        if meta["size"] > MAX_SMALL_OBJECT:
            raise RemoteIntegrityError(
                f"{path} on the remote {self.url} is {meta['size']} bytes, far more than a record; not read"
            )
        return Stored(bytes(result.bytes()), meta["e_tag"], _epoch(meta.get("last_modified")))

    def _head(self, path: str) -> Meta | None:
        import obstore

        try:
            meta = obstore.head(self._store, path)
        except FileNotFoundError:
            return None
        return Meta(meta["size"], meta["e_tag"], _epoch(meta.get("last_modified")))

    def _put_clock(self) -> None:
        import obstore

        obstore.put(self._store, CLOCK_PATH, b"the Last-Modified of this object tells the store's time\n")

    def _put(self, path: str, data: bytes, expect_etag: str | None) -> Written | Lost:
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotModifiedError, PreconditionError

        try:
            if expect_etag is None:
                result = obstore.put(self._store, path, data, mode="create")
            elif self._cas_lock is not None:
                return self._local_cas(path, data, expect_etag)
            else:
                result = obstore.put(self._store, path, data, mode={"e_tag": expect_etag})
        except (AlreadyExistsError, PreconditionError, NotModifiedError):
            return Lost(None)
        return Written(result["e_tag"])

    def _local_cas(self, path: str, data: bytes, expect_etag: str) -> Written | Lost:
        import obstore

        assert self._cas_lock is not None
        with filelock.FileLock(str(self._cas_lock), timeout=60):
            try:
                meta = obstore.head(self._store, path)
            except FileNotFoundError:
                return Lost(None)
            if meta["e_tag"] != expect_etag:
                return Lost(None)
            result = obstore.put(self._store, path, data, mode="overwrite")  # temp file + rename: atomic
        return Written(result["e_tag"])

    def _upload(self, path: str, src: Path) -> None:
        import obstore

        obstore.put(self._transfers, path, src, chunk_size=PART_SIZE, max_concurrency=UPLOAD_CONCURRENCY)

    def _download(self, path: str, dest: Path, size: int, sha256: str) -> None:
        import obstore

        where = f"{path} on the remote {self.url}"
        try:
            result = obstore.get(self._transfers, path)
        except FileNotFoundError:
            raise RemoteIntegrityError(f"{where} is missing, though a record points at it") from None
        if result.meta["size"] != size:
            raise RemoteIntegrityError(f"{where} is {result.meta['size']} bytes, its record says {size}; not used")
        digest = hashlib.sha256()
        received = 0
        with dest.open("wb") as fh:
            for chunk in result.stream(min_chunk_size=READ_CHUNK):
                received += len(chunk)
                if received > size:
                    raise RemoteIntegrityError(f"{where} sent more than the {size} bytes its record says; not used")
                digest.update(chunk)
                fh.write(chunk)
        if received != size or digest.hexdigest() != sha256:
            raise RemoteIntegrityError(
                f"{where} does not match its record (sha256 {digest.hexdigest()[:12]}…, expected {sha256[:12]}…); "
                "not used. Someone changed or damaged it: delete it and its record so the clip is uploaded again"
            )

    def _list(self, prefix: str) -> list[Listed]:
        import obstore

        try:
            return [
                Listed(meta["path"], meta["size"], meta["e_tag"], _epoch(meta.get("last_modified")))
                for batch in obstore.list(self._store, prefix)
                for meta in batch
            ]
        except FileNotFoundError:  # file:// with no such directory yet
            return []

    # -- errors, deadlines and retries -------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], T], *, transfer: bool = False) -> T:
        seconds = self.deadlines.transfer if transfer else self.deadlines.request
        where = f"{what} on the remote {self.url}"

        async def once() -> T:
            try:
                return await asyncio.wait_for(asyncio.to_thread(self._mapped, what, fn, seconds), seconds + BACKSTOP)
            except TimeoutError:  # obstore's own deadline did not end it: give up on the thread
                raise RemoteError(self._no_answer(f"{what} on the remote {self.url}", seconds)) from None

        return await self.policy.call(once, what=where)

    def _mapped(self, what: str, fn: Callable[[], T], seconds: float) -> T:
        try:
            return fn()
        except KlingRenderError:
            raise
        except Exception as exc:
            raise self._map_error(exc, what, seconds) from None

    def _map_error(self, exc: Exception, what: str, seconds: float = REQUEST_TIMEOUT) -> RemoteError:
        """One line: what failed, what is wrong in the user's words, and the variable that fixes it;
        never the store's XML, its request URL or the metadata service's noise."""
        from obstore.exceptions import GenericError, PermissionDeniedError, UnauthenticatedError

        detail = self.redact(_first_lines(str(exc)) or type(exc).__name__)
        where = f"{what} on the remote {self.url}"
        if isinstance(exc, TimeoutError) or _TIMED_OUT.search(str(exc)):
            return RemoteError(self._no_answer(where, seconds))  # not retried: it would hold the command again
        if isinstance(exc, filelock.Timeout):
            return RemoteError(f"{where} failed: the lock {exc.lock_file} stayed held for 60 s")
        if "builder error" in detail:  # obstore refuses the URL itself (e.g. http not allowed)
            return RemoteError(f"{where} failed: the endpoint URL is not usable; check AWS_ENDPOINT_URL")
        explained = self._explain(detail, denied=isinstance(exc, PermissionDeniedError | UnauthenticatedError))
        if explained is not None and explained.startswith("access denied: "):
            return RemoteError(f"{where} was refused (access denied): {explained.removeprefix('access denied: ')}")
        if explained is not None:
            return RemoteError(f"{where} failed: {explained}")
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or _DENIED.search(detail):
            return RemoteError(
                f"{where} was refused (access denied{_code_text(detail)}): check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) and what they may do on the bucket"
            )
        if isinstance(exc, GenericError | TimeoutError | ConnectionError) and _TRANSIENT.search(detail):
            if _UNREACHABLE.search(detail):
                return RemoteTransientError(f"{where} failed: {self._unreachable()}")
            return RemoteTransientError(f"{where} failed: {_short(detail)}")
        return RemoteError(f"{where} failed: {_short(detail)}")

    def _explain(self, detail: str, *, denied: bool = False) -> str | None:
        """The cause of an S3 answer in words, from its error code, or from the metadata service
        being asked (no credentials); None when the detail says neither."""
        if self.url.scheme != "s3":
            return None
        denied = denied or _DENIED.search(detail) is not None
        # Without keys the client asks the metadata service, or sends the request unsigned: a
        # refusal then means "no credentials", whatever the store calls it.
        if not self.has_keys and (_METADATA.search(detail) or denied):
            return (
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for "
                "temporary ones); none are set and no instance role answered"
            )
        code = _XML_CODE.search(detail)
        template = _CODES.get(code.group(1)) if code else None
        if template is None:
            return None
        at = f" at {self.endpoint}" if self.endpoint else ""
        endpoint_hint = " and AWS_ENDPOINT_URL" if self.endpoint else ""
        return template.format(bucket=self.url.bucket, at=at, endpoint_hint=endpoint_hint)

    def _no_answer(self, where: str, seconds: float) -> str:
        """A request that missed its total deadline (an endpoint that accepts and never answers)."""
        if self.endpoint:
            return f"{where} got no complete answer within {seconds:g} s from {self.endpoint}: check AWS_ENDPOINT_URL"
        return f"{where} got no complete answer within {seconds:g} s: check the network"

    def _unreachable(self) -> str:
        if self.endpoint:
            return f"cannot reach {self.endpoint}: check AWS_ENDPOINT_URL (and the network)"
        return "cannot reach the storage service: check the network, AWS_REGION, or set AWS_ENDPOINT_URL"

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return mask(text)


@dataclass(frozen=True)
class Listed:
    """One object of a listing."""

    path: str
    size: int
    etag: str | None
    modified: float | None


def _epoch(value: Any) -> float | None:
    """A Last-Modified as obstore gives it (an aware datetime) in epoch seconds. A whole second (S3
    sends Last-Modified in whole seconds, cut down) stands for the middle of that second."""
    if not isinstance(value, datetime):
        return None
    stamp = value.timestamp()
    return stamp + 0.5 if value.microsecond == 0 else stamp



def _code_text(detail: str) -> str:
    code = _XML_CODE.search(detail)
    return f": {code.group(1)}" if code else ""


def _short(detail: str) -> str:
    """A store's answer without its request line and XML: ``404 Not Found: NoSuchKey (The ...)``."""
    code, message, status = _XML_CODE.search(detail), _XML_MESSAGE.search(detail), _STATUS.search(detail)
    if code is None and message is None:
        return re.sub(r"Error performing \w+ \S+ in [\d.]+\S*s - ", "", detail)
    parts = [f"status {status.group(1)}" if status else "", code.group(1) if code else ""]
    text = " ".join(p for p in parts if p)
    return f"{text} ({message.group(1)})" if message else text


def _first_lines(text: str, limit: int = 400) -> str:
    """obstore's message without its multi-line "Debug source" dump, on one line."""
    head = text.split("\n\nDebug source", 1)[0]
    one = " ".join(line.strip() for line in head.splitlines() if line.strip())
    return one if len(one) <= limit else one[:limit] + "…"


def open_store(
    url: RemoteURL,
    s3: S3Settings | None = None,
    *,
    policy: RetryPolicy | None = None,
    deadlines: Deadlines | None = None,
) -> RemoteStore:
    """A RemoteStore for ``url``; ``s3`` says how to reach an S3-compatible endpoint. Two clients of
    one store: one for small objects, one with the longer deadline of clip transfers."""
    from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

    limits = deadlines or Deadlines.from_env()
    connect = timedelta(seconds=min(CONNECT_TIMEOUT, limits.request))
    client: ClientConfig = {"connect_timeout": connect, "timeout": timedelta(seconds=limits.request)}
    bulk: ClientConfig = {
        "connect_timeout": connect,
        "timeout": timedelta(seconds=limits.transfer),
        "read_timeout": timedelta(seconds=min(TRANSFER_READ_TIMEOUT, limits.transfer)),
    }
    no_retry: RetryConfig = {"max_retries": 0, "retry_timeout": timedelta(seconds=1)}
    prefix = url.prefix or None
    store: ObjectStore
    transfers: ObjectStore
    if url.scheme == "file":
        assert url.root is not None
        try:
            url.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RemoteError(f"the remote {url} cannot be created: {exc.strerror or exc}") from None
        store = LocalStore(url.root)
        return RemoteStore(
            store, url, policy=policy, cas_lock=url.root / ".kling-render-cas.lock", deadlines=limits
        )
    if url.scheme == "s3":
        settings = s3 or S3Settings()
        config: S3Config = {"conditional_put": "etag"}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        if settings.region:
            config["region"] = settings.region
        if settings.access_key_id and settings.secret_access_key:
            config["access_key_id"] = settings.access_key_id
            config["secret_access_key"] = settings.secret_access_key
            if settings.session_token:
                config["session_token"] = settings.session_token
        # allow_http is always given: the explicit value overrides an AWS_ALLOW_HTTP in the environment.
        client["allow_http"] = bulk["allow_http"] = settings.allow_http
        store = S3Store(url.bucket, prefix=prefix, config=config, client_options=client, retry_config=no_retry)
        transfers = S3Store(url.bucket, prefix=prefix, config=config, client_options=bulk, retry_config=no_retry)
        return RemoteStore(
            store, url, secrets=settings.secrets, policy=policy, transfers=transfers, deadlines=limits,
            endpoint=settings.endpoint, has_keys=bool(settings.access_key_id and settings.secret_access_key),
        )  # fmt: skip
    elif url.scheme == "gs":
        client["allow_http"] = bulk["allow_http"] = False
        store = GCSStore(url.bucket, prefix=prefix, client_options=client, retry_config=no_retry)
        transfers = GCSStore(url.bucket, prefix=prefix, client_options=bulk, retry_config=no_retry)
    else:
        client["allow_http"] = bulk["allow_http"] = False
        store = AzureStore(url.bucket, prefix=prefix, client_options=client, retry_config=no_retry)
        transfers = AzureStore(url.bucket, prefix=prefix, client_options=bulk, retry_config=no_retry)
    return RemoteStore(store, url, policy=policy, transfers=transfers, deadlines=limits)
