"""The account: the one door through which money is spent (SPEC §6).

A paid request is sent only with a :class:`Reservation`, and only :meth:`Account.reserve` makes
one (its constructor takes a seal private to this module; ``Provider.send`` requires a
reservation, so under mypy no other path to a paid send can be written). Before it issues one the
account, in this order:

1. refuses what must not be paid again: the key's lifetime cap of tasks (counted over all runs, and
   over every machine through the remote claim), a permanent failure of the same inputs, a clip the
   remote holds but cannot give, an account that cannot run tasks;
2. holds the step's price against the budget (what this run committed: submitted, less refunded,
   plus submits in flight and unknown ones), and stops submitting when it would pass it;
3. prepares the body (uploads: nothing can be created yet), takes the remote claim on the key, and
   writes the ledger entry and the step's ``submitting`` move in one flush of the state file, so
   a task the POST may create is counted even if this process dies during it.

Everything that changes what was spent goes through it too: a task id answered (:meth:`sent`), a
POST that created nothing (:meth:`nothing_created`) or may have (:meth:`lost`), a failed task
refunded (:meth:`refund`), a paid result that could not be used (:meth:`unusable`), an unknown
submit settled by the task list (:meth:`adopt`, :meth:`absent`).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, final

from kling_render.errors import AccountError, AuthError, BudgetError
from kling_render.jobs import Job, TaskResult
from kling_render.plan.keys import fingerprint
from kling_render.records.ledger import TaskEntry
from kling_render.records.lifecycle import Move, TaskOutcome
from kling_render.records.state import ShotState, StateStore
from kling_render.run.report import RunOptions, RunReport, ShotOutcome
from kling_render.store.remote.spend import RemoteSpend

__all__ = ["ASK_AGAIN", "Account", "ClaimDoor", "Declined", "Purse", "Reservation", "RunView"]

EPSILON = 1e-9
ASK_AGAIN = "change the shot's inputs, bump its `take`, or render with --retry-failed"


class _Seal:
    """Only this module has one: what makes a Reservation the account's."""


_SEAL: Final = _Seal()


@final
class Reservation:
    """Leave to send one paid request: ``job`` with ``body``, recorded in the ledger at ``index``.

    Issued only by :meth:`Account.reserve`. ``use`` hands the body to the provider once: a second
    send under the same reservation is a bug and raises."""

    __slots__ = ("_used", "body", "index", "job")

    def __init__(self, seal: _Seal, job: Job, body: Mapping[str, Any], index: int) -> None:
        if seal is not _SEAL:
            raise TypeError("only the account issues reservations (money.Account.reserve)")
        self.job = job
        self.body = body
        self.index = index
        self._used = False

    def use(self) -> Mapping[str, Any]:
        """The body to POST, once."""
        if self._used:
            raise RuntimeError(f"the reservation for {self.job.shot_id!r} was already used: one POST per reservation")
        self._used = True
        return self.body


Why = Literal["budget", "account", "refused", "elsewhere", "failed"]


@dataclass(frozen=True)
class Declined:
    """No reservation: why (``elsewhere``: another machine holds the key's claim)."""

    why: Why
    message: str = ""


class ClaimDoor(Protocol):
    """The remote's claims, as the account uses them (run/remote_gate.py)."""

    async def claim(self, job: Job, body: Mapping[str, Any]) -> Literal["go", "elsewhere", "stop"]: ...

    async def record(self, job: Job, task_id: str) -> None: ...


class RunView(Protocol):
    """What the account uses of a run (run/context.py ``Run``): its records and its report."""

    options: RunOptions
    state: StateStore
    report: RunReport

    def record(self, job: Job) -> ShotState: ...

    def outcome(self, job: Job) -> ShotOutcome: ...

    def move(self, job: Job, move: Move, *, message: str | None = ..., event: str | None = ...,
             quiet: bool = ..., paid: float | None = ..., **changes: Any) -> ShotState: ...  # fmt: skip

    def fail(self, job: Job, error: str, *, code: str | int | None = None) -> None: ...

    def mark_unknown(self, job: Job, error: str | None, *, move: Move = ...) -> None: ...

    def emit(self, kind: str, job: Job | None = None, **kw: Any) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")  # the reconciliation's clock


