"""The task ledger: every task each shot key has created, over all runs (SPEC §6).

A shot's record in the state file is reset when its key changes; the ledger is kept by key, so a
key that comes back (an edit undone) finds its history again:

- how many tasks the key has created, against the lifetime cap (default 3): failed tasks and
  completed-but-unusable results count too, a submit the task list proved absent does not;
- which tasks were refunded (failed ones: WaveSpeed refunds them) and which were paid;
- whether the key's last task failed for good (a permanent code): then nothing is submitted
  for it again until its inputs change or the user asks (``take``, ``--retry-failed``);
- every task id the project knows, so reconciliation never adopts a task twice.

Entries are appended before the POST that may create their task and never removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from kling_render.jobs import valid_task_id
from kling_render.records.lifecycle import TaskOutcome, check_task_move

DEFAULT_TASK_CAP = 3

# What became of a task: its lifecycle is records/lifecycle.py's TaskOutcome and TASK_MOVES.
OUTCOMES = tuple(o.value for o in TaskOutcome)
FINAL = frozenset(
    {TaskOutcome.DONE, TaskOutcome.FAILED, TaskOutcome.FAILED_CHARGED, TaskOutcome.UNUSABLE, TaskOutcome.GONE}
)
FAILED = frozenset({TaskOutcome.FAILED, TaskOutcome.FAILED_CHARGED})


@dataclass(frozen=True)
class TaskEntry:
    """One task (or possible task) of a shot key."""

    shot: str
    submitted_at: str | None
    cost_usd: float
    task_id: str | None = None
    outcome: str = "submitting"
    code: str | None = None  # the provider's failure code
    cause: str | None = None  # permanent | transient | unclassified, for failed tasks
    error: str | None = None
    hold: str | None = None  # its hold in the project's spend record on the remote (store/remote/spend.py)

    @property
    def counts(self) -> bool:
        """Against the lifetime cap: every task that was or may have been created."""
        return self.outcome != "absent"

    @property
    def refunded(self) -> bool:
        return self.outcome == "failed"

    @property
    def paid(self) -> bool:
        return self.counts and not self.refunded

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> TaskEntry:
        if not isinstance(raw, dict) or not isinstance(raw.get("shot"), str):
            raise ValueError("a ledger entry is not an object with a shot")
        known = {f.name for f in fields(cls)}
        entry = cls(**{k: v for k, v in raw.items() if k in known})
        if entry.outcome not in OUTCOMES:
            raise ValueError(f"unknown ledger outcome {entry.outcome!r}")
        if not isinstance(entry.cost_usd, int | float) or isinstance(entry.cost_usd, bool):
            raise ValueError("a ledger entry's cost is not a number")
        if entry.task_id is not None and not valid_task_id(entry.task_id):
            # Never put it in a URL; the entry still counts (a task may exist behind it).
            outcome = "submitting" if entry.outcome == "submitted" else entry.outcome
            entry = replace(entry, task_id=None, outcome=outcome, error="unusable task id in the state file")
        return entry


@dataclass(frozen=True)
class KeyLedger:
    """The tasks of one shot key, oldest first."""

    tasks: tuple[TaskEntry, ...] = ()

    @property
    def created(self) -> int:
        return sum(1 for t in self.tasks if t.counts)

    @property
    def paid_usd(self) -> float:
        return sum(t.cost_usd for t in self.tasks if t.paid)

    @property
    def refunded_usd(self) -> float:
        return sum(t.cost_usd for t in self.tasks if t.refunded)

    @property
    def blocked(self) -> TaskEntry | None:
        """The key's last finished task when it failed for good (a permanent code), else None."""
        for entry in reversed(self.tasks):
            if entry.outcome in FINAL:
                return entry if entry.outcome in FAILED and entry.cause == "permanent" else None
        return None

    def open_index(self, shot: str) -> int | None:
        """The entry of the shot's current task or submit (submitting/submitted), if any."""
        for index in range(len(self.tasks) - 1, -1, -1):
            entry = self.tasks[index]
            if entry.shot == shot and entry.outcome in ("submitting", "submitted"):
                return index
        return None

    def with_entry(self, entry: TaskEntry) -> KeyLedger:
        return KeyLedger((*self.tasks, entry))

    def with_change(self, index: int, **changes: Any) -> KeyLedger:
        """The ledger with entry ``index`` changed; an outcome may only move as TASK_MOVES allows."""
        tasks = list(self.tasks)
        if "outcome" in changes:
            check_task_move(tasks[index].outcome, changes["outcome"])
        tasks[index] = replace(tasks[index], **changes)
        return KeyLedger(tuple(tasks))

    def to_json(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.tasks]

    @classmethod
    def from_json(cls, raw: object) -> KeyLedger:
        if not isinstance(raw, list):
            raise ValueError("a key's ledger is not a list")
        return cls(tuple(TaskEntry.from_json(item) for item in raw))


def task_ids(ledgers: Iterable[KeyLedger]) -> set[str]:
    return {t.task_id for kl in ledgers for t in kl.tasks if t.task_id}


def seed_from_records(records: Mapping[str, Any]) -> dict[str, KeyLedger]:
    """A ledger for a state file written before it had one (schema 1): each recorded task id."""
    outcomes = {"done": "done", "failed": "failed", "submitted": "submitted"}
    ledgers: dict[str, KeyLedger] = {}
    for shot_id, record in sorted(records.items()):
        if record.task_id:
            entry = TaskEntry(
                shot=shot_id,
                submitted_at=record.submitted_at,
                cost_usd=0.0,  # what it cost is in the shot's record; the ledger only counts it
                task_id=record.task_id,
                outcome=outcomes.get(record.status, "submitted"),
            )
            ledgers[record.key] = ledgers.get(record.key, KeyLedger()).with_entry(entry)
    return ledgers
