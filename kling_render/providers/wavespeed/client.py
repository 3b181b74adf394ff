"""The WaveSpeed provider (SPEC §5): uploads local media, submits, polls, lists and downloads over httpx.

Every answer is an envelope ``{code, message, data}``; its ``code`` counts as much as the HTTP
status (WaveSpeed answers some errors inside an HTTP 200). What a submit answer means:

- 2xx with code 200 and a usable task id: accepted;
- 429: refused, nothing created: retried after Retry-After, bounded (so is a request that
  certainly never left this machine);
- 401/403/402, or an error whose message speaks of the balance: the account cannot run tasks
  (AccountError: the run stops submitting);
- any other 4xx: rejected (SubmitRejectedError, with the server's message and code);
- anything else (5xx, a timeout, a dropped connection, no id, an unreadable answer): a task may
  exist (SubmitUncertainError); the POST is never sent again, the runner reconciles it through
  the task list (``list_tasks``).

Failed tasks carry ``data.code``: 1200 and 1400-1405 are permanent (the same inputs fail the
same way), 5000/5003/5004 and the ``timeout``/``cancelled`` statuses transient, anything else
unclassified (SPEC §5). Every httpx failure is mapped to a kling_render error here, at the
seam. The API key goes only to the API's own endpoints (never to upload or output URLs) and
never into a message: every text built from a server answer passes through the Redactor.
"""

from __future__ import annotations

import contextlib
import math
import mimetypes
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
from kling_render.jobs import (
    TERMINAL_FAILED_STATES,
    Job,
    ListedTask,
    MediaRef,
    TaskResult,
    shown_id,
    valid_task_id,
)
from kling_render.masking import register as register_secret
from kling_render.money import Reservation
from kling_render.providers import transport as net
from kling_render.providers.base import Provider
from kling_render.providers.download import describe, is_http
from kling_render.providers.download import download as fetch_output
from kling_render.providers.submit import post_paid
from kling_render.providers.transport import Limits, Redactor, TooLarge, Transfer, TransferError
from kling_render.providers.uploads import UploadRecords
from kling_render.providers.wavespeed.answers import (
    PERMANENT_CODES,
    TRANSIENT_CODES,
    Reply,
    code_of,
    failure_cause,
    first_output,
    iso,
    listed_task,
    raise_account,
    read_reply,
)
from kling_render.retry import RetryPolicy, parse_retry_after

