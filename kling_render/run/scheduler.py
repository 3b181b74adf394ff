"""The async scheduler of a render (SPEC §6): submit, poll, download, verify, cache; caps and budget.

Every shot goes ``pending → submitting → submitted(task id) → done | failed | unknown``, and
each transition is flushed to the state file before the next step, so a run killed at any
point resumes without paying twice:

- a shot whose key is cached is never generated (done, $0 this run);
- a ``submitted`` shot is polled again, never re-submitted;
- a ``submitting``/``unknown`` shot (the POST may have created a paid task) is looked up in the
  provider's task list (reconcile.py), at the start of every run and shortly after a submit
  ends unknown: a task whose inputs match is adopted and polled, a submit the list proves absent
  (asked at least ``reconcile_grace`` seconds after it) may be sent again; anything else stays
  ``unknown`` unless ``resubmit_unknown``;
- a shot key creates at most ``max_task_attempts`` tasks over its whole life (the ledger in the
  state file, kept by key over all runs): a task that failed transiently, or completed with an
  unusable result, is replaced within that cap; one that failed for good (a permanent code) is
  not replaced while the key is unchanged, unless ``retry_failed``;
- a clip whose length differs from the shot's is kept with a warning (the cut uses its real
  length): it was paid, and a new task would cost again;
- a poll or download that fails for good fails the shot *this run* but keeps its task id,
  so the next run polls and downloads it again; unless the provider answers "not found" for
  a task submitted longer ago than it keeps tasks (WaveSpeed: 7 days): that task is given up
  and the next run submits a new one;
- when the account cannot run tasks (key rejected, no balance) no shot is submitted again this
  run; tasks already running are still polled and recorded.

Money: a task is paid when it is submitted and refunded when it fails. The budget caps what
*this run* commits (submitted, less refunded; an ``unknown`` submit counts against it); it is
checked before the run (the cost of every shot to submit) and before each submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kling_render.errors import (
    AccountError,
    BudgetError,
    ProviderError,
    SubmitRejectedError,
    SubmitUncertainError,
    TaskGoneError,
)
from kling_render.jobs import Job, TaskResult, shown_id, valid_task_id
from kling_render.providers.base import Provider
from kling_render.records.ledger import TaskEntry
from kling_render.records.lockfile import LockEntry, LockFile
from kling_render.records.state import StateStore, now_iso
from kling_render.report.progress import Event, EventSink, NullSink
from kling_render.run.fetcher import FetchPool
from kling_render.run.reconcile import Reconciler, fingerprint
from kling_render.run.report import OutcomeStatus, RunOptions, RunReport, ShotOutcome
from kling_render.run.task_end import TaskEnds
from kling_render.run.triage import Action, classify, submit_refusal
from kling_render.store.cache import ClipCache

if TYPE_CHECKING:
    from kling_render.run.remote_gate import RemoteGate
    from kling_render.store.remote.connect import Remote

__all__ = ["OutcomeStatus", "RunOptions", "RunReport", "ShotOutcome", "default_verify", "execute", "run"]

ClipVerifier = Callable[[Path], tuple[float, dict[str, Any] | None]]
"""Checks a downloaded clip decodes as video; returns its measured duration and its stream
headers as JSON (kept in the cache sidecar, so a stitch needs no probe); raises FFmpegError
otherwise."""

EPSILON = 1e-9
_UNKNOWN_HINT = (
    "the submit may have created a paid task; check the provider's dashboard, "
    "then re-run with --resubmit-unknown to submit it again"
)


def default_verify(path: Path) -> tuple[float, dict[str, Any] | None]:
    from kling_render.media.probe import check_clip

    check = check_clip(path)
    return check.duration, check.headers.to_json()


Step = Literal["submit", "poll", "reconcile", "remote"]


class _Run:
    def __init__(
        self,
        jobs: Sequence[Job],
        provider: Provider,
        *,
        state: StateStore,
        cache: ClipCache,
        options: RunOptions,
        events: EventSink,
        lock: LockFile | None,
        verify: ClipVerifier,
        remote: Remote | None = None,
    ) -> None:
        ids = [j.shot_id for j in jobs]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate shot ids in one run")
        self.jobs = list(jobs)
        self.provider = provider
        self.state = state
        self.cache = cache
        self.options = options
        self.events = events
        self.lock = lock
        self.verify = verify
        self.position = {j.shot_id: n for n, j in enumerate(self.jobs, 1)}
        self.report = RunReport(
            outcomes={j.shot_id: ShotOutcome(j.shot_id) for j in self.jobs}, budget_usd=options.budget_usd
        )
        self.committed = 0.0  # paid or possibly paid by this run's submits (less refunds), plus submits in flight
        self.stop_submitting = False
        self.run_tasks: Counter[str] = Counter()  # tasks created this run, by shot key
        self.blocked: dict[str, str] = {}  # shot id -> why no task may be submitted for it
        self.unknown_this_run: set[str] = set()  # shots whose submit this run ended unknown
        self.reconciler = Reconciler(self)
        self.ends = TaskEnds(self)
        self.fetcher = FetchPool()  # downloads and clip checks: never hold a slot (fetcher.py)
        self.gate = None if remote is None else _gate(self, remote)  # the shared remote (remote/gate.py)

    # -- events ------------------------------------------------------------------------------

    def emit(self, kind: str, job: Job | None = None, **kw: Any) -> None:
        if job is None:
            event = Event(kind, total=len(self.jobs), **kw)
        else:
            event = Event(
                kind, shot_id=job.shot_id, index=self.position[job.shot_id], total=len(self.jobs), **kw
            )
        try:
            self.events.emit(event)
        except Exception:
            # Progress is best effort: a closed pipe or a broken terminal must never turn a
            # submit into an `unknown` shot or stop a paid task from being recorded.
            self.events = NullSink()

    # -- planning ----------------------------------------------------------------------------

    def classify(self, *, resubmit: bool) -> dict[str, Action]:
        """What to do with each shot (triage.py), decided without writing state."""
        return classify(self, resubmit=resubmit)

    def submit_refusal(self, job: Job) -> str | None:
        """Why no new task may be submitted for ``job``, or None (triage.py)."""
        return submit_refusal(self, job)

    # -- the run -----------------------------------------------------------------------------

    async def main(self) -> RunReport:
        if self.gate is not None:
            await self.gate.start()  # pull what the remote has, push what only this cache has
        reconciles = self.provider.lists_tasks and self.provider.charges
        actions = self.classify(resubmit=self.options.resubmit_unknown and not reconciles)
        unknown = [job for job in self.jobs if actions[job.shot_id] == "unknown"]
        if unknown and reconciles:
            # The task list first: an unknown submit's task is adopted, a proven absence submitted
            # again; only what it cannot settle is left to the --resubmit-unknown override.
            later = await self.reconciler.at_start(unknown)
            actions = self.classify(resubmit=self.options.resubmit_unknown)
            for shot_id in later:
                if actions[shot_id] == "unknown":
                    actions[shot_id] = "reconcile"
        for moved in self.cache.quarantined:
            for job in self.jobs:
                if job.key == moved.key:
                    self.emit("quarantined", job, message=moved.message)
        to_submit = sum(j.cost_usd for j in self.jobs if actions[j.shot_id] == "submit")
        budget = self.options.budget_usd
        if budget is not None and to_submit > budget + EPSILON:
            raise BudgetError(
                f"rendering would cost ${to_submit:.4f}, over the budget of ${budget:.4f}; "
                "raise it (budget.max_usd or --max-cost) or render fewer shots (--only)"
            )
        self.cache.prepare()  # before any submit: a cache that cannot keep clips stops the run here
        self.cache.clean_temp()
        self.emit("start", message=f"{len(self.jobs)} shot(s), ${to_submit:.4f} to submit")
        tasks: dict[str, asyncio.Task[None]] = {}
        concurrency = max(1, self.options.concurrency or self.provider.default_concurrency)
        sem = asyncio.Semaphore(concurrency)
        self.state.ensure_all({job.shot_id: job.key for job in self.jobs})
        followers: list[Job] = []
        for job in self.jobs:
            action = actions[job.shot_id]
            if action == "cached":
                self.mark_cached(job)
            elif action == "unknown":
                if self.report.outcomes[job.shot_id].status != "unknown":  # not said by the reconciler
                    self.mark_unknown(job, self.state.ensure(job.shot_id, job.key).error)
            elif action == "blocked":
                blocked = self.state.ledger(job.key).blocked
                self.fail(job, self.blocked[job.shot_id], code=blocked.code if blocked else None)
            elif action == "follow":
                followers.append(job)  # once every leader's task exists (a leader may come later)
            else:
                step: Step = "poll" if action == "poll" else "reconcile" if action == "reconcile" else "submit"
                tasks[job.shot_id] = asyncio.create_task(self.shot(job, step, sem))
        for job in followers:
            leader = next((t for sid, t in tasks.items() if self._job(sid).key == job.key), None)
            if leader is not None:
                tasks[job.shot_id] = asyncio.create_task(self.follow(job, leader))
            else:  # its key's shot is unknown or blocked: nothing renders it this run
                self.follow_nothing(job, actions)
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise
        finally:
            self.fetcher.close()
            self.emit("finish", message=self.summary())
        return self.report

    def _job(self, shot_id: str) -> Job:
        return self.jobs[self.position[shot_id] - 1]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for o in self.report.outcomes.values():
            counts[o.status] = counts.get(o.status, 0) + 1
        parts = [f"{n} {s}" for s, n in sorted(counts.items())]
        refunded = f" (${self.report.refunded_usd:.4f} refunded)" if self.report.refunded_usd else ""
        return f"{', '.join(parts)}; spent ${self.report.spent_usd:.4f}{refunded}"

    def mark_cached(self, job: Job) -> None:
        entry = self.cache.get(self.provider.name, job.key)
        assert entry is not None
        record = self.state.ensure(job.shot_id, job.key)
        if record.status != "done" or record.output_sha256 != entry.sha256:
            self.state.update(
                job.shot_id, status="done", output_sha256=entry.sha256, error=None, finished_at=now_iso()
            )
        outcome = self.report.outcomes[job.shot_id]
        outcome.status, outcome.clip, outcome.task_id = "cached", entry.path, entry.task_id
        self.record_lock(job, entry.task_id, entry.sha256, entry.duration, only_if_missing=True)
        self.emit("skipped-cached", job)

    def mark_unknown(self, job: Job, error: str | None) -> None:
        message = (
            f"{error}; {_UNKNOWN_HINT}" if error and _UNKNOWN_HINT not in error else error or _UNKNOWN_HINT
        )
        self.state.update(job.shot_id, status="unknown", error=message)
        outcome = self.report.outcomes[job.shot_id]
        outcome.status, outcome.error = "unknown", message
        self.emit("unknown", job, message=message)

    def record_lock(
        self, job: Job, task_id: str | None, sha: str, duration: float, *, only_if_missing: bool = False
    ) -> None:
        if self.lock is None:
            return
        if only_if_missing and self.lock.holds(job.shot_id, job.key, sha, job.prompt or None):
            return
        # cost_usd is the clip's price, not this run's spend (retries live in the state file),
        # so re-rendering the same clip gives the same lock file.
        fields = job.extra.get("fields")
        entry = LockEntry(
            job.key,
            job.model,
            self.provider.name,
            task_id,
            sha,
            duration,
            job.cost_usd,
            fields=dict(fields) if isinstance(fields, dict) else None,
            prompt=job.prompt or None,
        )
        self.lock.record(job.shot_id, entry)

    def follow_nothing(self, job: Job, actions: dict[str, Action]) -> None:
        """A shot whose key's task is not run this run (the shot carrying it is unknown or blocked)."""
        carrier = next((j for j in self.jobs if j.key == job.key and actions[j.shot_id] != "follow"), None)
        why = self.report.outcomes[carrier.shot_id].status if carrier is not None else "not rendered"
        outcome = self.report.outcomes[job.shot_id]
        outcome.status = "failed"
        leader = carrier.shot_id if carrier else "another shot"
        outcome.error = f"waits for {leader} with the same inputs, which is {why}"
        self.state.update(job.shot_id, status="failed", error=outcome.error)
        self.emit("failed", job, message=outcome.error)

    async def follow(self, job: Job, leader: asyncio.Task[None]) -> None:
        """A shot with the same key as another of this run: wait for that one, then use its clip."""
        with contextlib.suppress(Exception):
            await asyncio.shield(leader)
        if self.cache.get(self.provider.name, job.key) is not None:
            self.mark_cached(job)
            return
        outcome = self.report.outcomes[job.shot_id]
        outcome.error = "waits for another shot with the same inputs, which did not finish"
        if not self.report.budget_stopped:
            outcome.status = "failed"
            self.state.update(job.shot_id, status="failed", error=outcome.error)
            self.emit("failed", job, message=outcome.error)

    async def shot(self, job: Job, step: Step, sem: asyncio.Semaphore) -> None:
        await self._shot(job, step, sem)
        if self.gate is not None:
            await self.gate.settle(job)  # the claim says how the shot ended

    async def _shot(self, job: Job, step: Step, sem: asyncio.Semaphore) -> None:
        # A slot is a task at the provider: held from submit until the task ends, not while an
        # unknown submit is looked up or the clip downloads and is verified (in the fetch pool,
        # fetcher.py), so the next shot's task starts meanwhile.
        record = self.state.get(job.shot_id)
        task_id = record.task_id if step == "poll" and record is not None else None
        just_now = False
        try:
            while True:
                if step == "remote":  # another run holds the claim: use its task or clip, outside a slot
                    assert self.gate is not None
                    if not await self.gate.elsewhere(job):
                        return
                    step = "submit"
                if step == "poll" and self.gate is not None:
                    await self.gate.own_task(job, task_id)
                if step == "reconcile":
                    found = await self.reconciler.in_run(job, just_now=just_now)
                    if found is None:
                        return
                    step, task_id = ("poll", found) if found else ("submit", None)
                async with sem:
                    if step == "submit":
                        task_id = await self.submit(job)
                        if task_id is None:
                            if self.reconciles(job):
                                step, just_now = "reconcile", True
                                continue
                            if self.gate is not None and self.gate.handed_off(job):
                                step = "remote"
                                continue
                            return
                    assert task_id is not None
                    result = await self.wait_for(job, task_id, fresh=step == "submit")
                    if result is None:
                        return
                    if not (result.completed and result.output_url):
                        if result.failed:
                            end = self.ends.failed(job, task_id, result)
                        else:
                            end = self.ends.unusable(job, task_id, result.error or "completed without an output")
                        if end != "retry":
                            return
                        step = "submit"
                        continue
                if await self.ends.fetch(job, task_id, result.output_url) != "retry":
                    return
                step = "submit"
        except asyncio.CancelledError:
            record = self.state.get(job.shot_id)
            if record is not None and record.status == "submitting":
                self.state.update(job.shot_id, status="unknown", error="interrupted while submitting")
            raise

    def reconciles(self, job: Job) -> bool:
        """Whether ``job``'s submit just ended unknown and the task list can tell what it created."""
        record = self.state.get(job.shot_id)
        return (
            record is not None
            and record.status == "unknown"
            and job.shot_id in self.unknown_this_run
            and self.provider.lists_tasks
            and self.provider.charges
        )

    async def submit(self, job: Job) -> str | None:
        """Submit a new task for ``job``; None when it was not submitted (budget, cap, refusal, uncertain)."""
        outcome = self.report.outcomes[job.shot_id]
        budget = self.options.budget_usd
        if self.stop_submitting:
            return None
        reason = self.submit_refusal(job)
        if reason is not None:
            self.fail(job, reason)
            return None
        if budget is not None and self.committed + job.cost_usd > budget + EPSILON:
            self.stop_submitting = self.report.budget_stopped = True
            self.emit(
                "budget-stop",
                job,
                message=f"${self.committed:.4f} committed + ${job.cost_usd:.4f} would exceed ${budget:.4f}; "
                "no more submits this run",
            )
            return None
        self.committed += job.cost_usd
        try:
            body = await self.provider.prepare(job)  # uploads: nothing can be created yet
        except AccountError as exc:
            self.committed -= job.cost_usd
            self.account_stop(job, str(exc))
            return None
        except Exception as exc:  # refused uploads, unreadable files, a provider bug: no POST was made
            self.committed -= job.cost_usd
            self.fail(job, f"submit failed: {exc}")
            return None
        if self.gate is not None and await self.gate.claim(job, body) != "go":  # no two machines pay for one shot
            self.committed -= job.cost_usd
            return None
        # The submit is in the ledger before the POST: if this process dies mid-POST, the task it may
        # have created still counts against the key's cap, and its inputs can be found again.
        now = datetime.now(UTC).isoformat(timespec="milliseconds")  # the reconciliation's clock
        ledger = self.state.ledger(job.key)
        open_index = ledger.open_index(job.shot_id)
        if open_index is not None:  # an unknown submit given up on (--resubmit-unknown): still counted
            self.state.change_task(job.key, open_index, flush=False, outcome="abandoned")
        index = self.state.add_task(job.key, TaskEntry(job.shot_id, now, job.cost_usd), flush=False)
        self.run_tasks[job.key] += 1
        record = self.state.get(job.shot_id)
        assert record is not None
        self.state.update(
            job.shot_id,
            status="submitting",
            attempts=record.attempts + 1,
            task_id=None,
            error=None,
            error_code=None,
            submitted_at=now,
            finished_at=None,
            wire=fingerprint(body),
        )
        self.emit("submitting", job)
        try:
            task_id = await self.provider.send(job, body)
        except SubmitUncertainError as exc:
            self.report.uncertain_usd += job.cost_usd
            self.unknown_this_run.add(job.shot_id)
            self.mark_unknown(job, str(exc))
            return None
        except AccountError as exc:  # nothing was created, and no other submit would be either
            self.nothing_created(job, index)
            self.account_stop(job, str(exc))
            return None
        except SubmitRejectedError as exc:  # the server refused these inputs: nothing was created
            self.nothing_created(job, index)
            self.fail(job, f"submit failed: {exc}", code=exc.code)
            return None
        except ProviderError as exc:  # refused (429 after retries), never sent
            self.nothing_created(job, index)
            self.fail(job, f"submit failed: {exc}")
            return None
        except Exception as exc:  # a provider bug: the POST may have gone out, so assume it did
            self.report.uncertain_usd += job.cost_usd
            self.unknown_this_run.add(job.shot_id)
            self.mark_unknown(job, f"submit raised {type(exc).__name__}: {exc}")
            return None
        if not valid_task_id(task_id):  # a provider bug: never into a URL or a file
            self.report.uncertain_usd += job.cost_usd
            self.unknown_this_run.add(job.shot_id)
            self.mark_unknown(job, f"the provider answered an unusable task id {shown_id(task_id)}")
            return None
        self.state.change_task(job.key, index, flush=False, task_id=task_id, outcome="submitted")
        self.state.update(
            job.shot_id, status="submitted", task_id=task_id, cost_usd=record.cost_usd + job.cost_usd
        )
        if self.gate is not None:
            await self.gate.record(job, task_id)  # others follow this task instead of paying again
        self.report.submitted_usd += job.cost_usd
        outcome.cost_usd += job.cost_usd
        outcome.attempts += 1
        outcome.task_id = task_id
        self.emit("submitted", job, task_id=task_id, cost_usd=job.cost_usd)
        return task_id

    def nothing_created(self, job: Job, index: int) -> None:
        """The submit at ledger ``index`` certainly created no task: it does not count or cost."""
        self.committed -= job.cost_usd
        self.run_tasks[job.key] -= 1
        self.state.change_task(job.key, index, flush=False, outcome="absent")

    def account_stop(self, job: Job, error: str) -> None:
        """The account cannot run tasks: this shot goes back to pending, and no shot submits again
        this run (tasks already running are still polled and recorded)."""
        self.stop_submitting = True
        self.state.update(job.shot_id, status="pending", error=error, submitted_at=None)
        outcome = self.report.outcomes[job.shot_id]
        outcome.status, outcome.error = "pending", error
        if self.report.account_stopped is None:
            self.report.account_stopped = error
            self.emit("account-stop", job, message=error)

    def fail(self, job: Job, error: str, *, keep_task: bool = False, code: str | int | None = None) -> None:
        """The shot failed this run; with ``keep_task`` it stays ``submitted`` for the next run."""
        error_code = None if code is None else str(code)
        if keep_task:
            self.state.update(job.shot_id, error=error)
        else:
            self.state.update(
                job.shot_id, status="failed", error=error, error_code=error_code, finished_at=now_iso()
            )
        outcome = self.report.outcomes[job.shot_id]
        outcome.status, outcome.error = "failed", error
        outcome.error_code = error_code or outcome.error_code
        self.emit("failed", job, message=error)

    async def wait_for(self, job: Job, task_id: str, *, fresh: bool) -> TaskResult | None:
        """Poll ``task_id`` until it ends; None when the shot stops here (poll failed, timed out).

        Polls fall on a fixed grid from the start (no drift from the time each poll takes); a task
        just submitted is first polled one interval later, a resumed one at once.
        """
        loop = asyncio.get_running_loop()
        interval = self.options.poll_interval
        start = loop.time()
        timeout = self.options.task_timeout
        deadline = None if timeout is None else start + timeout
        last_status: str | None = None
        n = 1 if fresh else 0
        while True:
            delay = start + n * interval - loop.time()
            if delay > 0:
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    if last_status == "queued":  # interrupted: a request that never ran is dropped
                        await self.cancel_queued(job, task_id)
                    raise
            n += 1
            try:
                result = await self.provider.poll(task_id)
            except ProviderError as exc:
                if isinstance(exc, AccountError):  # the key no longer works: nothing else will either
                    self.stop_submitting = True
                    self.report.account_stopped = self.report.account_stopped or str(exc)
                if not (isinstance(exc, TaskGoneError) and self.ends.gone_for_good(job, task_id, str(exc))):
                    problem = f"polling task {task_id} failed: {exc}; the next run polls it again"
                    self.fail(job, problem, keep_task=True)
                return None
            if result.status != last_status:
                last_status = result.status
                self.emit("polling", job, task_id=task_id, status=result.status)
            if result.terminal:
                return result
            if deadline is not None and loop.time() >= deadline:
                self.fail(
                    job,
                    f"task {task_id} still {result.status} after {timeout:g}s; the next run polls it again",
                    keep_task=True,
                )
                return None
            n = max(n, math.ceil((loop.time() - start) / interval))  # a slow poll skips grid points

    async def cancel_queued(self, job: Job, task_id: str) -> None:
        """On an interrupt, ask the provider to drop a task last seen queued (best effort, 5 s): when
        it confirms the task never ran, the task counts as never created and the shot is pending
        again; otherwise the task stays submitted and the next run polls it (paid work kept)."""
        try:
            async with asyncio.timeout(5.0):
                removed = await self.provider.cancel(task_id)
        except Exception:  # best effort: the task stays submitted
            return
        if not removed:
            return
        index = self.ends.ledger_index(job, task_id)
        self.state.change_task(job.key, index, flush=False, outcome="absent")
        why = f"task {task_id} was cancelled while queued (interrupted): nothing was charged"
        self.state.update(job.shot_id, status="pending", task_id=None, error=why)
        self.report.submitted_usd -= job.cost_usd
        outcome = self.report.outcomes[job.shot_id]
        outcome.cost_usd -= job.cost_usd
        outcome.status, outcome.task_id = "pending", None

