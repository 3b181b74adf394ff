"""What a render is asked to do (RunOptions) and what it did (RunReport, one ShotOutcome per shot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kling_render.errors import EXIT_INTERRUPTED
from kling_render.records.ledger import DEFAULT_TASK_CAP
from kling_render.records.lifecycle import OutcomeStatus

RECONCILE_GRACE = 60.0  # seconds after a submit before the task list may prove it created nothing


@dataclass(frozen=True)
class RunOptions:
    budget_usd: float | None = None
    concurrency: int | None = None  # None: the provider's default
    poll_interval: float = 5.0
    # Tasks a shot key may create over its whole life, all runs (failed and unusable ones included);
    # with ``retry_failed``, tasks this run may create for it.
    max_task_attempts: int = DEFAULT_TASK_CAP
    retry_failed: bool = False  # submit shots that failed for good or used up their cap
    resubmit_unknown: bool = False
    duration_tolerance: float = 0.5  # seconds a clip may differ from the shot before a warning
    task_timeout: float | None = 3600.0  # stop polling a task after this long (it stays submitted)
    download_attempts: int = 2  # fetch+verify tries per completed task
    # Seconds after a submit before a task list without it proves the submit created nothing (a
    # new task may take a moment to be listed). Tests shorten it; the product keeps 60 s.
    reconcile_grace: float = RECONCILE_GRACE


@dataclass
class ShotOutcome:
    """What happened to one shot in this run; ``cost_usd`` is what this run's tasks cost when
    submitted, ``refunded_usd`` the part refunded for failed ones."""

    shot_id: str
    status: OutcomeStatus = "pending"
    cost_usd: float = 0.0
    refunded_usd: float = 0.0
    attempts: int = 0  # tasks submitted this run
    task_id: str | None = None
    error: str | None = None
    error_code: str | None = None
    warning: str | None = None  # e.g. a clip whose length differs from the shot's (kept)
    clip: Any = None  # Path of the cached clip

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.shot_id,
            "status": self.status,
            "cost_usd": round(self.cost_usd, 4),
            "refunded_usd": round(self.refunded_usd, 4),
            "attempts": self.attempts,
            "task_id": self.task_id,
            "error": self.error,
            "error_code": self.error_code,
            "warning": self.warning,
            "clip": None if self.clip is None else str(self.clip),
        }


@dataclass
class RunReport:
    outcomes: dict[str, ShotOutcome] = field(default_factory=dict)
    submitted_usd: float = 0.0  # tasks this run submitted (each is paid when submitted)
    refunded_usd: float = 0.0  # the part of them that failed (refunded by the provider)
    uncertain_usd: float = 0.0  # submits that may have created a task (now ``unknown``)
    budget_usd: float | None = None
    budget_stopped: bool = False
    account_stopped: str | None = None  # why the account cannot run tasks: no more submits this run
    key_rejected: bool = False  # the provider rejected the API key (401/403): exit 2, fix the key
    interrupted: bool = False

    @property
    def spent_usd(self) -> float:
        """What this run spent: tasks submitted, less the refunded failed ones."""
        return self.submitted_usd - self.refunded_usd

    @property
    def exit_code(self) -> int:
        """130 interrupted, 3 budget stop, 2 the API key was rejected (a usage problem: re-running
        as it is cannot help), 1 a shot failed or is unknown, else 0 (SPEC §2)."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.budget_stopped:
            return 3
        if self.key_rejected:
            return 2
        if any(o.status in ("failed", "unknown", "pending") for o in self.outcomes.values()):
            return 1
        return 0

    def by_status(self, status: str) -> list[str]:
        return [sid for sid, o in self.outcomes.items() if o.status == status]

    def to_json(self) -> dict[str, Any]:
        return {
            "shots": [o.to_json() for o in self.outcomes.values()],
            "spent_usd": round(self.spent_usd, 4),
            "submitted_usd": round(self.submitted_usd, 4),
            "refunded_usd": round(self.refunded_usd, 4),
            "uncertain_usd": round(self.uncertain_usd, 4),
            "budget_usd": self.budget_usd,
            "budget_stopped": self.budget_stopped,
            "account_stopped": self.account_stopped,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
        }