@dataclass
class Purse:
    """What a render has committed against its budget: paid or possibly paid (less refunds), plus
    submits in flight. One purse is shared by every account of a render (each provider, each kind
    of step), so the budget is one budget."""

    committed: float = 0.0


class Account:
    """The money of one run (see the module docstring)."""

    def __init__(self, run: RunView, *, charges: bool, purse: Purse | None = None) -> None:
        self.run = run
        self.purse = purse or Purse()
        self.charges = charges  # False for a free provider: no budget, no claims, no cap on lost submits
        self.claims: ClaimDoor | None = None
        self.refusals: dict[str, str] = {}  # key -> why nothing may be submitted for it this run
        self.stopped: str | None = None  # why no step submits again this run (budget, account)
        self._run_tasks: Counter[str] = Counter()  # tasks created this run, by key
        self.unknown_this_run: set[str] = set()  # steps whose submit this run ended unknown
        self.spend: RemoteSpend | None = None  # the project's spend on the remote: one budget for all machines
        self._releases: list[str] = []  # holds to release on the remote before the next hold

    @property
    def budget(self) -> float | None:
        return self.run.options.budget_usd if self.charges else None

    @property
    def committed(self) -> float:
        return self.purse.committed

    # -- decisions ------------------------------------------------------------------------------

    def check_budget(self, to_submit: float) -> None:
        """Before anything is submitted: the steps to submit must fit the budget (exit 3)."""
        budget = self.budget
        if budget is not None and to_submit > budget + EPSILON:
            raise BudgetError(
                f"rendering would cost ${to_submit:.4f}, over the budget of ${budget:.4f}; "
                "raise it (budget.max_usd or --max-cost) or render fewer shots (--only)"
            )

    def refusal(self, job: Job) -> str | None:
        """Why no new task may be submitted for ``job``, or None: the lifetime cap (all runs, all
        machines), a permanent failure of the same inputs, a remote that holds its clip but cannot
        give it."""
        if job.key in self.refusals:
            return self.refusals[job.key]
        options = self.run.options
        cap = options.max_task_attempts
        if options.retry_failed or not self.charges:
            if self._run_tasks[job.key] >= cap:
                return f"{self._run_tasks[job.key]} tasks submitted for it this run (at most {cap})"
            return None
        ledger = self.run.state.ledger(job.key)
        blocked = ledger.blocked
        if blocked is not None:
            code = f" (code {blocked.code})" if blocked.code else ""
            return (
                f"its task {blocked.task_id} failed for good{code}: {blocked.error or 'no reason given'}; "
                f"the same inputs fail the same way, so none is submitted again: {ASK_AGAIN}"
            )
        return self.cap_refusal(job)

    def cap_refusal(self, job: Job, *, remote_attempts: int = 0) -> str | None:
        """Why a new task would break the key's lifetime cap (all runs; with ``remote_attempts``,
        the tasks its claim on the remote counts over every machine), or None."""
        options = self.run.options
        if options.retry_failed:
            return None
        cap = options.max_task_attempts
        local = self.run.state.ledger(job.key).created
        created = max(local, remote_attempts)
        if created < cap:
            return None
        where = (
            "over all machines (its claim on the remote counts them)" if remote_attempts >= local else "over all runs"
        )
        return (
            f"these inputs have created {created} tasks {where}, the cap of {cap} "
            f"(failed and unusable ones count): {ASK_AGAIN} to allow more"
        )

    def paid_this_run(self, job: Job) -> bool:
        """Whether this run created a task for the step's key (a second paid one waits for the next run)."""
        return self._run_tasks[job.key] > 0

    # -- the door -------------------------------------------------------------------------------

    async def reserve(self, job: Job, prepare: Callable[[], Awaitable[Mapping[str, Any]]]) -> Reservation | Declined:
        """A reservation for one paid submit of ``job``, or why not (the step's record says so).
        ``prepare`` makes the body (uploads) once the price is held against the budget."""
        run = self.run
        if self.stopped is not None:
            return Declined("budget" if run.report.budget_stopped else "account", self.stopped)
        reason = self.refusal(job)
        if reason is not None:
            run.fail(job, reason)
            return Declined("refused", reason)
        budget = self.budget
        if budget is not None and self.purse.committed + job.cost_usd > budget + EPSILON:
            message = (
                f"${self.purse.committed:.4f} committed + ${job.cost_usd:.4f} would exceed ${budget:.4f}; "
                "no more submits this run"
            )
            self.stopped = message
            run.report.budget_stopped = True
            run.emit("budget-stop", job, message=message)
            return Declined("budget", message)
        self.purse.committed += job.cost_usd  # held while the body is prepared and the claim taken
        hold = await self._hold_remote(job)
        if isinstance(hold, Declined):
            self.purse.committed -= job.cost_usd
            return hold
        try:
            body = await prepare()  # uploads: nothing can be created yet
        except BaseException as exc:
            self.purse.committed -= job.cost_usd
            self._release(hold)
            if isinstance(exc, AccountError):
                self.account_stop(job, exc)
                return Declined("account", str(exc))
            if not isinstance(exc, Exception):
                raise
            # refused uploads, unreadable files, a provider bug: no POST was made
            run.fail(job, f"submit failed: {exc}")
            return Declined("failed", str(exc))
        if self.claims is not None:
            route = await self.claims.claim(job, body)  # no two machines pay for one key
            if route != "go":
                self.purse.committed -= job.cost_usd
                self._release(hold)
                return Declined("elsewhere" if route == "elsewhere" else "failed")
        # The submit is in the ledger before the POST: if this process dies mid-POST, the task it may
        # have created still counts against the key's cap, and its inputs can be found again.
        now = _now()
        state = run.state
        ledger = state.ledger(job.key)
        open_index = ledger.open_index(job.shot_id)
        if open_index is not None:  # an unknown submit given up on (--resubmit-unknown): still counted
            state.change_task(job.key, open_index, flush=False, outcome=TaskOutcome.ABANDONED)
        index = state.add_task(job.key, TaskEntry(job.shot_id, now, job.cost_usd, hold=hold), flush=False)
        self._run_tasks[job.key] += 1
        record = run.record(job)
        run.move(
            job,
            Move.SUBMIT,
            attempts=record.attempts + 1,
            task_id=None,
            error=None,
            error_code=None,
            submitted_at=now,
            finished_at=None,
            wire=fingerprint(body),
        )
        return Reservation(_SEAL, job, body, index)

    async def _hold_remote(self, job: Job) -> str | Declined | None:
        """Hold the step's price in the project's spend record on the remote (all machines share one
        budget); its hold id, None without a remote budget, or Declined when the budget is spent."""
        budget = self.budget
        if self.spend is None or budget is None or job.cost_usd <= 0:
            return None
        await self.flush_releases()
        hold_id = f"{job.key[:16]}-{uuid.uuid4().hex}"
        if await self.spend.hold(hold_id, job.cost_usd, budget):
            return hold_id
        total = await self.spend.total()
        message = (
            f"the project's spend on the remote is ${total:.4f}; ${job.cost_usd:.4f} more would exceed the "
            f"budget of ${budget:.4f} (every machine rendering this project counts); no more submits this run"
        )
        self.stopped = message
        self.run.report.budget_stopped = True
        self.run.emit("budget-stop", job, message=message)
        return Declined("budget", message)

    def _release(self, hold: str | None) -> None:
        if hold is not None and self.spend is not None:
            self._releases.append(hold)

    async def flush_releases(self) -> None:
        """Release on the remote the holds whose submits cost nothing (before any new hold, and at
        the end of the run). A release that fails is kept for later: a stale hold only over-counts."""
        if self.spend is None:
            return
        while self._releases:
            await self.spend.release(self._releases[0])
            self._releases.pop(0)

    # -- what the POST answered ------------------------------------------------------------------

    async def sent(self, res: Reservation, task_id: str) -> None:
        """The POST answered ``task_id``: paid (until a failure refunds it)."""
        run, job = self.run, res.job
        run.state.change_task(job.key, res.index, flush=False, task_id=task_id, outcome=TaskOutcome.SUBMITTED)
        record = run.record(job)
        run.move(job, Move.SUBMITTED, quiet=True, task_id=task_id, cost_usd=record.cost_usd + job.cost_usd)
        if self.claims is not None:
            await self.claims.record(job, task_id)  # others follow this task instead of paying again
        run.report.submitted_usd += job.cost_usd
        outcome = run.outcome(job)
        outcome.cost_usd += job.cost_usd
        outcome.attempts += 1
        outcome.task_id = task_id
        run.emit("submitted", job, task_id=task_id, cost_usd=job.cost_usd)

    def lost(self, res: Reservation, error: str) -> None:
        """The POST got no usable answer: a paid task may exist; the step is ``unknown``."""
        self.run.report.uncertain_usd += res.job.cost_usd
        self.unknown_this_run.add(res.job.shot_id)
        self.run.mark_unknown(res.job, error, move=Move.LOST)

    def interrupted(self, job: Job) -> None:
        """Ctrl-C while the POST was out."""
        self.run.move(job, Move.INTERRUPTED, error="interrupted while submitting")

    def nothing_created(self, res: Reservation, error: str, *, code: str | int | None = None) -> None:
        """The POST certainly created nothing (refused, rejected): it does not count or cost."""
        job = res.job
        self.purse.committed -= job.cost_usd
        self._run_tasks[job.key] -= 1
        self._release(self.run.state.ledger(job.key).tasks[res.index].hold)
        self.run.state.change_task(job.key, res.index, flush=False, outcome=TaskOutcome.ABSENT)
        self.run.fail(job, error, code=code)

    def account_stop(self, job: Job, exc: AccountError, res: Reservation | None = None) -> None:
        """The account cannot run tasks: the step goes back to pending, and no step submits again
        this run (tasks already running are still polled and recorded). A rejected key (AuthError)
        ends the run with exit 2: re-running as it is cannot help."""
        error = str(exc)
        run = self.run
        run.report.key_rejected |= isinstance(exc, AuthError)
        if res is not None:
            self.purse.committed -= job.cost_usd
            self._run_tasks[job.key] -= 1
            self._release(run.state.ledger(job.key).tasks[res.index].hold)
            run.state.change_task(job.key, res.index, flush=False, outcome=TaskOutcome.ABSENT)
        self.stopped = self.stopped or error
        run.record(job)
        run.move(job, Move.NOTHING_CREATED, message=error, error=error, submitted_at=None)
        run.outcome(job).error = error
        if run.report.account_stopped is None:
            run.report.account_stopped = error
            run.emit("account-stop", job, message=error)

    def account_lost(self, exc: AccountError) -> None:
        """A poll says the key no longer works: nothing else will either."""
        error = str(exc)
        self.run.report.key_rejected |= isinstance(exc, AuthError)
        self.stopped = self.stopped or error
        self.run.report.account_stopped = self.run.report.account_stopped or error

    # -- how a task ended --------------------------------------------------------------------------

    def refund(self, job: Job, index: int, result: TaskResult) -> bool:
        """A failed task: refunded by the provider (or never charged), so it no longer weighs on the
        budget; True. Unless the provider may have charged it (``result.refunded`` False, fal's 422
        after its runner ran): it stays spent, in the budget and the cap; False."""
        run = self.run
        if not result.refunded:
            run.state.change_task(
                job.key, index, flush=False, outcome=TaskOutcome.FAILED_CHARGED, code=result.code,
                cause=result.cause, error=result.error,
            )  # fmt: skip
            run.outcome(job).error_code = result.code
            run.state.note(job.shot_id, error_code=result.code)
            return False
        self._release(run.state.ledger(job.key).tasks[index].hold)
        run.state.change_task(
            job.key, index, flush=False, outcome=TaskOutcome.FAILED, code=result.code, cause=result.cause,
            error=result.error,
        )  # fmt: skip
        self.purse.committed -= job.cost_usd
        run.report.refunded_usd += job.cost_usd
        outcome = run.outcome(job)
        outcome.refunded_usd += job.cost_usd
        outcome.error_code = result.code
        record = run.record(job)
        run.state.note(job.shot_id, refunded_usd=record.refunded_usd + job.cost_usd, error_code=result.code)
        return True

    def unusable(self, job: Job, index: int, problem: str) -> None:
        """A task completed (paid) without a usable output: it counts against the key's cap."""
        self.run.state.change_task(job.key, index, flush=False, outcome=TaskOutcome.UNUSABLE, error=problem)

    def foreign_failure(self, job: Job, index: int, result: TaskResult) -> None:
        """Another machine's task, followed through its claim, failed: recorded in the key's ledger
        (it counts against the cap), nothing refunded here (this run did not pay for it)."""
        outcome = TaskOutcome.FAILED if result.refunded else TaskOutcome.FAILED_CHARGED
        self.run.state.change_task(
            job.key, index, outcome=outcome, code=result.code, cause=result.cause, error=result.error
        )

    def cancelled(self, job: Job, index: int, task_id: str) -> None:
        """Interrupted: the provider dropped a queued task before it ran (fal's cancel answered OK):
        it was never charged, so it counts as never created, and the step is pending again."""
        run = self.run
        self._release(run.state.ledger(job.key).tasks[index].hold)
        run.state.change_task(job.key, index, flush=False, outcome=TaskOutcome.ABSENT)
        self.purse.committed -= job.cost_usd
        self._run_tasks[job.key] -= 1
        run.report.submitted_usd -= job.cost_usd
        outcome = run.outcome(job)
        outcome.cost_usd -= job.cost_usd
        outcome.task_id = None
        record = run.record(job)
        why = f"task {task_id} was cancelled while queued (interrupted): nothing was charged"
        run.move(job, Move.CANCELLED, message=why, task_id=None, error=why, cost_usd=record.cost_usd - job.cost_usd)

    def gone(self, job: Job, index: int) -> None:
        """A task whose output expired before it was fetched (paid)."""
        self.run.state.change_task(job.key, index, flush=False, outcome=TaskOutcome.GONE)

    def fetched(self, job: Job, index: int) -> None:
        self.run.state.change_task(job.key, index, flush=False, outcome=TaskOutcome.DONE)

    # -- an unknown submit settled (task list, ledger, claim) -----------------------------------

    def adopt(self, job: Job, task_id: str, *, in_run: bool, message: str) -> None:
        """The task behind an unknown submit was found: it is polled, never paid again."""
        run = self.run
        state = run.state
        record = run.record(job)
        index = state.ledger(job.key).open_index(job.shot_id)
        if index is None:
            index = state.add_task(job.key, TaskEntry(job.shot_id, record.submitted_at, job.cost_usd), flush=False)
        state.change_task(job.key, index, flush=False, task_id=task_id, outcome=TaskOutcome.SUBMITTED)
        run.move(job, Move.ADOPTED, quiet=True, task_id=task_id, error=None, cost_usd=record.cost_usd + job.cost_usd)
        outcome = run.outcome(job)
        outcome.task_id = task_id
        if in_run:  # paid by this run: no longer merely possible
            run.report.uncertain_usd -= job.cost_usd
            run.report.submitted_usd += job.cost_usd
            outcome.cost_usd += job.cost_usd
            outcome.attempts += 1
        run.emit("reconciled", job, task_id=task_id, message=message)

    def absent(self, job: Job, *, in_run: bool, message: str) -> None:
        """The task list proves an unknown submit created nothing: it may be submitted again."""
        run = self.run
        state = run.state
        index = state.ledger(job.key).open_index(job.shot_id)
        if index is not None:
            self._release(state.ledger(job.key).tasks[index].hold)
            state.change_task(job.key, index, flush=False, outcome=TaskOutcome.ABSENT)
        if in_run:  # the submit this run counted cost nothing
            run.report.uncertain_usd -= job.cost_usd
            self.purse.committed -= job.cost_usd
            self._run_tasks[job.key] -= 1
        text = f"{message}; it may be submitted again"
        run.move(job, Move.ABSENT, message=text, error=text)
