"""What WaveSpeed's answers mean (SPEC §5): the envelope, account problems, failure codes, the task list.

Pure functions over an answer already read (bounded) by the transport; the provider decides what
to do with them. Sources: WaveSpeed's docs (Error Codes, Predictions API, Account Levels) and its
Python SDK's submit/retry rules; what is undocumented is said where it is assumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kling_render.errors import AccountError, AuthError
from kling_render.jobs import FailureCause, ListedTask
from kling_render.providers.transport import Answer, Redactor

# WaveSpeed's documented task error codes (docs: "Error Codes"); SPEC §5 treats 1400-1405 as one band.
PERMANENT_CODES = frozenset({1200, 1400, 1401, 1402, 1403, 1404, 1405})
TRANSIENT_CODES = frozenset({5000, 5003, 5004})
TRANSIENT_STATES = frozenset({"timeout", "cancelled", "canceled"})
# The balance error's code is not documented: an error answer whose message speaks of the balance
# stops the run like a 402.
BALANCE = re.compile(
    r"\b(balance|insufficient (funds|credits?)|top[ -]?up|recharge|out of credits?|payment required)\b", re.I
)
KEY_HINT = "check WAVESPEED_API_KEY (a key from WaveSpeed's API keys page), then run the same command again"
BALANCE_HINT = "top up the WaveSpeed balance, then run the same command again (it resumes)"


@dataclass(frozen=True)
class Reply:
    """An answer read as WaveSpeed's envelope."""

    status: int  # HTTP
    code: int | None  # the envelope's code; None when absent or not a number
    message: str  # the server's own words, redacted, one line
    data: dict[str, Any] = field(default_factory=dict)
    readable: bool = True  # the body is a JSON object
    retry_after: float | None = None

    @property
    def effective(self) -> int:
        """What the answer means: the HTTP status, or inside a 2xx the envelope's code."""
        if 200 <= self.status < 300:
            return self.code if self.code is not None else 200
        return self.status

    def how(self) -> str:
        """``(503)`` for an HTTP error, ``(code 400)`` for an error inside an HTTP 200."""
        if 200 <= self.status < 300 and self.code not in (None, 200):
            return f"(code {self.code})"
        return f"({self.status})"


def read_reply(answer: Answer, redact: Redactor, retry_after: float | None) -> Reply:
    """The envelope of ``answer``: code, the server's message (redacted), data."""
    try:
        body = answer.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        text = redact.line(answer.snippet(), 200)
        return Reply(answer.status, None, text, readable=False, retry_after=retry_after)
    data = body.get("data")
    data = data if isinstance(data, dict) else {}
    message = ""
    for candidate in (body.get("message"), body.get("error"), data.get("error")):
        if isinstance(candidate, str) and candidate.strip():
            message = redact.line(candidate)
            break
    return Reply(answer.status, code_of(body.get("code")), message, data, True, retry_after)


def raise_account(reply: Reply, what: str) -> None:
    """AuthError / AccountError when the answer says the account cannot run tasks."""
    codes = {reply.status, reply.effective}
    if codes & {401, 403}:
        status = 401 if 401 in codes else 403
        raise AuthError(f"{what}: the API key was rejected ({status}): {reply.message}; {KEY_HINT}")
    if 402 in codes or (reply.effective != 200 and BALANCE.search(reply.message)):
        raise AccountError(f"{what}: the account cannot pay {reply.how()}: {reply.message}; {BALANCE_HINT}")


def failure_cause(status: str, code: int | None) -> FailureCause:
    """Why a task failed, from its code (docs: "Error Codes") and status (SPEC §5)."""
    if code in PERMANENT_CODES:
        return "permanent"
    if code in TRANSIENT_CODES or status in TRANSIENT_STATES:
        return "transient"
    return "unclassified"


def listed_task(item: object, wire_model: str) -> ListedTask | None:
    """One item of the task list, or None when it is not a task of ``wire_model``."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    if isinstance(item.get("model"), str) and item["model"] != wire_model:
        return None
    inputs = item.get("inputs")
    return ListedTask(
        id=item["id"],
        status=str(item.get("status") or ""),
        created_at=timestamp(item.get("created_at")),
        inputs=inputs if isinstance(inputs, dict) else None,
    )


def first_output(outputs: object) -> str | None:
    """A completed task's output URL (``outputs[0]``), or None when it has no usable one."""
    output = outputs[0] if isinstance(outputs, list) and outputs else None
    if isinstance(output, dict):  # tolerate [{"url": ...}]
        output = output.get("url")
    return output if isinstance(output, str) and output.strip() else None


def code_of(value: object) -> int | None:
    """A code as a number (200, "1200"), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(value: object) -> float | None:
    """An ISO 8601 time as WaveSpeed writes it (``2025-05-19T06:09:15.948268264Z``) in epoch seconds."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
