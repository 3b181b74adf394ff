"""One run of paid steps against one provider: what every part of the run shares.

The scheduler, the task-end rules, reconciliation, the remote gate and the money door all work on
a :class:`Run`: the steps' jobs, the provider, the state store, the cache, the options, the report
and the event sink. A step's status changes only through :meth:`Run.move`, which applies a move of
the lifecycle table (records/lifecycle.py) to the state file and derives the run report's outcome
and the progress event from it, so the three can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kling_render.jobs import Job
from kling_render.providers.base import Provider
from kling_render.records.lifecycle import Move, Status
from kling_render.records.lockfile import LockEntry, LockFile
from kling_render.records.state import ShotState, StateStore, now_iso
from kling_render.report.progress import Event, EventSink, NullSink
from kling_render.run.fetcher import FetchPool
from kling_render.run.report import RunOptions, RunReport, ShotOutcome
from kling_render.store.cache import ClipCache

if TYPE_CHECKING:
    from kling_render.media.check import CheckedClip
    from kling_render.media.image_check import CheckedImage

__all__ = ["UNKNOWN_HINT", "ClipVerifier", "Run"]

ClipVerifier = Callable[[Path], "CheckedClip | CheckedImage"]
"""Checks a downloaded output. A clip: its structure (media/check.py: every packet read, none
decoded; the one full decode is the stitch's), returning what it found (digest, stream headers,
frames, real duration). A still: decoded in full (media/image_check.py). Raises InvalidClipError
(a DownloadError), DownloadError or FFmpegError otherwise."""

UNKNOWN_HINT = (
    "the submit may have created a paid task; check the provider's dashboard, "
    "then re-run with --resubmit-unknown to submit it again"
)


class Run:
    """The shared state of one run (see the module docstring). Jobs may be added while it runs:
    a step whose inputs are other steps' outputs gets its job once those exist."""

    def __init__(
        self,
        provider: Provider,
        *,
        state: StateStore,
        cache: ClipCache,
        options: RunOptions,
        events: EventSink | None = None,
        lock: LockFile | None = None,
        verify: ClipVerifier,
        total: int = 0,
        report: RunReport | None = None,
        positions: dict[str, int] | None = None,
    ) -> None:
        self.provider = provider
        self.state = state
        self.cache = cache
        self.options = options
        self.events: EventSink = events or NullSink()
        self.lock = lock
        self.verify = verify
        self.jobs: dict[str, Job] = {}
        # Shared by the runs of one render (each provider, each kind of step): one report, one
        # numbering of the steps in the events.
        self.position: dict[str, int] = {} if positions is None else positions
        self.total = total  # steps this run shows in its events (``[k/n]``)
        self.report = RunReport(budget_usd=options.budget_usd) if report is None else report
        self.fetcher = FetchPool()  # downloads and clip checks: never hold a provider slot (fetcher.py)

    # -- jobs ----------------------------------------------------------------------------------

    def add(self, jobs: Iterable[Job]) -> None:
        """Steps whose jobs are known now (their keys too)."""
        for job in jobs:
            if job.shot_id in self.jobs:
                raise ValueError(f"step {job.shot_id!r} twice in one run")
            self.jobs[job.shot_id] = job
            self.position.setdefault(job.shot_id, len(self.position) + 1)
            if job.shot_id not in self.report.outcomes:
                self.report.outcomes[job.shot_id] = ShotOutcome(job.shot_id)
        self.total = max(self.total, len(self.jobs))

    def job(self, shot_id: str) -> Job:
        return self.jobs[shot_id]

    def record(self, job: Job) -> ShotState:
        """The step's record for its current key (a record of another key is reset)."""
        return self.state.ensure(job.shot_id, job.key)

    def outcome(self, job: Job) -> ShotOutcome:
        return self.report.outcomes[job.shot_id]

    # -- events --------------------------------------------------------------------------------

    def emit(self, kind: str, job: Job | None = None, **kw: Any) -> None:
        if job is None:
            event = Event(kind, total=self.total, **kw)
        else:
            event = Event(kind, shot_id=job.shot_id, index=self.position[job.shot_id], total=self.total, **kw)
        try:
            self.events.emit(event)
        except Exception:
            # Progress is best effort: a closed pipe or a broken terminal must never turn a
            # submit into an `unknown` shot or stop a paid task from being recorded.
            self.events = NullSink()

    # -- moves: the one way a step's status changes -----------------------------------------

    def move(
        self,
        job: Job,
        move: Move,
        *,
        message: str | None = None,
        event: str | None = None,
        quiet: bool = False,
        paid: float | None = None,
        **changes: Any,
    ) -> ShotState:
        """Apply ``move`` to the step's record (with ``changes``), set its run outcome from the
        lifecycle table, and emit the move's event (``event`` overrides it; ``quiet``: none) with
        the record's task id and ``paid`` as its cost."""
        self.record(job)  # a step's first move may come before its record exists
        record, rule = self.state.transition(job.shot_id, move, **changes)
        outcome = self.outcome(job)
        outcome.status = rule.outcome
        if rule.outcome in ("failed", "unknown"):
            outcome.error = message
        elif rule.outcome in ("done", "cached", "pending"):
            outcome.error = None
        kind = event or rule.event
        if kind is not None and not quiet:
            self.emit(kind, job, message=message, task_id=record.task_id, cost_usd=paid)
        return record

    def mark_cached(self, job: Job) -> None:
        """The step's output is in the cache (made earlier, by another step of the key, or pulled)."""
        entry = self.cache.get(self.provider.name, job.key)
        assert entry is not None
        record = self.record(job)
        changes: dict[str, Any] = {}
        if record.status != Status.DONE or record.output_sha256 != entry.sha256:
            changes = {"output_sha256": entry.sha256, "error": None, "finished_at": now_iso()}
        self.move(job, Move.CACHED, **changes)
        outcome = self.outcome(job)
        outcome.clip, outcome.task_id = entry.path, entry.task_id
        self.record_lock(job, entry.task_id, entry.sha256, entry.duration, only_if_missing=True)

    def mark_unknown(self, job: Job, error: str | None, *, move: Move = Move.KEPT_UNKNOWN) -> None:
        message = f"{error}; {UNKNOWN_HINT}" if error and UNKNOWN_HINT not in error else error or UNKNOWN_HINT
        self.move(job, move, message=message, error=message)

    def fail(self, job: Job, error: str, *, code: str | int | None = None) -> None:
        """The step failed this run (its record says why)."""
        error_code = None if code is None else str(code)
        self.move(job, Move.FAIL, message=error, error=error, error_code=error_code, finished_at=now_iso())
        outcome = self.outcome(job)
        outcome.error_code = error_code or outcome.error_code

    def keep_task(self, job: Job, error: str) -> None:
        """The step failed this run but keeps its task: the next run polls and fetches it again.
        (A step following another machine's task has none of its own: it simply fails.)"""
        if self.record(job).status is Status.SUBMITTED:
            self.move(job, Move.KEEP_TASK, message=error, error=error)
        else:
            self.fail(job, error)

    def skip(self, name: str, why: str) -> None:
        """A step that never got a job this run (an input it needs was not made): failed, with why."""
        self.position.setdefault(name, len(self.position) + 1)
        outcome = self.report.outcomes.setdefault(name, ShotOutcome(name))
        outcome.status, outcome.error = "failed", why
        self.emit_named("failed", name, message=why)

    def emit_named(self, kind: str, name: str, **kw: Any) -> None:
        """An event of a step known by its name only."""
        try:
            self.events.emit(Event(kind, shot_id=name, index=self.position.get(name, 0), total=self.total, **kw))
        except Exception:
            self.events = NullSink()

    def say_unknown(self, job: Job, message: str) -> None:
        """Unknown this run without a record of ours to change (another machine's claim)."""
        outcome = self.outcome(job)
        outcome.status, outcome.error = "unknown", message
        self.emit("unknown", job, message=message)

    # -- the lock file ----------------------------------------------------------------------------

    def record_lock(
        self, job: Job, task_id: str | None, sha: str, duration: float, *, only_if_missing: bool = False
    ) -> None:
        if self.lock is None:
            return
        if only_if_missing and self.lock.holds(job.shot_id, job.key, sha, job.prompt or None):
            return
        entry = LockEntry.of(job, self.provider.name, task_id, sha, duration)
        self.lock.record(job.shot_id, entry)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for o in self.report.outcomes.values():
            counts[o.status] = counts.get(o.status, 0) + 1
        parts = [f"{n} {s}" for s, n in sorted(counts.items())]
        refunded = f" (${self.report.refunded_usd:.4f} refunded)" if self.report.refunded_usd else ""
        return f"{', '.join(parts)}; spent ${self.report.spent_usd:.4f}{refunded}"
