"""Generating paid outputs (clips, stills) with one provider: the generate step's executor.

Each step with a known key goes ``pending → submitting → submitted(task id) → done | failed |
unknown`` (records/lifecycle.py), each move flushed to the state file before the next, so a run
killed at any point resumes without paying twice:

- a step whose key is cached is never generated (done, $0 this run);
- a ``submitted`` step is polled again, never re-submitted;
- a ``submitting``/``unknown`` step (the POST may have created a paid task) is looked up in the
  provider's task list (reconcile.py), at the start of the run and shortly after a submit ends
  unknown: a task whose inputs match is adopted and polled, a submit the list proves absent may
  be sent again; anything else stays ``unknown`` unless ``resubmit_unknown``;
- every paid submit goes through the account (money.py): the budget, the lifetime cap and the
  remote claim are checked there, and nowhere else;
- a slot is a task at the provider: held from the submit until the task ends, not while an
  unknown submit is looked up or the output downloads and is checked (fetcher.py);
- two steps with one key (rows sharing a shot, identical shots) make one task: the first carries
  the key, the others follow it and use its output.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from kling_render.errors import AccountError, ProviderError, SubmitRejectedError, SubmitUncertainError
from kling_render.jobs import Job, shown_id, valid_task_id
from kling_render.money import Account, Purse, Reservation
from kling_render.records.lifecycle import Move, Status
from kling_render.run.context import Run
from kling_render.run.polling import wait_for
from kling_render.run.reconcile import Reconciler
from kling_render.run.remote_gate import RemoteGate
from kling_render.run.task_end import TaskEnds
from kling_render.run.triage import Action, carriers, classify
from kling_render.store.cache import CachedClip, ClipMeta
from kling_render.store.remote.connect import Remote
from kling_render.store.remote.spend import RemoteSpend

__all__ = ["Generator"]

Step = Literal["submit", "poll", "reconcile", "remote"]


class Generator:
    """The paid steps of one run with one provider (see the module docstring)."""

    def __init__(
        self,
        run: Run,
        *,
        remote: Remote | None = None,
        spend: RemoteSpend | None = None,
        slots: asyncio.Semaphore | None = None,
        purse: Purse | None = None,
    ) -> None:
        self.run = run
        self.account = Account(run, charges=run.provider.charges, purse=purse)
        self.account.spend = spend if run.provider.charges else None
        concurrency = max(1, run.options.concurrency or run.provider.default_concurrency)
        self.slots = slots or asyncio.Semaphore(concurrency)
        self.gate: RemoteGate | None = None
        if remote is not None:
            self.gate = RemoteGate(run, self.account, remote)
            if self.gate.claims_on:
                self.account.claims = self.gate
        self.ends: TaskEnds = self.gate.ends if self.gate is not None else TaskEnds(run, self.account, self._put)
        self.reconciler = Reconciler(run, self.account)
        self._carrying: dict[str, asyncio.Task[None]] = {}  # key -> the step carrying it this run
        self._blocked: dict[str, str] = {}  # step id -> why no task may be submitted for it
        # What the steps whose keys are not known yet (their inputs are other steps' outputs) would
        # cost: counted as spent when the budget is checked at the start.
        self.pending_cost = 0.0

    async def _put(self, job: Job, tmp: Path, meta: ClipMeta, digest: str) -> CachedClip:
        """Into the local cache, in the run's fetch pool (the move syncs the disk and may wait for
        another run's cache lock: never on the event loop)."""
        run = self.run
        return await run.fetcher.call(run.cache.put, run.provider.name, job.key, tmp, meta, sha256=digest)

    # -- the start of a run ------------------------------------------------------------------------

    async def start(self, jobs: Sequence[Job]) -> dict[str, Action]:
        """The steps known at the start: pull and push through the remote, decide what each needs,
        reconcile unknown submits, check the budget. Raises BudgetError before anything is paid."""
        actions, to_submit = await self.triage(jobs)
        self.account.check_budget(to_submit + self.pending_cost)
        self.begin(jobs, to_submit + self.pending_cost)
        return actions

    async def triage(self, jobs: Sequence[Job]) -> tuple[dict[str, Action], float]:
        """What each step known at the start needs (remote pulled and pushed, unknown submits
        reconciled), and what the steps to submit cost. Pays nothing."""
        run, account = self.run, self.account
        run.add(jobs)
        self.orphaned_submits(jobs)
        if self.gate is not None:
            await self.gate.start()  # pull what the remote has, push what only this cache has
        reconciles = run.provider.lists_tasks and run.provider.charges
        actions, blocked = classify(run, account, jobs, resubmit=run.options.resubmit_unknown and not reconciles)
        unknown = [job for job in jobs if actions[job.shot_id] == "unknown"]
        if unknown and reconciles:
            # The task list first: an unknown submit's task is adopted, a proven absence submitted
            # again; only what it cannot settle is left to the --resubmit-unknown override.
            later = await self.reconciler.at_start(unknown)
            actions, blocked = classify(run, account, jobs, resubmit=run.options.resubmit_unknown)
            for shot_id in later:
                if actions[shot_id] == "unknown":
                    actions[shot_id] = "reconcile"
        for moved in run.cache.quarantined:
            for job in jobs:
                if job.key == moved.key:
                    run.emit("quarantined", job, message=moved.message)
        self._blocked.update(blocked)
        return actions, sum(j.cost_usd for j in jobs if actions[j.shot_id] == "submit")

    def begin(self, jobs: Sequence[Job], to_submit: float, *, announce: bool = True) -> None:
        """After the budget check: the cache ready, the steps' records written, the start said."""
        run = self.run
        run.cache.prepare()  # before any submit: a cache that cannot keep outputs stops the run here
        run.cache.clean_temp()
        if announce:
            run.emit("start", message=f"{run.total} shot(s), ${to_submit:.4f} to submit")
        run.state.ensure_all({job.shot_id: job.key for job in jobs})

    def orphaned_submits(self, jobs: Sequence[Job]) -> None:
        """A step left ``submitting`` by a process that stopped during its POST is ``unknown``
        (SPEC §6): a paid task may exist, and only the task list (or --resubmit-unknown) settles it."""
        for job in jobs:
            record = self.run.state.get(job.shot_id)
            if record is not None and record.key == job.key and record.status is Status.SUBMITTING:
                why = record.error or "the process stopped during its submit"
                self.run.move(job, Move.KEPT_UNKNOWN, quiet=True, error=why)

    def launch(self, jobs: Sequence[Job], actions: dict[str, Action]) -> dict[str, asyncio.Task[None]]:
        """Start the known steps; each task ends when its step does."""
        run = self.run
        tasks: dict[str, asyncio.Task[None]] = {}
        followers: list[Job] = []
        for job in jobs:
            action = actions[job.shot_id]
            if action == "cached":
                run.mark_cached(job)
            elif action == "unknown":
                if run.outcome(job).status != "unknown":  # not said by the reconciler
                    run.mark_unknown(job, run.record(job).error)
            elif action == "blocked":
                blocked = run.state.ledger(job.key).blocked
                run.fail(job, self._blocked[job.shot_id], code=blocked.code if blocked else None)
            elif action == "follow":
                followers.append(job)  # once every leader's task exists (a leader may come later)
            elif action == "refetch":
                record = run.record(job)
                run.move(job, Move.REFETCH, message=f"its output is not in the cache: task {record.task_id}'s "
                                                    "output is fetched again (free)")  # fmt: skip
                tasks[job.shot_id] = self._carrying[job.key] = asyncio.create_task(self.step(job, "poll"))
            else:
                step: Step = "poll" if action == "poll" else "reconcile" if action == "reconcile" else "submit"
                tasks[job.shot_id] = self._carrying[job.key] = asyncio.create_task(self.step(job, step))
        for job in followers:
            leader = self._carrying.get(job.key)
            if leader is not None:
                tasks[job.shot_id] = asyncio.create_task(self.follow(job, leader))
            else:  # its key's step is unknown or blocked: nothing renders it this run
                self.follow_nothing(job, jobs, actions)
        return tasks

    async def late(self, job: Job) -> None:
        """A step whose key became known during the run (its inputs are other steps' outputs)."""
        run = self.run
        run.add([job])
        run.state.ensure(job.shot_id, job.key)
        leader = self._carrying.get(job.key)
        if leader is not None:
            await self.follow(job, leader)
            return
        if self.gate is not None:
            await self.gate.fetch_listed(job)
        carried = carriers(run, [*(run.job(sid) for sid in run.jobs), job])
        actions, blocked = classify(run, self.account, [job], resubmit=run.options.resubmit_unknown, carried=carried)
        self._blocked.update(blocked)
        action = actions[job.shot_id]
        if action == "unknown" and run.provider.lists_tasks and run.provider.charges:
            action = "reconcile"
        tasks = self.launch([job], {job.shot_id: action})
        if job.shot_id in tasks:
            await tasks[job.shot_id]

    # -- steps that share a key -----------------------------------------------------------------

    def follow_nothing(self, job: Job, jobs: Sequence[Job], actions: dict[str, Action]) -> None:
        """A step whose key's task is not run this run (the step carrying it is unknown or blocked)."""
        run = self.run
        carrier = next((j for j in jobs if j.key == job.key and actions[j.shot_id] != "follow"), None)
        why = run.outcome(carrier).status if carrier is not None else "not rendered"
        leader = carrier.shot_id if carrier else "another shot"
        run.fail(job, f"waits for {leader} with the same inputs, which is {why}")

    async def follow(self, job: Job, leader: asyncio.Task[None]) -> None:
        """A step with the same key as another of this run: wait for that one, then use its output."""
        run = self.run
        with contextlib.suppress(Exception):
            await asyncio.shield(leader)
        if run.cache.get(run.provider.name, job.key) is not None:
            run.mark_cached(job)
            return
        if not run.report.budget_stopped:
            run.fail(job, "waits for another shot with the same inputs, which did not finish")
        else:
            run.outcome(job).error = "waits for another shot with the same inputs, which did not finish"

    # -- one step ---------------------------------------------------------------------------------

    async def step(self, job: Job, step: Step) -> None:
        await self._step(job, step)
        if self.gate is not None:
            await self.gate.settle(job)  # the claim says how the step ended

    async def _step(self, job: Job, step: Step) -> None:
        run = self.run
        record = run.state.get(job.shot_id)
        task_id = record.task_id if step == "poll" and record is not None else None
        just_now = False
        try:
            while True:
                if step == "remote":  # another run holds the claim: use its task or output, outside a slot
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
                async with self.slots:
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
                    result = await wait_for(run, self.account, self.ends, job, task_id, fresh=step == "submit")
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
            record = run.state.get(job.shot_id)
            if record is not None and record.status is Status.SUBMITTING:
                self.account.interrupted(job)
            raise

    def reconciles(self, job: Job) -> bool:
        """Whether ``job``'s submit just ended unknown and the task list can tell what it created."""
        record = self.run.state.get(job.shot_id)
        return (
            record is not None
            and record.status is Status.UNKNOWN
            and job.shot_id in self.account.unknown_this_run
            and self.run.provider.lists_tasks
            and self.run.provider.charges
        )

    async def submit(self, job: Job) -> str | None:
        """One paid submit of ``job`` through the account; its task id, or None when nothing was
        submitted (budget, cap, refusal, another machine's claim) or the answer was lost."""
        provider = self.run.provider
        res = await self.account.reserve(job, lambda: provider.prepare(job))
        if not isinstance(res, Reservation):
            return None
        try:
            task_id = await provider.send(res)
        except SubmitUncertainError as exc:
            self.account.lost(res, str(exc))
            return None
        except AccountError as exc:  # nothing was created, and no other submit would be either
            self.account.account_stop(job, exc, res)
            return None
        except SubmitRejectedError as exc:  # the server refused these inputs: nothing was created
            self.account.nothing_created(res, f"submit failed: {exc}", code=exc.code)
            return None
        except ProviderError as exc:  # refused (429 after retries), never sent
            self.account.nothing_created(res, f"submit failed: {exc}")
            return None
        except Exception as exc:  # a provider bug: the POST may have gone out, so assume it did
            self.account.lost(res, f"submit raised {type(exc).__name__}: {exc}")
            return None
        if not valid_task_id(task_id):  # a provider bug: never into a URL or a file
            self.account.lost(res, f"the provider answered an unusable task id {shown_id(task_id)}")
            return None
        await self.account.sent(res, task_id)
        return task_id
