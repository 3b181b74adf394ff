"""Finding the task behind a submit whose answer was lost (SPEC §5, §6): pure decisions.

Before each POST the runner records a fingerprint of the body it sends (the sha256 of each
field's canonical JSON, uploaded media as the URLs actually sent), so any later process can
recognise the task in the provider's task list. ``decide`` looks at the tasks listed in a window
around the submit time, drops every task id the project already knows, and:

- adopts the one task whose inputs match the fingerprint (every field sent, equal);
- where the list gives no inputs, adopts a task only if exactly one candidate is left;
- with several candidates keeps the shot ``unknown`` and says how many;
- with none, proves the submit created nothing only when the list was asked at least
  ``grace`` seconds after the submit (a new task may take a moment to be listed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kling_render.jobs import ListedTask, shown_id, valid_task_id

WINDOW_BEFORE = 10 * 60.0  # seconds before the recorded submit time a task may be stamped (clock skew)
WINDOW_AFTER = 10 * 60.0  # ... and after it (the POST's own time, clock skew)


def canonical(value: Any) -> Any:
    """``value`` with whole floats as ints (5.0 == 5 as the service may echo it), recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def digest(value: Any) -> str:
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(body: Mapping[str, Any]) -> dict[str, str]:
    """The sha256 of each field of a submit body, as the state file keeps it."""
    return {str(name): digest(value) for name, value in body.items()}


def inputs_match(wire: Mapping[str, str], inputs: Mapping[str, Any]) -> bool:
    """Every field that was sent is in ``inputs`` with the same value (fields the service adds, such
    as defaults it filled in, do not matter)."""
    return bool(wire) and all(name in inputs and digest(inputs[name]) == value for name, value in wire.items())


@dataclass(frozen=True)
class Decision:
    kind: Literal["adopt", "absent", "ambiguous", "wait"]
    task_id: str | None = None
    message: str = ""


def decide(
    tasks: Sequence[ListedTask],
    *,
    wire: Mapping[str, str] | None,
    known: Collection[str],
    submitted_at: float,
    asked_at: float,
    grace: float,
) -> Decision:
    """What the task list says about one submit whose answer was lost (see the module doc)."""
    window = [
        t for t in tasks
        if t.id not in known
        and (t.created_at is None or submitted_at - WINDOW_BEFORE <= t.created_at <= submitted_at + WINDOW_AFTER)
    ]  # fmt: skip
    if wire:
        candidates = [t for t in window if t.inputs is None or inputs_match(wire, t.inputs)]
        matched = sum(1 for t in candidates if t.inputs is not None)
    else:  # a submit recorded before fingerprints existed: only the time tells
        candidates, matched = list(window), 0
    if len(candidates) == 1:
        task = candidates[0]
        how = "its inputs match the submit" if task.inputs is not None else "the only unknown task of that model then"
        if not valid_task_id(task.id):
            return Decision(
                "ambiguous", message=f"the matching task {shown_id(task.id)} has an id kling-render cannot use"
            )
        return Decision("adopt", task.id, f"found task {task.id} in the provider's task list ({how})")
    if len(candidates) > 1:
        detail = f", {matched} with matching inputs" if matched else ""
        return Decision(
            "ambiguous",
            message=f"{len(candidates)} tasks in the provider's task list could be this submit's{detail}; "
            "cannot tell which",
        )
    waited = asked_at - submitted_at
    if waited < grace:
        return Decision("wait", message=f"not in the provider's task list {waited:.0f}s after the submit")
    return Decision(
        "absent",
        message=f"the provider's task list, asked {waited:.0f}s after the submit, has no task with its inputs: "
        "the submit created nothing",
    )