UPLOAD_MAX_AGE = 6 * 24 * 3600.0  # WaveSpeed keeps uploads 7 days; re-upload a day early
UPLOADS_FILE = "uploads.json"
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=60.0)
LIST_PAGE_SIZE = 100  # the most the task list gives per page
LIST_MAX_PAGES = 20  # 2,000 tasks of one model in one window: more cannot be told apart anyway
_MODEL_PREFIX = "kwaivgi/"
# Connection failures where the request certainly never left this process.
class WaveSpeedProvider(Provider):
    """Talks to ``{base}/api/v3``; one AsyncClient for the API, uploads and downloads."""

    name = "wavespeed"
    default_concurrency = 2  # the entry (Bronze) tier runs 2 tasks at once
    output_retention = 7 * 24 * 3600.0  # SPEC §5: outputs (and uploads) expire after 7 days
    lists_tasks = True

    def __init__(
        self,
        api_key: str,
        base_url: str,
        cache_dir: Path,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: Limits | None = None,
        max_download_bytes: int | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = _check_base_url(base_url)  # before the key is looked at or sent anywhere
        key = net.check_key(api_key, variable="WAVESPEED_API_KEY")
        self._api_key = key
        register_secret(key)  # masked wherever text leaves the process, however the key was given
        self._redact = Redactor(key)
        self.cache_dir = cache_dir
        self.retry = retry or RetryPolicy()
        limits = limits or Limits()
        if max_download_bytes is not None:
            limits = Limits(**{**limits.__dict__, "download_max_bytes": max_download_bytes})
        self.limits = limits
        self._wall_clock = wall_clock
        transport = transport if transport is not None else net.client_transport()
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        self._uploads = UploadRecords(cache_dir / UPLOADS_FILE, UPLOAD_MAX_AGE, wall_clock)

    @classmethod
    def from_env(cls, *, cache_dir: Path) -> WaveSpeedProvider:
        key, base_url = cls.settings_from_env()
        return cls(key, base_url, cache_dir, limits=net.limits_from_env())

    @staticmethod
    def settings_from_env() -> tuple[str, str]:
        """The key and base URL from the environment, checked (a run checks them before it writes anything)."""
        base_url = _check_base_url(env.wavespeed_base_url())  # exit 2 before anything else
        key = env.wavespeed_api_key()
        if not key:
            raise AuthError("WAVESPEED_API_KEY is not set; set it, or render offline with --provider local")
        return net.check_key(key, variable="WAVESPEED_API_KEY"), base_url

    def __repr__(self) -> str:
        return f"WaveSpeedProvider(base_url={self.base_url!r}, api_key='***')"

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- submit -------------------------------------------------------------------------

    async def prepare(self, job: Job) -> dict[str, Any]:
        """The submit body: every local file uploaded and replaced by its URL."""
        try:
            urls = {ref: await self._media_url(ref) for ref in job.media()}
        except TransientError as exc:  # no POST was made yet, so nothing was created
            raise SubmitRefusedError(f"shot {job.shot_id!r}: {exc}", exc.retry_after) from exc
        return {name: _wire(value, urls) for name, value in job.params.items()}

    async def send(self, reservation: Reservation) -> str:
        job, body = reservation.job, reservation.use()
        model = job.model.removeprefix(_MODEL_PREFIX)
        url = f"{self.base_url}/api/v3/{job.wire_model}"
        what = f"submit of shot {job.shot_id!r} ({model})"
        reply = await self.retry.call(lambda: self._post_submit(url, body, what), what=what)
        task_id = reply.data.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise SubmitUncertainError(f"{what}: the answer has no task id; a task may exist")
        if not valid_task_id(task_id):
            shown = shown_id(self._redact(task_id))
            raise SubmitUncertainError(f"{what}: the answer's task id {shown} is not a usable id; a task may exist")
        return task_id

    async def _post_submit(self, url: str, body: Mapping[str, Any], what: str) -> Reply:
        """One POST. Only a refusal or an unsent request comes back as a retryable error."""
        answer = await post_paid(
            self._client, url, self.limits, headers=self._auth(), body=body, what=what, redact=self._redact,
            thing="task",
        )  # fmt: skip
        reply = read_reply(answer, self._redact, self._retry_after(answer.headers))
        effective = reply.effective
        if effective == 429:
            raise SubmitRefusedError(f"{what}: refused {reply.how()} {reply.message}", reply.retry_after)
        raise_account(reply, what)
        if 400 <= effective < 500:
            raise SubmitRejectedError(f"{what}: rejected {reply.how()}: {reply.message}", code=effective)
        if 300 <= reply.status < 400:
            raise SubmitRejectedError(
                f"{what}: redirected ({reply.status}); check WAVESPEED_BASE_URL", code=reply.status
            )
        if effective != 200 or not reply.readable:
            problem = "unreadable answer" if effective == 200 else "server error"
            raise SubmitUncertainError(f"{what}: {problem} {reply.how()} {reply.message}; a paid task may exist")
        return reply

    # -- uploads ------------------------------------------------------------------------

    async def _media_url(self, ref: MediaRef) -> str:
        return await self._uploads.media_url(ref, self._retried_upload)

    async def _retried_upload(self, filename: str, data: bytes) -> str:
        return await self.retry.call(lambda: self._upload(filename, data), what=f"upload of {filename}")

    async def _upload(self, filename: str, data: bytes) -> str:
        what = f"upload of {filename}"
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        reply = await self._api_call(
            "POST",
            f"{self.base_url}/api/v3/media/uploads",
            what,
            json_body={"filename": filename, "size": len(data), "content_type": content_type},
        )
        upload = reply.data.get("upload")
        download_url = reply.data.get("download_url")
        if not isinstance(upload, dict) or not isinstance(download_url, str) or not is_http(download_url):
            raise ProviderError(f"{what}: unexpected answer (no upload target or download_url)")
        if self._redact(download_url) != download_url:  # it would be stored (uploads.json) and sent on
            raise ProviderError(f"{what}: the answer's download_url carries the API key; refusing it")
        method = str(upload.get("method", "PUT")).upper()
        target = upload.get("url")
        headers = upload.get("headers") or {}
        if method != "PUT" or not isinstance(target, str) or not is_http(target):
            raise ProviderError(f"{what}: unexpected upload target ({self._redact.line(method, 20)})")
        if not isinstance(headers, dict):
            raise ProviderError(f"{what}: upload headers are not an object")
        # Only the announced headers: the upload URL is signed and gets no Authorization.
        put_headers = {str(k): str(v) for k, v in headers.items()}
        try:
            body = bytearray()
            async with (
                Transfer(self.limits.download_deadline, self.limits) as transfer,
                self._client.stream("PUT", target, content=data, headers=put_headers) as response,
            ):
                with contextlib.suppress(TooLarge):  # storage's answer is read only for its message
                    await transfer.read(response, body.extend, 64 * 1024)
        except (httpx.HTTPError, TransferError) as exc:  # a PUT of the same bytes is idempotent
            raise TransientError(self._redact(f"{what}: {describe(exc)}")) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientError(f"{what}: storage answered {status}", self._retry_after(response.headers))
        if status >= 300:
            detail = self._redact.line(bytes(body[:600]).decode("utf-8", "replace"), 200)
            raise ProviderError(f"{what}: storage refused the bytes ({status}) {detail}")
        return download_url

    # -- poll and list ------------------------------------------------------------------

    async def poll(self, task_id: str) -> TaskResult:
        what = f"poll of task {shown_id(task_id)}"
        if not valid_task_id(task_id):  # never into a URL
            raise ProviderError(f"{what}: not a usable task id")
        url = f"{self.base_url}/api/v3/predictions/{task_id}/result"
        reply = await self.retry.call(lambda: self._api_call("GET", url, what, not_found=TaskGoneError), what=what)
        data = reply.data
        status = str(data.get("status") or "").strip().lower()
        if not status:
            raise TransientError(f"{what}: the answer has no status")
        if status == "completed":
            output = first_output(data.get("outputs"))
            if output is None:  # paid, and unusable: the runner counts it against the shot's cap
                return TaskResult("completed", error="completed without an output URL")
            return TaskResult("completed", output_url=output)
        if status in TERMINAL_FAILED_STATES:
            code = code_of(data.get("code"))
            error = data.get("error")
            return TaskResult(
                status,
                error=self._redact.line(error) if error else None,
                code=None if code in (None, 0) else str(code),
                cause=failure_cause(status, code),
            )
        return TaskResult(status)

    async def list_tasks(self, model: str, created_after: float, created_before: float) -> list[ListedTask]:
        """Every task of ``model`` (its wire path, ``Job.wire_model``) created in the window, newest
        first, with its inputs when the service gives them (``include_inputs``, sent by WaveSpeed's
        own desktop client)."""
        wire_model = model
        url = f"{self.base_url}/api/v3/predictions"
        found: list[ListedTask] = []
        for page in range(1, LIST_MAX_PAGES + 1):
            body = {
                "page": page,
                "page_size": LIST_PAGE_SIZE,
                "model": wire_model,
                "created_after": iso(created_after),
                "created_before": iso(created_before),
                "include_inputs": True,
            }
            reply = await self._list_page(url, body, f"task list of {wire_model} (page {page})")
            items = reply.data.get("items")
            if not isinstance(items, list):
                raise ProviderError(f"task list of {wire_model}: the answer has no item list")
            oldest = None
            for item in items:
                task = listed_task(item, wire_model)
                if task is None:
                    continue
                if task.created_at is not None:
                    oldest = task.created_at if oldest is None else min(oldest, task.created_at)
                    if not created_after <= task.created_at <= created_before:
                        continue  # the service may ignore a filter: apply it here too
                found.append(task)
            if len(items) < LIST_PAGE_SIZE or (oldest is not None and oldest < created_after):
                return found
        raise ProviderError(
            f"more than {LIST_MAX_PAGES * LIST_PAGE_SIZE} tasks of {wire_model} in the window; "
            "cannot tell which one a shot created"
        )

    async def _list_page(self, url: str, body: dict[str, Any], what: str) -> Reply:
        return await self.retry.call(lambda: self._api_call("POST", url, what, json_body=body), what=what)

    async def _api_call(
        self,
        method: str,
        url: str,
        what: str,
        *,
        json_body: Any = None,
        not_found: type[ProviderError] = ProviderError,
    ) -> Reply:
        """One idempotent call to the API (poll, list, upload slot): 429/5xx/dropped → TransientError."""
        try:
            answer = await net.request(
                self._client, method, url, self.limits, headers=self._auth(), json_body=json_body
            )
        except httpx.TimeoutException as exc:
            raise TransientError(self._redact(f"{what}: timed out ({describe(exc)})")) from exc
        except httpx.TransportError as exc:
            raise TransientError(self._redact(f"{what}: connection failed ({describe(exc)})")) from exc
        except net.Stalled as exc:
            raise TransientError(f"{what}: {exc}") from exc
        except net.TimedOut as exc:
            raise TransientError(f"{what}: {exc}") from exc
        except (httpx.HTTPError, TransferError) as exc:  # over the size cap, undecodable: not retried
            raise ProviderError(self._redact(f"{what}: {describe(exc)}")) from exc
        reply = read_reply(answer, self._redact, self._retry_after(answer.headers))
        effective = reply.effective
        if effective == 429 or effective >= 500:
            raise TransientError(f"{what}: server answered {reply.how()[1:-1]} {reply.message}", reply.retry_after)
        raise_account(reply, what)
        if effective == 404:
            raise not_found(f"{what}: not found {reply.how()}: {reply.message}")
        if 300 <= reply.status < 400 or effective >= 400:
            raise ProviderError(f"{what}: rejected {reply.how()}: {reply.message}")
        if effective != 200:
            raise ProviderError(f"{what}: unexpected answer {reply.how()}: {reply.message}")
        if not reply.readable:
            raise TransientError(f"{what}: unreadable answer ({reply.status})")
        return reply

    # -- pricing ------------------------------------------------------------------------

    async def unit_price(self, model_path: str, inputs: Mapping[str, Any]) -> float:
        """WaveSpeed's price in USD of one run of ``model_path`` with ``inputs`` (free: nothing runs).

        ``POST {base}/api/v3/model/pricing`` with ``{model_id, inputs}``; the answer's
        ``data.unit_price`` (WaveSpeed's Pricing API page). Used by ``models --check-prices``.
        """
        what = f"price of {model_path}"
        url = f"{self.base_url}/api/v3/model/pricing"
        body = {"model_id": model_path, "inputs": dict(inputs)}
        reply = await self.retry.call(lambda: self._api_call("POST", url, what, json_body=body), what=what)
        value = reply.data.get("unit_price")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProviderError(f"{what}: the answer has no unit_price")
        if not math.isfinite(value) or value < 0:  # JSON parsers take NaN, Infinity and 1e999
            raise ProviderError(f"{what}: the answer's unit_price {value!r} is not a price (a finite number ≥ 0)")
        return float(value)

    # -- download -----------------------------------------------------------------------

    async def download(self, url: str, dest: Path) -> None:
        await fetch_output(self._client, url, dest, limits=self.limits, retry=self.retry, retry_after=self._retry_after)

    # -- helpers ------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def _retry_after(self, headers: httpx.Headers) -> float | None:
        return parse_retry_after(headers.get("Retry-After"), now=self._wall_clock())



def _check_base_url(url: str) -> str:
    return net.check_base_url(url, variable="WAVESPEED_BASE_URL")


def _wire(value: Any, urls: Mapping[MediaRef, str]) -> Any:
    """A param value as sent: every MediaRef replaced by its URL, also inside lists and objects."""
    if isinstance(value, MediaRef):
        return urls[value]
    if isinstance(value, list | tuple):
        return [_wire(v, urls) for v in value]
    if isinstance(value, Mapping):
        return {k: _wire(v, urls) for k, v in value.items()}
    return value


__all__ = ["PERMANENT_CODES", "TRANSIENT_CODES", "UPLOADS_FILE", "WaveSpeedProvider", "failure_cause"]
