"""What fal's answers mean (SPEC §5): the queue's request handles, errors and their money, the
requests list, prices. Pure functions over answers already read (bounded) by the transport.

Sources: fal's docs (Queue API, Model APIs FAQ and errors, Platform APIs v1) and its clients
(fal-js ``@fal-ai/client``, ``fal_client``); what is undocumented is said where it is assumed.

Money rule for a failed request (fal: "server errors (HTTP 500+) are never charged", "invalid
inputs (HTTP 422) may still be charged if a runner spent GPU time"): a failure is free only when
fal says its infrastructure failed it (an HTTP 5xx, or an ``error_type`` of the 5xx family of its
request-errors table). Anything else (a 422 validation or content-policy error, a 4xx, an error
type fal does not document) may have been billed: it stays spent in the budget and in the key's
cap of paid tasks, and one that is the inputs' fault is not paid again automatically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kling_render.errors import AccountError, AuthError
from kling_render.jobs import FailureCause, ListedTask, valid_task_id
from kling_render.providers.transport import Answer, Redactor

# fal's request-errors table: failures of its infrastructure, answered 5xx, never charged.
FREE_ERROR_TYPES = frozenset({
    "request_timeout", "startup_timeout", "runner_scheduling_failure", "runner_connection_timeout",
    "runner_disconnected", "runner_connection_refused", "runner_connection_error",
    "runner_incomplete_response", "runner_server_error", "internal_error",
})  # fmt: skip
# Failures of the inputs: the same request fails the same way again.
INPUT_ERROR_TYPES = frozenset({"content_policy_violation", "validation_error", "bad_request"})
BALANCE = re.compile(r"\b(balance|exhausted|insufficient (funds|credits?)|top[ -]?up|payment required|locked)\b", re.I)
KEY_HINT = "check FAL_KEY (a key from fal's dashboard, Keys page), then run the same command again"
BALANCE_HINT = "top up the fal balance (fal's dashboard, Billing), then run the same command again"
QUEUE_STATES = {"IN_QUEUE": "queued", "IN_PROGRESS": "processing"}


@dataclass(frozen=True)
class FalReply:
    """An answer read as fal writes them: the body (a JSON object or None), its message, its error type."""

    status: int
    body: dict[str, Any] | None
    message: str  # the server's own words (``detail``), redacted, one line
    error_type: str | None
    retry_after: float | None = None

    @property
    def readable(self) -> bool:
        return self.body is not None


def read_reply(answer: Answer, redact: Redactor, retry_after: float | None) -> FalReply:
    """The body of ``answer`` and what it says went wrong, if anything."""
    try:
        body = answer.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    error_type = answer.headers.get("X-Fal-Error-Type")
    if not isinstance(body, dict):
        return FalReply(answer.status, None, redact.line(answer.snippet(), 200), _kind(error_type), retry_after)
    if isinstance(body.get("error_type"), str):
        error_type = body["error_type"]
    message = detail_text(body.get("detail"))
    if not message:
        for key in ("error", "message"):
            if isinstance(body.get(key), str) and body[key].strip():
                message = body[key]
                break
    return FalReply(answer.status, body, redact.line(message), _kind(error_type), retry_after)


def detail_text(detail: Any) -> str:
    """fal's ``detail``: a string, or a list of ``{loc, msg, type}`` (FastAPI validation errors)."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                msg = str(item.get("msg", "")).strip()
                parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(p for p in parts if p)
    return ""


def _kind(value: Any) -> str | None:
    return value.strip()[:60] if isinstance(value, str) and value.strip() else None


def raise_account(reply: FalReply, what: str) -> None:
    """AuthError / AccountError when the answer says the account cannot run requests."""
    if reply.status == 402 or (reply.status in (401, 403) and BALANCE.search(reply.message)):
        raise AccountError(f"{what}: the account cannot pay ({reply.status}): {reply.message}; {BALANCE_HINT}")
    if reply.status in (401, 403):
        raise AuthError(f"{what}: the API key was rejected ({reply.status}): {reply.message}; {KEY_HINT}")


def failure(status: int | None, error_type: str | None) -> tuple[FailureCause, bool]:
    """A failed request's cause and whether it is certainly free (see the module's money rule).

    ``status`` is the HTTP status fal answered the request's result with (None: only the status
    answer's ``error`` is known)."""
    if error_type in FREE_ERROR_TYPES or (status is not None and status >= 500):
        return "transient", True
    if error_type in INPUT_ERROR_TYPES or status == 422:
        return "permanent", False
    return "unclassified", False


@dataclass(frozen=True)
class Handle:
    """What a submit answers: the request id and the URLs to follow it by (``None`` when an answer
    did not give a usable one)."""

    request_id: str
    status_url: str | None
    response_url: str | None
    cancel_url: str | None


def handle(body: dict[str, Any], usable: Any) -> Handle | None:
    """The request handle of a submit (or status) answer; None without a usable request id.
    ``usable(url)`` says whether a URL may carry the key (fal's own queue)."""
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not valid_task_id(request_id):
        return None

    def url(name: str) -> str | None:
        value = body.get(name)
        return value if isinstance(value, str) and usable(value) else None

    return Handle(request_id, url("status_url"), url("response_url"), url("cancel_url"))


def video_url(result: Any) -> str | None:
    """The clip's URL in a result (``{"video": {"url": ...}}``), or None."""
    if not isinstance(result, dict):
        return None
    video = result.get("video")
    if isinstance(video, dict):
        video = video.get("url")
    return video if isinstance(video, str) and video.strip() else None


def listed_task(item: object, endpoint: str) -> ListedTask | None:
    """One item of ``GET /v1/models/requests/by-endpoint``, or None when it is not a request of ``endpoint``."""
    if not isinstance(item, dict) or not isinstance(item.get("request_id"), str):
        return None
    if isinstance(item.get("endpoint_id"), str) and item["endpoint_id"] != endpoint:
        return None
    code = item.get("status_code")
    status = "" if not isinstance(code, int) else "completed" if 200 <= code < 300 else "failed"
    stamp = timestamp(item.get("sent_at")) or timestamp(item.get("started_at")) or timestamp(item.get("ended_at"))
    inputs = item.get("json_input")
    return ListedTask(item["request_id"], status, stamp, inputs if isinstance(inputs, dict) else None)


def app_of(endpoint: str) -> str:
    """``owner/app`` of an endpoint id: fal's status, result and cancel URLs name only these
    (``workflows/`` and ``comfy/`` endpoints have three parts, as in fal's clients)."""
    parts = endpoint.split("/")
    keep = 3 if parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep])


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(value: object) -> float | None:
    """An ISO 8601 time in epoch seconds (naive: UTC)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
