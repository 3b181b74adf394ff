"""The fal provider (SPEC §5): uploads to fal's storage, submits to its queue, follows, lists, prices.

fal's queue: ``POST {queue}/{endpoint}`` answers a ``request_id`` with the ``status_url``,
``response_url`` and ``cancel_url`` to follow it by (they name only owner and app: they are used
as given, and kept beside the clip cache so a later run uses them too). The status answers 202
while ``IN_QUEUE``/``IN_PROGRESS``, then ``COMPLETED``, which a failed request is too (with an
``error``); the result comes from ``response_url``. What a submit answer means:

- 2xx with a usable request id: accepted (the id is returned at once: the run records it first);
- 429, or a request that certainly never left this machine: nothing created, retried, bounded;
- 401/403/402, or a message about the balance: the account cannot run requests (AccountError);
- any other 4xx: rejected (SubmitRejectedError, fal's ``detail`` shown): no request exists;
- anything else (5xx, a timeout, a dropped connection, no usable id): a request may exist
  (SubmitUncertainError). The POST is never sent again: fal has no idempotency key, so the run
  settles it through the requests list (``list_tasks``).

``x-fal-no-retry`` is not sent: fal's own retries of a request (on 503, 504, 429, connection
errors) happen inside that one request id and are never charged, so they cost nothing and save
a replacement request (and a place in the key's cap of three paid tasks). Every httpx failure
is mapped to a kling_render error here; the key goes only to fal's own hosts (the queue, its
URLs, the platform and storage APIs), never to upload or output URLs, and never into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from kling_render import env
from kling_render.errors import (
    AuthError,
    ProviderError,
    SubmitRefusedError,
    SubmitRejectedError,
    SubmitUncertainError,
    TaskGoneError,
    TransientError,
)
from kling_render.fsutil import atomic_write_json
from kling_render.jobs import Job, ListedTask, MediaRef, TaskResult, shown_id, valid_task_id
from kling_render.masking import register as register_secret
from kling_render.money import Reservation
from kling_render.providers import transport as net
from kling_render.providers.base import Provider
from kling_render.providers.download import describe, is_http
from kling_render.providers.download import download as fetch_output
from kling_render.providers.fal.answers import (
    QUEUE_STATES,
    FalReply,
    Handle,
    app_of,
    failure,
    handle,
    iso,
    listed_task,
    raise_account,
    read_reply,
    video_url,
)
from kling_render.providers.submit import post_paid
from kling_render.providers.transport import Limits, Redactor, TooLarge, Transfer, TransferError
from kling_render.providers.uploads import UploadRecords
from kling_render.retry import RetryPolicy, parse_retry_after

UPLOAD_MAX_AGE = 6 * 24 * 3600.0  # fal's CDN keeps files at least 7 days: re-upload a day early
UPLOADS_FILE = "fal-uploads.json"
REQUESTS_FILE = "fal-requests.json"  # request id -> endpoint and the URLs fal gave for it
REQUEST_RECORD_AGE = 30 * 24 * 3600.0  # records older than this are dropped when the file is written
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=60.0)
LIST_PAGE_SIZE = 100  # the most the requests list gives per page
LIST_MAX_PAGES = 20


class FalProvider(Provider):
    """Talks to fal's queue, platform and storage APIs; one AsyncClient for all of it."""

    name = "fal"
    default_concurrency = 2  # fal: "new accounts start at 2 concurrent requests"; more are queued
    output_retention = 7 * 24 * 3600.0  # fal's CDN keeps outputs "at least 7 days by default"
    lists_tasks = True
    # fal's requests list is sorted by end time and filtered by terminal statuses: a request still
    # queued or running may not be listed. Its absence proves nothing until any request submitted
    # then has surely ended (2 h: a Kling request runs minutes; fal times out a stuck runner).
    list_lag = 2 * 3600.0

    def __init__(
        self,
        api_key: str,
        queue_url: str,
        api_url: str,
        rest_url: str,
        cache_dir: Path,
        *,
        endpoints: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: Limits | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        variable = "KLING_RENDER_FAL_URL"  # before the key is looked at or sent anywhere
        self.queue_url = net.check_base_url(queue_url, variable=variable)
        self.api_url = net.check_base_url(api_url, variable=variable)
        self.rest_url = net.check_base_url(rest_url, variable=variable)
        key = net.check_key(api_key, variable="FAL_KEY")
        self._api_key = key
        register_secret(key)  # masked wherever text leaves the process, however the key was given
        self._redact = Redactor(key)
        self.cache_dir = cache_dir
        self.retry = retry or RetryPolicy()
        self.limits = limits or Limits()
        self._wall_clock = wall_clock
        transport = transport if transport is not None else net.client_transport()
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        self._uploads = UploadRecords(cache_dir / UPLOADS_FILE, UPLOAD_MAX_AGE, wall_clock)
        self._handles: dict[str, Handle] = {}
        self._record_lock = asyncio.Lock()
        # The endpoints this run's requests may belong to: where to look for a request whose URLs were
        # never recorded here (another machine's, followed through a remote claim).
        self._endpoints: dict[str, None] = dict.fromkeys(endpoints)

    @classmethod
    def from_env(cls, *, cache_dir: Path, endpoints: Iterable[str] = ()) -> FalProvider:
        key, (queue, api, rest) = cls.settings_from_env()
        return cls(key, queue, api, rest, cache_dir, endpoints=endpoints, limits=net.limits_from_env())

    @staticmethod
    def settings_from_env() -> tuple[str, tuple[str, str, str]]:
        """The key and fal's URLs from the environment, checked (a run checks them before it writes anything)."""
        urls = env.fal_urls()
        for url in urls:
            net.check_base_url(url, variable="KLING_RENDER_FAL_URL")  # exit 2 before anything else
        key = env.fal_key()
        if not key:
            raise AuthError("FAL_KEY is not set; set it, or render offline with --provider local")
        return net.check_key(key, variable="FAL_KEY"), urls

    def __repr__(self) -> str:
        return f"FalProvider(queue_url={self.queue_url!r}, api_key='***')"

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- submit -------------------------------------------------------------------------

    async def prepare(self, job: Job) -> dict[str, Any]:
        """The submit body: every local file uploaded to fal's storage and replaced by its URL."""
        self._endpoints.setdefault(job.wire_model)
        try:
            urls = {ref: await self._media_url(ref) for ref in job.media()}
        except TransientError as exc:  # no POST was made yet, so nothing was created
            raise SubmitRefusedError(f"shot {job.shot_id!r}: {exc}", exc.retry_after) from exc
        return {name: _wire(value, urls) for name, value in job.params.items()}

    async def send(self, reservation: Reservation) -> str:
        """The one paid POST: ``{queue}/{endpoint}`` with the reservation's body, once. The request id
        it answers is returned at once (its URLs recorded beside the clip cache first, as fal gave them)."""
        job, body = reservation.job, reservation.use()
        endpoint = job.wire_model
        url = f"{self.queue_url}/{endpoint}"
        what = f"submit of shot {job.shot_id!r} ({job.model})"
        reply = await self.retry.call(lambda: self._post_submit(url, body, what), what=what)
        assert reply.body is not None
        found = handle(reply.body, self._ours)
        if found is None:
            raw = reply.body.get("request_id")
            if isinstance(raw, str) and raw:
                shown = shown_id(self._redact(raw))
                raise SubmitUncertainError(
                    f"{what}: the answer's request id {shown} is not a usable id; a request may exist"
                )
            raise SubmitUncertainError(f"{what}: the answer has no request id; a request may exist")
        await self._remember(found, endpoint)
        return found.request_id

    async def _post_submit(self, url: str, body: Mapping[str, Any], what: str) -> FalReply:
        """One POST. Only a refusal or an unsent request comes back as a retryable error."""
        answer = await post_paid(
            self._client, url, self.limits, headers=self._auth(), body=body, what=what, redact=self._redact,
            thing="request",
        )  # fmt: skip
        reply = read_reply(answer, self._redact, self._retry_after(answer.headers))
        status = reply.status
        if status == 429:
            raise SubmitRefusedError(f"{what}: refused (429) {reply.message}", reply.retry_after)
        raise_account(reply, what)
        if 400 <= status < 500:
            detail = f" [{reply.error_type}]" if reply.error_type else ""
            raise SubmitRejectedError(f"{what}: rejected ({status}){detail}: {reply.message}", code=status)
        if 300 <= status < 400:
            raise SubmitRejectedError(f"{what}: redirected ({status}); check KLING_RENDER_FAL_URL", code=status)
        if not 200 <= status < 300 or not reply.readable:
            problem = "unreadable answer" if 200 <= status < 300 else "server error"
            raise SubmitUncertainError(f"{what}: {problem} ({status}) {reply.message}; a paid request may exist")
        return reply

    # -- the requests' URLs -------------------------------------------------------------

    def _ours(self, url: str) -> bool:
        """Whether ``url`` is on fal's queue (the key may be sent to it): a URL an answer gives
        pointing anywhere else is not followed."""
        return url.startswith(self.queue_url + "/") and url.isprintable() and not any(c.isspace() for c in url)

    def _load_requests(self) -> dict[str, Any]:
        try:
            value = json.loads((self.cache_dir / REQUESTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    async def _remember(self, found: Handle, endpoint: str) -> None:
        """Keep a request's URLs (in memory, and on disk for later runs); best effort on disk: the
        request exists whatever happens here, and its URLs can be found again (``_handle``)."""
        self._handles[found.request_id] = found
        now = self._wall_clock()
        entry = {"endpoint": endpoint, "status_url": found.status_url, "response_url": found.response_url,
                 "cancel_url": found.cancel_url, "at": now}  # fmt: skip
        async with self._record_lock:
            records = self._load_requests()
            records = {k: v for k, v in records.items()
                       if isinstance(v, dict) and now - float(v.get("at", 0) or 0) < REQUEST_RECORD_AGE}  # fmt: skip
            records[found.request_id] = entry
            with contextlib.suppress(OSError):
                await asyncio.to_thread(atomic_write_json, self.cache_dir / REQUESTS_FILE, records)

    def _handle(self, request_id: str) -> list[Handle]:
        """Where to follow a request: its URLs as fal gave them (this run, or recorded by an earlier
        one), else the URLs fal's own clients build from each app the request may belong to."""
        known = self._handles.get(request_id)
        if known is None:
            entry = self._load_requests().get(request_id)
            if isinstance(entry, dict):
                urls = {k: entry.get(k) for k in ("status_url", "response_url", "cancel_url")}
                body = {"request_id": request_id, **urls}
                known = handle(body, self._ours)
                if isinstance(entry.get("endpoint"), str):
                    self._endpoints.setdefault(entry["endpoint"])
        if known is not None and known.status_url is not None:
            return [known]
        built = []
        for app in dict.fromkeys(app_of(e) for e in self._endpoints):
            base = f"{self.queue_url}/{app}/requests/{request_id}"
            built.append(Handle(request_id, f"{base}/status", base, f"{base}/cancel"))
        return built

    # -- poll ---------------------------------------------------------------------------

    async def poll(self, task_id: str) -> TaskResult:
        what = f"poll of request {shown_id(task_id)}"
        if not valid_task_id(task_id):  # never into a URL
            raise ProviderError(f"{what}: not a usable request id")
        candidates = self._handle(task_id)
        if not candidates:
            raise TaskGoneError(f"{what}: no status URL is known for it (the record of its submit is gone)")
        for n, found in enumerate(candidates):
            assert found.status_url is not None
            try:
                reply = await self._get_status(found.status_url, what)
            except TaskGoneError:
                if n + 1 < len(candidates):
                    continue
                raise
            self._handles[task_id] = found
            return await self._status(task_id, found, reply, what)
        raise TaskGoneError(f"{what}: not found")  # pragma: no cover - the loop returns or raises

    async def _get_status(self, url: str, what: str) -> FalReply:
        return await self.retry.call(lambda: self._api_call("GET", url, what), what=what)

    async def _status(self, task_id: str, found: Handle, reply: FalReply, what: str) -> TaskResult:
        body = reply.body or {}
        status = str(body.get("status") or "").strip().upper()
        if status in QUEUE_STATES:
            return TaskResult(QUEUE_STATES[status])
        if status != "COMPLETED":
            raise TransientError(f"{what}: the answer has no known status ({self._redact.line(status, 40)!r})")
        response = body.get("response_url")
        url = response if isinstance(response, str) and self._ours(response) else found.response_url
        error = body.get("error")
        if error:  # fal: "a failed or cancelled request also has the status COMPLETED"
            error_type = body.get("error_type") if isinstance(body.get("error_type"), str) else None
            text = self._redact.line(error if isinstance(error, str) else json.dumps(error))
            # Its result answers the failure with its HTTP status (what decides the money): ask it.
            with contextlib.suppress(ProviderError):
                if url is not None:
                    failed = await self._result(task_id, url, what)
                    if failed.failed:
                        return failed
            cause, free = failure(None, error_type)
            return TaskResult("failed", error=text, code=error_type, cause=cause, refunded=free)
        if url is None:
            raise TransientError(f"{what}: completed, but no result URL is known")
        return await self._result(task_id, url, what)

    async def _result(self, task_id: str, url: str, what: str) -> TaskResult:
        """The result of a completed request: its clip's URL, or the error the model answered."""
        what = what.replace("poll of", "result of")
        try:
            answer = await self.retry.call(lambda: self._raw_get(url, what), what=what)
        except TaskGoneError:
            # fal keeps a result 1 hour (6 minutes when large): ask the requests list for its output.
            output = await self._listed_output(task_id)
            if output is not None:
                return TaskResult("completed", output_url=output)
            gone = "its result expired at fal (kept 1 hour) and is not in the requests list"
            return TaskResult("completed", error=gone)
        reply = read_reply(answer, self._redact, None)
        if 200 <= reply.status < 300:
            output = video_url(reply.body)
            if output is None:
                return TaskResult("completed", error="completed without a video URL in its result")
            return TaskResult("completed", output_url=output)
        # The model's own error, as fal returns it for the request (a 422 may have been billed).
        cause, free = failure(reply.status, reply.error_type)
        kind = f", {reply.error_type}" if reply.error_type else ""
        detail = f"{reply.message or 'no detail'} ({reply.status}{kind})"
        code = reply.error_type or str(reply.status)
        return TaskResult("failed", error=detail, code=code, cause=cause, refunded=free)

    async def _raw_get(self, url: str, what: str) -> net.Answer:
        """A GET whose 4xx answers are the caller's to read: 429/5xx retried (the status said the
        request completed without an error, so these are the queue's, not the model's), 404
        TaskGoneError."""
        answer = await self._send("GET", url, what)
        reply = read_reply(answer, self._redact, self._retry_after(answer.headers))
        if reply.status == 429 or reply.status >= 500:
            raise TransientError(f"{what}: server answered ({reply.status}) {reply.message}", reply.retry_after)
        raise_account(reply, what)
        if reply.status == 404:
            raise TaskGoneError(f"{what}: not found (404): {reply.message}")
        return answer

    async def _listed_output(self, request_id: str) -> str | None:
        """A request's clip URL from the requests list (its stored output), when fal keeps payloads."""
        for endpoint in self._known_endpoints():
            with contextlib.suppress(ProviderError):
                query = {"endpoint_id": endpoint, "request_id": request_id, "expand": "payloads", "limit": 1}
                reply = await self._list_page(query, f"requests list of {endpoint}")
                for item in (reply.body or {}).get("items") or []:
                    if isinstance(item, dict) and item.get("request_id") == request_id:
                        output = video_url(item.get("json_output"))
                        if output is not None:
                            return output
        return None

    def _known_endpoints(self) -> list[str]:
        recorded = [v.get("endpoint") for v in self._load_requests().values() if isinstance(v, dict)]
        return list(dict.fromkeys(e for e in [*self._endpoints, *recorded] if isinstance(e, str)))

    # -- cancel -------------------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Ask fal to drop a request; True only when fal says it removed it from the queue (it
        never ran: nothing is charged). Best effort: any failure is False."""
        if not valid_task_id(task_id):
            return False
        for found in self._handle(task_id):
            if found.cancel_url is None:
                continue
            with contextlib.suppress(ProviderError, httpx.HTTPError, TransferError):
                answer = await self._send("PUT", found.cancel_url, f"cancel of request {shown_id(task_id)}")
                reply = read_reply(answer, self._redact, None)
                return reply.status == 200 and (reply.body or {}).get("status") == "OK"
        return False

    # -- the requests list --------------------------------------------------------------

    async def list_tasks(self, model: str, created_after: float, created_before: float) -> list[ListedTask]:
        """Every request of endpoint ``model`` (``Job.wire_model``) fal lists in the window, with the
        input it received (``expand=payloads``). fal lists requests that have ended."""
        endpoint = model
        self._endpoints.setdefault(endpoint)
        query: dict[str, Any] = {
            "endpoint_id": endpoint,
            "start": iso(created_after),
            "end": iso(created_before + 1),  # fal's end is exclusive
            "limit": LIST_PAGE_SIZE,
            "expand": "payloads",
        }
        found: list[ListedTask] = []
        for page in range(1, LIST_MAX_PAGES + 1):
            reply = await self._list_page(query, f"requests list of {endpoint} (page {page})")
            body = reply.body or {}
            items = body.get("items")
            if not isinstance(items, list):
                raise ProviderError(f"requests list of {endpoint}: the answer has no item list")
            for item in items:
                task = listed_task(item, endpoint)
                if task is None:
                    continue
                if task.created_at is not None and not created_after <= task.created_at <= created_before:
                    continue  # the service may ignore a filter: apply it here too
                found.append(task)
            cursor = body.get("next_cursor")
            if not body.get("has_more") or not isinstance(cursor, str) or not cursor:
                return found
            query["cursor"] = cursor
        raise ProviderError(
            f"more than {LIST_MAX_PAGES * LIST_PAGE_SIZE} requests of {endpoint} in the window; "
            "cannot tell which one a shot created"
        )

    async def _list_page(self, query: Mapping[str, Any], what: str) -> FalReply:
        url = f"{self.api_url}/v1/models/requests/by-endpoint?{urlencode(query)}"
        return await self.retry.call(lambda: self._api_call("GET", url, what), what=what)

    # -- prices -------------------------------------------------------------------------

    async def unit_prices(self, endpoints: list[str]) -> dict[str, tuple[float, str]]:
        """fal's unit price and unit of each endpoint (``GET {api}/v1/models/pricing``, free)."""
        out: dict[str, tuple[float, str]] = {}
        for start in range(0, len(endpoints), 50):  # fal takes 1-50 ids per call
            chunk = endpoints[start : start + 50]
            url = f"{self.api_url}/v1/models/pricing?{urlencode({'endpoint_id': ','.join(chunk)})}"
            reply = await self._price_page(url, "prices of " + ", ".join(chunk))
            for item in (reply.body or {}).get("prices") or []:
                if not isinstance(item, dict) or item.get("endpoint_id") not in chunk:
                    continue
                price, unit = item.get("unit_price"), item.get("unit")
                if isinstance(price, int | float) and not isinstance(price, bool) and isinstance(unit, str):
                    out[str(item["endpoint_id"])] = (float(price), unit)
        return out

    async def _price_page(self, url: str, what: str) -> FalReply:
        return await self.retry.call(lambda: self._api_call("GET", url, what), what=what)

    # -- uploads ------------------------------------------------------------------------

    async def _media_url(self, ref: MediaRef) -> str:
        return await self._uploads.media_url(ref, self._retried_upload)

    async def _retried_upload(self, filename: str, data: bytes) -> str:
        return await self.retry.call(lambda: self._upload(filename, data), what=f"upload of {filename}")

    async def _upload(self, filename: str, data: bytes) -> str:
        """fal's storage flow (fal-js ``storage.upload``): initiate (with the key), PUT the bytes to
        the signed URL it answers (without it), use its ``file_url``."""
        what = f"upload of {filename}"
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        url = f"{self.rest_url}/storage/upload/initiate?storage_type=fal-cdn-v3"
        reply = await self._api_call("POST", url, what, json_body={"content_type": content_type, "file_name": filename})
        body = reply.body or {}
        target, file_url = body.get("upload_url"), body.get("file_url")
        if not isinstance(target, str) or not is_http(target) or not isinstance(file_url, str) or not is_http(file_url):
            raise ProviderError(f"{what}: unexpected answer (no upload_url or file_url)")
        if self._redact(file_url) != file_url or self._redact(target) != target:
            raise ProviderError(f"{what}: the answer's URLs carry the API key; refusing them")
        try:
            body_bytes = bytearray()
            async with (
                Transfer(self.limits.download_deadline, self.limits) as transfer,
                self._client.stream("PUT", target, content=data, headers={"Content-Type": content_type}) as response,
            ):
                with contextlib.suppress(TooLarge):  # storage's answer is read only for its message
                    await transfer.read(response, body_bytes.extend, 64 * 1024)
        except (httpx.HTTPError, TransferError) as exc:  # a PUT of the same bytes is idempotent
            raise TransientError(self._redact(f"{what}: {describe(exc)}")) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientError(f"{what}: storage answered {status}", self._retry_after(response.headers))
        if status >= 300:
            detail = self._redact.line(bytes(body_bytes[:600]).decode("utf-8", "replace"), 200)
            raise ProviderError(f"{what}: storage refused the bytes ({status}) {detail}")
        return file_url

    # -- download -----------------------------------------------------------------------

    async def download(self, url: str, dest: Path) -> None:
        await fetch_output(self._client, url, dest, limits=self.limits, retry=self.retry, retry_after=self._retry_after)

    # -- one API call -------------------------------------------------------------------

    async def _send(self, method: str, url: str, what: str, *, json_body: Any = None) -> net.Answer:
        """One request with the key, transport failures mapped (429/5xx are the caller's to read)."""
        try:
            return await net.request(self._client, method, url, self.limits, headers=self._auth(), json_body=json_body)
        except httpx.TimeoutException as exc:
            raise TransientError(self._redact(f"{what}: timed out ({describe(exc)})")) from exc
        except httpx.TransportError as exc:
            raise TransientError(self._redact(f"{what}: connection failed ({describe(exc)})")) from exc
        except (net.Stalled, net.TimedOut) as exc:
            raise TransientError(f"{what}: {exc}") from exc
        except (httpx.HTTPError, TransferError) as exc:  # over the size cap, undecodable: not retried
            raise ProviderError(self._redact(f"{what}: {describe(exc)}")) from exc

    async def _api_call(self, method: str, url: str, what: str, *, json_body: Any = None) -> FalReply:
        """One idempotent call (status, list, prices, upload slot): 429/5xx/dropped → TransientError."""
        answer = await self._send(method, url, what, json_body=json_body)
        reply = read_reply(answer, self._redact, self._retry_after(answer.headers))
        if reply.status == 429 or reply.status >= 500:
            raise TransientError(f"{what}: server answered ({reply.status}) {reply.message}", reply.retry_after)
        raise_account(reply, what)
        if reply.status == 404:
            raise TaskGoneError(f"{what}: not found (404): {reply.message}")
        if reply.status >= 300:
            raise ProviderError(f"{what}: rejected ({reply.status}): {reply.message}")
        if not reply.readable:
            raise TransientError(f"{what}: unreadable answer ({reply.status})")
        return reply

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._api_key}", "Accept": "application/json"}

    def _retry_after(self, headers: httpx.Headers) -> float | None:
        return parse_retry_after(headers.get("Retry-After"), now=self._wall_clock())


def _wire(value: Any, urls: Mapping[MediaRef, str]) -> Any:
    """A param value as sent: every MediaRef replaced by its URL, also inside lists and objects."""
    if isinstance(value, MediaRef):
        return urls[value]
    if isinstance(value, list | tuple):
        return [_wire(v, urls) for v in value]
    if isinstance(value, Mapping):
        return {k: _wire(v, urls) for k, v in value.items()}
    return value


__all__ = ["REQUESTS_FILE", "UPLOADS_FILE", "FalProvider"]
