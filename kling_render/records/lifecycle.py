"""A step's lifecycle, defined once: its statuses and the named moves between them (SPEC §6).

A paid step (a clip or a still) goes ``pending → submitting → submitted(task id) → done | failed |
unknown``, and back where the rules allow (a failed task replaced, an unknown submit settled by the
task list, a lost clip rendered again). Every change of a step's status is one of the :data:`MOVES`
below; the state store applies them (:meth:`~kling_render.records.state.StateStore.transition`)
and raises :class:`IllegalMove` for any other, so a status cannot be written by hand.

Everything else that speaks of a step's status is derived from this table, never restated:

- the progress event a move emits (:attr:`Rule.event`);
- the run report's outcome for the step (:func:`outcome_of`);
- how the remote claim on the step's key is closed when the step ends (:func:`claim_close`).

A task (what one submit created at the provider) has a lifecycle of its own, kept in the key's
ledger: :data:`TASK_MOVES` says which outcome may follow which, and the ledger enforces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, Literal

__all__ = [
    "MOVES",
    "TASK_MOVES",
    "ClaimClose",
    "IllegalMove",
    "Move",
    "OutcomeStatus",
    "Rule",
    "Status",
    "TaskOutcome",
    "check_task_move",
    "claim_close",
    "outcome_of",
]


class Status(StrEnum):
    """Where a step stands, as the state file records it."""

    PENDING = "pending"  # nothing is running for it; it may be submitted
    SUBMITTING = "submitting"  # a reservation was taken and the POST is going out: a task may exist
    SUBMITTED = "submitted"  # its task id is known: the task runs, or ran and is not fetched yet
    DONE = "done"  # its output is in the cache
    FAILED = "failed"  # it failed this run (why is in the record; a task may still be kept)
    UNKNOWN = "unknown"  # a submit got no usable answer: a paid task may exist, never re-sent blindly


class Move(Enum):
    """Every way a step's status may change. The value names it in messages."""

    CACHED = "cached"  # its output is in the cache (or was pulled from the remote)
    SUBMIT = "submit"  # the account issued a reservation: the paid POST is about to go out
    SUBMITTED = "submitted"  # the POST answered a task id
    LOST = "lost"  # the POST got no usable answer: a paid task may exist
    KEPT_UNKNOWN = "kept-unknown"  # an unknown submit the task list could not settle (yet)
    INTERRUPTED = "interrupted"  # Ctrl-C while the POST was out: as good as lost
    NOTHING_CREATED = "nothing-created"  # the account cannot run tasks: the POST was refused or never sent
    ADOPTED = "adopted"  # the task behind an unknown submit was found (task list, ledger, claim)
    ABSENT = "absent"  # the task list proves an unknown submit created nothing
    FETCHED = "fetched"  # the task's output was downloaded, checked and cached
    FOLLOWED = "followed"  # another machine's task (followed through its claim) gave the output
    REPLACE = "replace"  # its task failed or was unusable: a new one may be submitted, within the cap
    REFETCH = "refetch"  # a known task's output is fetched again (free while the provider keeps it)
    KEEP_TASK = "keep-task"  # the step failed this run, but its task is kept for the next run
    FAIL = "fail"  # the step failed this run
    CANCELLED = "cancelled"  # interrupted: the provider dropped its task before it ran (nothing paid)


OutcomeStatus = Literal["pending", "cached", "done", "failed", "unknown"]
"""A step's outcome in the run report (and the exit code): derived from the move that ended it."""

_ANY: Final = frozenset(Status)
_OPEN: Final = frozenset({Status.PENDING, Status.FAILED, Status.UNKNOWN, Status.DONE})


@dataclass(frozen=True)
class Rule:
    sources: frozenset[Status]  # the statuses the move may start from
    to: Status
    event: str | None  # the progress event it emits (None: the caller says more precisely)
    outcome: OutcomeStatus  # what the run report says of the step after it


MOVES: Final[Mapping[Move, Rule]] = {
    Move.CACHED: Rule(_ANY, Status.DONE, "skipped-cached", "cached"),
    # A done step comes back here only when its output was lost (quarantined, deleted).
    Move.SUBMIT: Rule(_OPEN, Status.SUBMITTING, "submitting", "pending"),
    Move.SUBMITTED: Rule(frozenset({Status.SUBMITTING}), Status.SUBMITTED, "submitted", "pending"),
    Move.LOST: Rule(frozenset({Status.SUBMITTING}), Status.UNKNOWN, "unknown", "unknown"),
    Move.KEPT_UNKNOWN: Rule(frozenset({Status.SUBMITTING, Status.UNKNOWN}), Status.UNKNOWN, "unknown", "unknown"),
    Move.INTERRUPTED: Rule(frozenset({Status.SUBMITTING}), Status.UNKNOWN, None, "unknown"),
    Move.NOTHING_CREATED: Rule(frozenset({Status.SUBMITTING, *_OPEN}), Status.PENDING, None, "pending"),
    Move.ADOPTED: Rule(
        frozenset({Status.SUBMITTING, Status.UNKNOWN, Status.PENDING, Status.FAILED}),
        Status.SUBMITTED,
        "reconciled",
        "pending",
    ),
    Move.ABSENT: Rule(frozenset({Status.SUBMITTING, Status.UNKNOWN}), Status.PENDING, "reconciled", "pending"),
    Move.FETCHED: Rule(frozenset({Status.SUBMITTED}), Status.DONE, "done", "done"),
    Move.FOLLOWED: Rule(frozenset({Status.PENDING, Status.FAILED, Status.UNKNOWN}), Status.DONE, "done", "done"),
    Move.REPLACE: Rule(frozenset({Status.SUBMITTED}), Status.PENDING, "retry", "pending"),
    Move.REFETCH: Rule(frozenset({Status.DONE, Status.FAILED, Status.PENDING}), Status.SUBMITTED, "refetch", "pending"),
    Move.KEEP_TASK: Rule(frozenset({Status.SUBMITTED}), Status.SUBMITTED, "failed", "failed"),
    Move.CANCELLED: Rule(frozenset({Status.SUBMITTED}), Status.PENDING, "cancelled", "pending"),
    # Fails from anywhere but done: a done step's output exists and nothing can fail it.
    Move.FAIL: Rule(_ANY - {Status.DONE}, Status.FAILED, "failed", "failed"),
}