async def execute(
    jobs: Sequence[Job],
    provider: Provider,
    *,
    state: StateStore,
    cache: ClipCache,
    options: RunOptions | None = None,
    events: EventSink | None = None,
    lock: LockFile | None = None,
    verify: ClipVerifier = default_verify,
    remote: Remote | None = None,
) -> RunReport:
    """Render ``jobs`` (state must be open). Raises BudgetError before submitting anything when
    the shots to submit cost more than the budget. Does not close the provider."""
    run_ = _Run(
        jobs, provider, state=state, cache=cache, options=options or RunOptions(),
        events=events or NullSink(), lock=lock, verify=verify, remote=remote,
    )  # fmt: skip
    return await run_.main()


def run(
    jobs: Sequence[Job],
    provider: Provider,
    *,
    state: StateStore,
    cache: ClipCache,
    options: RunOptions | None = None,
    events: EventSink | None = None,
    lock: LockFile | None = None,
    verify: ClipVerifier = default_verify,
    remote: Remote | None = None,
) -> RunReport:
    """:func:`execute` in a fresh event loop; closes the provider. Ctrl-C stops the run with every
    transition already flushed and returns the report with ``interrupted`` (exit code 130)."""
    run_ = _Run(
        jobs, provider, state=state, cache=cache, options=options or RunOptions(),
        events=events or NullSink(), lock=lock, verify=verify, remote=remote,
    )  # fmt: skip

    async def main() -> RunReport:
        try:
            return await run_.main()
        finally:
            await provider.aclose()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        run_.report.interrupted = True
        return run_.report


def _gate(run_: _Run, remote: Remote) -> RemoteGate:
    from kling_render.run.remote_gate import RemoteGate

    return RemoteGate(run_, remote)
