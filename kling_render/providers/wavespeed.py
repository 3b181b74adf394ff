"""The WaveSpeed provider (SPEC §5): uploads local media, submits, polls and downloads over httpx.

Every httpx failure is mapped to a kling_render error here, at the seam. The one rule
that shapes the submit path: a POST that may have reached the server is never sent
again (SubmitUncertainError); only refusals (429/503) and connections that certainly
never carried the request are retried. The API key goes only to the API's own
endpoints (never to upload or output URLs) and never into a message: every text built
from a server answer or an httpx error passes through ``_redact``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx

from kling_render import env
from kling_render.errors import (
    AuthError,
    DownloadError,
    OutputGoneError,
    ProviderError,
    SubmitRefusedError,
    SubmitUncertainError,
    TaskGoneError,
    TransientError,
)
from kling_render.fsutil import CHUNK, atomic_write_json, sha256_file
from kling_render.jobs import Job, MediaRef, TaskResult
from kling_render.providers.base import MAX_DOWNLOAD_BYTES, Provider
from kling_render.retry import RetryPolicy, parse_retry_after

UPLOAD_MAX_AGE = 6 * 24 * 3600.0  # WaveSpeed keeps uploads 7 days; re-upload a day early
UPLOADS_FILE = "uploads.json"
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=60.0)
_MODEL_PREFIX = "kwaivgi/"
# Connection failures where the request certainly never left this process.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class WaveSpeedProvider(Provider):
    """Talks to ``{base}/api/v3``; one AsyncClient for the API, uploads and downloads."""

    name = "wavespeed"
    default_concurrency = 3
    output_retention = 7 * 24 * 3600.0  # SPEC §5: outputs (and uploads) expire after 7 days

    def __init__(
        self,
        api_key: str,
        base_url: str,
        cache_dir: Path,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        key = api_key.strip()
        if not key or not key.isprintable() or any(c.isspace() for c in key):
            # Said without the value: httpx would echo an invalid header value in its error.
            raise AuthError("WAVESPEED_API_KEY is empty or contains whitespace/control characters")
        self._api_key = key
        self.base_url = base_url.rstrip("/")
        self.cache_dir = cache_dir
        self.retry = retry or RetryPolicy()
        self.max_download_bytes = max_download_bytes
        self._wall_clock = wall_clock
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        self._upload_locks: dict[str, asyncio.Lock] = {}
        self._record_lock = asyncio.Lock()

    @classmethod
    def from_env(cls, *, cache_dir: Path) -> WaveSpeedProvider:
        key = env.wavespeed_api_key()
        if not key:
            raise AuthError("WAVESPEED_API_KEY is not set; set it, or render offline with --provider local")
        return cls(key, env.wavespeed_base_url(), cache_dir)

    def __repr__(self) -> str:
        return f"WaveSpeedProvider(base_url={self.base_url!r}, api_key='***')"

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- submit -------------------------------------------------------------------------

    async def submit(self, job: Job) -> str:
        try:
            urls = {ref: await self._media_url(ref) for ref in job.media()}
        except TransientError as exc:  # no POST was made yet, so nothing was created
            raise SubmitRefusedError(f"shot {job.shot_id!r}: {exc}", exc.retry_after) from exc
        body = {name: _wire(value, urls) for name, value in job.params.items()}
        model = job.model.removeprefix(_MODEL_PREFIX)
        url = f"{self.base_url}/api/v3/{job.wire_model}"
        what = f"submit of shot {job.shot_id!r} ({model})"
        response = await self.retry.call(lambda: self._post_submit(url, body, what), what=what)
        task_id = _data(response).get("id")
        if not isinstance(task_id, str) or not task_id:
            raise SubmitUncertainError(f"{what}: the answer has no task id; a task may exist")
        return task_id

    async def _post_submit(self, url: str, body: Mapping[str, Any], what: str) -> httpx.Response:
        """One POST. Only a refusal or an unsent request comes back as a retryable error."""
        try:
            response = await self._client.post(url, json=body, headers=self._auth())
        except _NOT_SENT as exc:  # nothing reached the server: as safe to repeat as a refusal
            raise SubmitRefusedError(self._redact(f"{what}: cannot connect ({_describe(exc)})")) from exc
        except httpx.HTTPError as exc:
            raise SubmitUncertainError(
                self._redact(f"{what}: no answer ({_describe(exc)}); a paid task may exist")
            ) from exc
        status = response.status_code
        if status in (429, 503):
            raise SubmitRefusedError(
                self._redact(f"{what}: refused ({status}) {self._message(response)}"),
                retry_after=self._retry_after(response),
            )
        if status >= 500:
            raise SubmitUncertainError(
                self._redact(f"{what}: server error ({status}) {self._message(response)}")
                + "; a paid task may exist"
            )
        if status >= 300:
            self._raise_client_error(response, what)
        try:
            response.json()
        except ValueError as exc:
            raise SubmitUncertainError(f"{what}: unreadable answer ({status}); a task may exist") from exc
        return response

    # -- uploads ------------------------------------------------------------------------

    async def _media_url(self, ref: MediaRef) -> str:
        if ref.path is None:
            assert ref.url is not None
            return ref.url
        path = ref.path
        try:
            digest: str = ref.sha256 if ref.sha256 else await asyncio.to_thread(sha256_file, path)
        except OSError as exc:
            raise ProviderError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
        lock = self._upload_locks.setdefault(digest, asyncio.Lock())
        async with lock:  # one upload per content, however many shots share it
            cached = self._cached_upload(digest)
            if cached is not None:
                return cached
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise ProviderError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
            actual = await asyncio.to_thread(_sha256_bytes, data)
            if actual != digest:
                raise ProviderError(f"{path.name} changed since it was planned; run the command again")
            download_url = await self.retry.call(
                lambda: self._upload(path.name, data), what=f"upload of {path.name}"
            )
            await self._record_upload(digest, download_url)
            return download_url

    async def _upload(self, filename: str, data: bytes) -> str:
        what = f"upload of {filename}"
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        answer = await self._api_call(
            "POST",
            f"{self.base_url}/api/v3/media/uploads",
            what,
            json={"filename": filename, "size": len(data), "content_type": content_type},
        )
        payload = _data(answer)
        upload = payload.get("upload")
        download_url = payload.get("download_url")
        if not isinstance(upload, dict) or not isinstance(download_url, str) or not _is_http(download_url):
            raise ProviderError(f"{what}: unexpected answer (no upload target or download_url)")
        method = str(upload.get("method", "PUT")).upper()
        target = upload.get("url")
        headers = upload.get("headers") or {}
        if method != "PUT" or not isinstance(target, str) or not _is_http(target):
            raise ProviderError(f"{what}: unexpected upload target ({method})")
        if not isinstance(headers, dict):
            raise ProviderError(f"{what}: upload headers are not an object")
        # Only the announced headers: the upload URL is signed and gets no Authorization.
        put_headers = {str(k): str(v) for k, v in headers.items()}
        try:
            response = await self._client.put(target, content=data, headers=put_headers)
        except httpx.HTTPError as exc:  # a PUT of the same bytes is idempotent
            raise TransientError(self._redact(f"{what}: {_describe(exc)}")) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientError(f"{what}: storage answered {status}", self._retry_after(response))
        if status >= 300:
            detail = self._redact(_snippet(response))
            raise ProviderError(f"{what}: storage refused the bytes ({status}) {detail}")
        return download_url

    def _load_uploads(self) -> dict[str, Any]:
        try:
            value = json.loads((self.cache_dir / UPLOADS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or damaged: it is only a cache, uploads are redone
        return value if isinstance(value, dict) else {}

    def _cached_upload(self, digest: str) -> str | None:
        entry = self._load_uploads().get(digest)
        if not isinstance(entry, dict):
            return None
        url, stamp = entry.get("download_url"), entry.get("uploaded_at")
        if not isinstance(url, str) or not isinstance(stamp, str):
            return None
        try:
            uploaded = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            return None
        age = self._wall_clock() - uploaded
        return url if 0 <= age <= UPLOAD_MAX_AGE else None

    async def _record_upload(self, digest: str, url: str) -> None:
        stamp = datetime.fromtimestamp(self._wall_clock(), UTC).isoformat()
        async with self._record_lock:  # re-read and merge: other shots record theirs too
            records = self._load_uploads()
            records[digest] = {"download_url": url, "uploaded_at": stamp}
            try:
                await asyncio.to_thread(atomic_write_json, self.cache_dir / UPLOADS_FILE, records)
            except OSError as exc:  # before the POST: the shot fails, it is not ``unknown``
                raise ProviderError(f"cannot record the upload in {UPLOADS_FILE}: {exc.strerror or exc}") from None

    # -- poll ---------------------------------------------------------------------------

    async def poll(self, task_id: str) -> TaskResult:
        what = f"poll of task {task_id}"
        url = f"{self.base_url}/api/v3/predictions/{task_id}/result"
        answer = await self.retry.call(lambda: self._api_call("GET", url, what, not_found=TaskGoneError), what=what)
        data = _data(answer)
        status = str(data.get("status") or "").lower()
        if not status:
            raise TransientError(f"{what}: the answer has no status")
        error = data.get("error") or None
        outputs = data.get("outputs") or []
        output = outputs[0] if isinstance(outputs, list) and outputs else None
        if isinstance(output, dict):  # tolerate [{"url": ...}]
            output = output.get("url")
        if status == "completed" and not isinstance(output, str):
            return TaskResult("failed", error="completed without an output URL")
        return TaskResult(
            status,
            output_url=output if isinstance(output, str) else None,
            error=self._redact(str(error)) if error else None,
        )

    async def _api_call(
        self, method: str, url: str, what: str, *, not_found: type[ProviderError] = ProviderError, **kwargs: Any
    ) -> httpx.Response:
        """One idempotent call to the API (poll, upload slot): 429/5xx/dropped → TransientError."""
        try:
            response = await self._client.request(method, url, headers=self._auth(), **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(self._redact(f"{what}: timed out ({_describe(exc)})")) from exc
        except httpx.TransportError as exc:
            raise TransientError(self._redact(f"{what}: connection failed ({_describe(exc)})")) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(self._redact(f"{what}: {_describe(exc)}")) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientError(
                self._redact(f"{what}: server answered {status} {self._message(response)}"),
                retry_after=self._retry_after(response),
            )
        if status >= 300:
            self._raise_client_error(response, what, not_found)
        try:
            response.json()
        except ValueError as exc:
            raise TransientError(f"{what}: unreadable answer ({status})") from exc
        return response

    # -- pricing ------------------------------------------------------------------------

    async def unit_price(self, model_path: str, inputs: Mapping[str, Any]) -> float:
        """WaveSpeed's price in USD of one run of ``model_path`` with ``inputs`` (free: nothing runs).

        ``POST {base}/api/v3/model/pricing`` with ``{model_id, inputs}``; the answer's
        ``data.unit_price`` (WaveSpeed's Pricing API page). Used by ``models --check-prices``.
        """
        what = f"price of {model_path}"
        url = f"{self.base_url}/api/v3/model/pricing"
        body = {"model_id": model_path, "inputs": dict(inputs)}
        answer = await self.retry.call(lambda: self._api_call("POST", url, what, json=body), what=what)
        envelope = answer.json()
        code = envelope.get("code") if isinstance(envelope, dict) else None
        if code not in (None, 200):
            raise ProviderError(f"{what}: rejected ({code}): {self._message(answer)}")
        value = _data(answer).get("unit_price")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProviderError(f"{what}: the answer has no unit_price")
        return float(value)

    # -- download -----------------------------------------------------------------------

    async def download(self, url: str, dest: Path) -> None:
        if not _is_http(url):
            raise DownloadError(f"refusing a {_scheme(url)!r} output URL: only http(s) is downloaded")
        try:
            await self.retry.call(lambda: self._download_once(url, dest), what="download")
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()  # no partial output behind
            if isinstance(exc, TransientError):
                raise DownloadError(f"download failed after retries: {exc}") from exc
            raise

    async def _download_once(self, url: str, dest: Path) -> None:
        current = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            async with contextlib.AsyncExitStack() as stack:
                try:
                    response = await stack.enter_async_context(
                        self._client.stream("GET", current, headers={"Accept-Encoding": "identity"})
                    )
                except httpx.TransportError as exc:
                    raise TransientError(f"download: {_describe(exc)}") from exc
                except httpx.HTTPError as exc:
                    raise DownloadError(f"download: {_describe(exc)}") from exc
                if response.is_redirect:
                    current = _redirect_target(response)
                    continue
                await self._save(response, dest)
                return
        raise DownloadError(f"download: more than {MAX_REDIRECTS} redirects")

    async def _save(self, response: httpx.Response, dest: Path) -> None:
        status = response.status_code
        if status in (404, 410):
            raise OutputGoneError(f"output URL expired or gone ({status})")
        if status == 429 or status >= 500:
            raise TransientError(f"download: server answered {status}", self._retry_after(response))
        if status != 200:
            raise DownloadError(f"download refused ({status})")
        declared = _content_length(response)
        if declared is not None and declared > self.max_download_bytes:
            raise DownloadError(f"output is {declared} bytes, over the {self.max_download_bytes}-byte cap")
        received = 0
        try:
            with dest.open("wb") as fh:
                async for chunk in response.aiter_raw(CHUNK):
                    received += len(chunk)
                    if received > self.max_download_bytes:
                        raise DownloadError(f"output exceeds the {self.max_download_bytes}-byte cap")
                    fh.write(chunk)
        except httpx.HTTPError as exc:  # dropped or truncated mid-body: fetch again
            raise TransientError(f"download interrupted after {received} bytes ({_describe(exc)})") from exc
        except OSError as exc:  # disk full, file too large: the task stays, the next run fetches again
            raise DownloadError(f"cannot write the download to {dest.parent}: {exc.strerror or exc}") from None
        if declared is not None and received != declared:
            raise TransientError(f"download truncated: {received} of {declared} bytes")
        if received == 0:
            raise DownloadError("output is empty (0 bytes)")

    # -- helpers ------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _retry_after(self, response: httpx.Response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"), now=self._wall_clock())

    def _message(self, response: httpx.Response) -> str:
        """The server's own words about an error, shortened and without the key."""
        try:
            body = response.json()
        except ValueError:
            return self._redact(_snippet(response))
        if isinstance(body, dict):
            for candidate in (body.get("message"), body.get("error"), _data(response).get("error")):
                if isinstance(candidate, str) and candidate:
                    return self._redact(candidate[:300])
        return self._redact(_snippet(response))

    def _raise_client_error(
        self, response: httpx.Response, what: str, not_found: type[ProviderError] = ProviderError
    ) -> NoReturn:
        status = response.status_code
        message = self._message(response)
        if status in (401, 403):
            raise AuthError(f"{what}: the API key was rejected ({status}): {message}")
        if status == 404:
            raise not_found(f"{what}: not found (404): {message}")
        raise ProviderError(f"{what}: rejected ({status}): {message}")


def _wire(value: Any, urls: Mapping[MediaRef, str]) -> Any:
    """A param value as sent: every MediaRef replaced by its URL, also inside lists and objects."""
    if isinstance(value, MediaRef):
        return urls[value]
    if isinstance(value, list | tuple):
        return [_wire(v, urls) for v in value]
    if isinstance(value, Mapping):
        return {k: _wire(v, urls) for k, v in value.items()}
    return value


def _data(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, dict) else {}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].lower() if ":" in url else ""


def _is_http(url: str) -> bool:
    return _scheme(url) in ("http", "https") and url.lower().startswith(("http://", "https://"))


def _redirect_target(response: httpx.Response) -> httpx.URL:
    location = response.headers.get("Location", "")
    try:
        target = response.url.join(location)
    except httpx.InvalidURL as exc:
        raise DownloadError("download: invalid redirect location") from exc
    if target.scheme not in ("http", "https"):
        raise DownloadError(f"download: refusing a redirect to a {target.scheme!r} URL (only http(s))")
    return target


def _content_length(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _snippet(response: httpx.Response) -> str:
    try:
        text = response.text
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""
    return " ".join(text.split())[:200]


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