class IllegalMove(RuntimeError):
    """A move from a status its rule does not allow: a bug in kling-render, never a user error."""


def rule_for(move: Move, current: Status) -> Rule:
    """The rule of ``move``, or IllegalMove when the step's ``current`` status does not allow it."""
    rule = MOVES[move]
    if current not in rule.sources:
        raise IllegalMove(f"a step cannot move {move.value!r} from {current.value!r} (to {rule.to.value!r})")
    return rule


def outcome_of(move: Move) -> OutcomeStatus:
    return MOVES[move].outcome


# -- the remote claim, closed from the step's end ---------------------------------------------

ClaimClose = Literal["done", "failed", "released"]


def claim_close(status: Status, *, on_remote: bool, task_open: bool, submitted_any: bool) -> ClaimClose | None:
    """How the claim a run holds on a step's key is closed when the step ends this run, or None
    (it stays active): ``done`` once the output is on the remote (else other runs follow its task
    and push it themselves), ``failed`` when the step failed with no task still running,
    ``released`` when nothing was submitted under it. An unknown submit or a running task keeps
    the claim active, so other machines keep waiting for it instead of paying again."""
    if status is Status.DONE:
        return "done" if on_remote else None
    if status is Status.FAILED:
        return None if task_open else "failed"
    if status is Status.PENDING and not submitted_any:
        return "released"
    return None


# -- a task's own lifecycle (the key's ledger) ---------------------------------------------------


class TaskOutcome(StrEnum):
    """What became of a task (or of a submit that may have created one)."""

    SUBMITTING = "submitting"  # the POST was sent (or about to be); a task may exist
    SUBMITTED = "submitted"  # the task id is known; the task runs, or ran and is not fetched yet
    DONE = "done"  # its output is in the cache
    FAILED = "failed"  # it failed (refunded); ``cause`` says whether the same inputs would fail again
    FAILED_CHARGED = "failed_charged"  # it failed, and the provider may have charged it (fal: a 422)
    UNUSABLE = "unusable"  # it completed (paid) but gave no usable output
    GONE = "gone"  # its output expired before it was fetched (paid)
    ABSENT = "absent"  # the submit created nothing (refused, rejected, or not in the task list): not counted
    ABANDONED = "abandoned"  # an unknown submit the user chose to send again (--resubmit-unknown): counted


_T = TaskOutcome
TASK_MOVES: Final[Mapping[TaskOutcome, frozenset[TaskOutcome]]] = {
    _T.SUBMITTING: frozenset({_T.SUBMITTING, _T.SUBMITTED, _T.ABSENT, _T.ABANDONED}),
    # ABSENT from SUBMITTED: a queued task the provider confirms it dropped before it ran (cancel).
    _T.SUBMITTED: frozenset({_T.SUBMITTED, _T.DONE, _T.FAILED, _T.FAILED_CHARGED, _T.UNUSABLE, _T.GONE, _T.ABSENT}),
    # A done task is fetched again (for free) when its cached output was lost; that may fail.
    _T.DONE: frozenset({_T.DONE, _T.UNUSABLE, _T.GONE}),
    _T.FAILED: frozenset({_T.FAILED}),
    _T.FAILED_CHARGED: frozenset({_T.FAILED_CHARGED}),
    # An unusable result is fetched again for free by the next run, which may then succeed.
    _T.UNUSABLE: frozenset({_T.UNUSABLE, _T.DONE, _T.GONE}),
    _T.GONE: frozenset({_T.GONE}),
    _T.ABSENT: frozenset({_T.ABSENT}),
    _T.ABANDONED: frozenset({_T.ABANDONED}),
}


def check_task_move(current: str, to: str) -> None:
    """Raise IllegalMove unless a task recorded ``current`` may become ``to``."""
    if TaskOutcome(to) not in TASK_MOVES[TaskOutcome(current)]:
        raise IllegalMove(f"a task cannot go from {current!r} to {to!r}")
