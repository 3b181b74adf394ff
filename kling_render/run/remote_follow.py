"""Another run holds a shot's claim (remote/gate.py hands the shot here, outside a task slot): use
what that run makes, never submit.

- the key's clip is on the remote: pull it ($0);
- the claim names a task: poll it and download its clip (pushing it, for the others); a task that
  ended without a clip is replaced by its holder, or, when the holder is gone, by this run through
  the claim (within the cap of paid tasks, counted over every machine);
- the holder is submitting: wait, looking again every poll interval;
- the holder died before recording a task id: like an ``unknown`` submit, its task is looked for in
  the provider's task list (by the fingerprint of the body the claim records, around when the claim
  was last written in the store's time); only a proven absence lets this run take the claim over
  and submit;
- a followed task the provider no longer knows, older than it keeps tasks (by the store's time of
  its claim), is given up as a task of this machine would be (task_end.gone_for_good): the shot
  fails this run and the claim is closed ``failed``, so the next run (here or elsewhere) pays a
  replacement within the cap instead of following it forever.

Claims are judged by the store's time (Claims.judge / holder_gone), never by a writer's stamp.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from kling_render.errors import ProviderError, RemoteError, RemoteVersionError
from kling_render.jobs import Job, TaskResult
from kling_render.money import ASK_AGAIN, Account
from kling_render.run.context import Run
from kling_render.run.polling import wait_for
from kling_render.run.reconcile import WINDOW_AFTER, WINDOW_BEFORE, decide
from kling_render.run.task_end import TaskEnds
from kling_render.store.cache import CachedClip
from kling_render.store.remote.claims import Claim, Lost, Owner, Won, age
from kling_render.store.remote.clips import RemoteClip, RemoteClips
from kling_render.store.remote.connect import Remote

__all__ = ["Follower", "GateView"]


class GateView(Protocol):
    """What a follower uses of the remote gate (run/remote_gate.py) that made it."""

    run: Run
    account: Account
    ends: TaskEnds
    remote: Remote
    provider: str
    held: dict[str, Claim]
    ended: dict[str, dict[str, TaskResult | None]]
    on_remote: set[str]
    followed: dict[str, float]

    @property
    def owner(self) -> Owner: ...

    async def pull(self, job: Job, clip: RemoteClip | None = None) -> CachedClip | None: ...

    def area(self, job: Job) -> RemoteClips: ...

    def over_cap(self, job: Job, claim: Claim) -> str | None: ...

    def refused_message(self, claim: Claim) -> str: ...


MIN_WAIT = 0.5  # seconds between looks at a claim held by a run that is submitting


class Follower:
    """The shots of one run whose claim another run holds (see the module docstring)."""

    def __init__(self, gate: GateView) -> None:
        self.gate = gate
        self.told: dict[str, str] = {}  # shot id -> the last following/waiting event, said once

    @property
    def run(self) -> Run:
        return self.gate.run

    @property
    def remote(self) -> Remote:
        return self.gate.remote

    @property
    def provider(self) -> str:
        return self.gate.provider

    @property
    def owner(self) -> Owner:
        return self.gate.owner

    async def elsewhere(self, job: Job) -> bool:
        """Another run holds the key's claim: use what it makes. True when this run should submit
        after all (the claim is free, or its holder is gone and its task ended without a clip);
        False when the shot is settled for this run (done, failed, unknown). Never submits."""
        run = self.run
        loop = asyncio.get_running_loop()
        timeout = run.options.task_timeout
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                settled = await self._look(job)
                if settled is not None:
                    return settled
                if deadline is not None and loop.time() >= deadline:
                    run.fail(job, f"waited {timeout:g}s for the run that holds its claim on the remote")
                    return False
        except RemoteVersionError as exc:  # a newer kling-render's claim or record: left alone
            run.fail(job, str(exc))
            return False
        except RemoteError as exc:
            run.fail(job, f"the remote could not be read ({exc}); nothing was submitted for it this run")
            return False

    async def _look(self, job: Job) -> bool | None:
        """One look at the key's clip and claim (see :meth:`elsewhere`); None: look again."""
        run = self.run
        clip = await self.gate.area(job).get(self.provider, job.key)
        if clip is not None:
            await self.use_remote_clip(job, clip)
            return False
        current = await self.remote.claims.read(job.key)
        if current is None:
            return True
        verdict = await self.remote.claims.judge(current)
        if verdict in ("follow", "mine") and current.task_id:
            return await self._follow(job, current, verdict == "mine")
        if verdict in ("mine", "free", "done"):
            return True
        if verdict == "refused":
            if run.options.retry_failed:
                return True
            run.fail(job, self.gate.refused_message(current))
            return False
        if verdict == "orphaned":
            return await self._orphaned(job, current)
        self.say(job, "waiting", current, f"{current.record.owner} holds its claim and is submitting")
        await asyncio.sleep(max(run.options.poll_interval, MIN_WAIT))
        return None

    async def _follow(self, job: Job, claim: Claim, mine: bool) -> bool | None:
        """Poll the claim's task and use its clip; None: look at the claim again."""
        run = self.run
        task_id = claim.task_id
        assert task_id is not None
        ended = self.gate.ended.setdefault(job.key, {})
        if task_id in ended:  # it ended without a clip: its holder replaces it, unless it is gone
            if not (mine or await self.remote.claims.holder_gone(claim)):
                self.say(job, "waiting", claim, f"{claim.record.owner} replaces its task {task_id}")
                await asyncio.sleep(max(run.options.poll_interval, MIN_WAIT))
                return None
            result = ended[task_id]
            if result is not None and result.cause == "permanent":
                return False if await self._failed_for_good(job, claim, task_id, result) else None
            return True
        self.say(job, "following", claim, f"task {task_id} of {claim.record.owner}", task_id=task_id)
        if not mine and task_id not in self.gate.followed:  # when it was submitted, by the store's time
            since = age(claim, await self.remote.claims.now())
            if since is not None:
                self.gate.followed[task_id] = time.time() - since
        result = await wait_for(run, self.gate.account, self.gate.ends, job, task_id, fresh=False)
        if result is None:  # the poll failed or timed out: the shot failed this run, the task runs on
            await self._given_up(job, claim, task_id)
            return False
        if result.completed and result.output_url:
            clip = await self.gate.area(job).get(self.provider, job.key)
            if clip is not None:  # its holder pushed it meanwhile
                await self.use_remote_clip(job, clip)
                return False
            end = await self.gate.ends.fetch(job, task_id, result.output_url)
            if end == "done" and job.key in self.gate.on_remote:
                await self._close_followed(job, claim)
            if end == "stop":
                await self._given_up(job, claim, task_id)
            if end != "retry":
                return False
            ended[task_id] = None
            return None
        ended[task_id] = result
        self.gate.account.foreign_failure(job, self.gate.ends.ledger_index(job, task_id), result)
        return None

    async def _given_up(self, job: Job, claim: Claim, task_id: str) -> None:
        """The followed task was given up here (task_end.gone_for_good: older than the provider keeps
        tasks): close the claim ``failed``, not permanent, so no machine follows it again and the next
        run takes the claim over and pays a replacement within the cap."""
        tasks = self.run.state.ledger(job.key).tasks
        if not any(t.task_id == task_id and t.outcome == "gone" for t in tasks):
            return
        error = f"task {task_id} is gone: older than {self.run.provider.name} keeps tasks"
        outcome = await self.remote.claims.finish(claim, "failed", error=error)
        if isinstance(outcome, Won):
            self.gate.held.pop(job.key, None)

    async def _close_followed(self, job: Job, claim: Claim) -> None:
        """The followed task's clip is on the remote now: its claim is done (if the holder has not
        said so already; a lost race here only means it has)."""
        record = self.run.state.get(job.shot_id)
        if claim.record.owner.run_id != self.owner.run_id and record is not None:
            await self.remote.claims.finish(claim, "done", output_sha256=record.output_sha256)

    async def _failed_for_good(self, job: Job, claim: Claim, task_id: str, result: TaskResult) -> bool:
        """The task of a gone holder failed for a permanent cause: say so in the claim, fail the shot."""
        code = f" (code {result.code})" if result.code else ""
        error = f"task {task_id} {result.status}{code}: {result.error or 'no reason given'}"
        outcome = await self.remote.claims.finish(claim, "failed", error=error, permanent=True)
        if isinstance(outcome, Lost):
            return False  # it changed meanwhile: look again
        self.gate.held.pop(job.key, None)
        self.run.fail(
            job,
            f"{error}; the same inputs fail the same way, so none is submitted again: {ASK_AGAIN}",
            code=result.code,
        )
        return True

    async def _orphaned(self, job: Job, claim: Claim) -> bool | None:
        """The claim's holder died before recording a task id: like an ``unknown`` submit, its task
        is looked for in the provider's task list; only a proven absence lets this run submit.
        None: look at the claim again."""
        run = self.run
        record = claim.record
        claims = self.remote.claims
        who = f"claimed by {record.owner}, which stopped before recording a task id"
        if record.wire is None:  # every claim write before a POST carries its wire: nothing was sent
            return await self._take(job, claim, f"took it over from {record.owner} (it stopped before submitting)")
        # When the holder last wrote the claim (just before its POST) and when the list is asked, both
        # by the store's clock: the record's own stamps are a writer's clock and are not trusted.
        submitted = claim.modified
        if not (run.provider.lists_tasks and submitted is not None):
            return await self._unsettled(job, claim, f"{who}; its task cannot be looked for")
        asked = await claims.now()
        try:
            tasks = await run.provider.list_tasks(job.wire_model, submitted - WINDOW_BEFORE, submitted + WINDOW_AFTER)
        except ProviderError as exc:
            return await self._unsettled(job, claim, f"{who}; the provider's task list could not be read ({exc})")
        decision = decide(
            tasks,
            wire=record.wire,
            known=run.state.known_task_ids() | set(record.tasks),
            submitted_at=submitted,
            asked_at=asked,
            grace=run.options.reconcile_grace,
        )
        if decision.kind == "adopt":
            outcome = await claims.take_over(claim, wire=record.wire, task_id=decision.task_id)
            if isinstance(outcome, Won):
                self.gate.held[job.key] = outcome.claim
                run.emit("reconciled", job, task_id=decision.task_id, message=f"{who}: {decision.message}")
            return None
        if decision.kind == "absent":
            return await self._take(job, claim, f"{who}: {decision.message}")
        if decision.kind == "wait":
            await asyncio.sleep(max(0.0, submitted + run.options.reconcile_grace - asked) + 0.05)
            return None
        return await self._unsettled(job, claim, f"{who}; {decision.message}")

    async def _take(self, job: Job, claim: Claim, why: str) -> bool | None:
        over = self.gate.over_cap(job, claim)
        if over is not None:
            self.run.fail(job, over)
            return False
        outcome = await self.remote.claims.take_over(claim)
        if isinstance(outcome, Lost):
            return None
        self.gate.held[job.key] = outcome.claim
        self.run.emit("claimed", job, message=why)
        return True

    async def _unsettled(self, job: Job, claim: Claim, why: str) -> bool | None:
        """What the task list cannot settle: ``unknown`` this run (the claim stays as it is, so the
        next run looks again), unless --resubmit-unknown."""
        if self.run.options.resubmit_unknown:
            return await self._take(job, claim, f"{why}; submitted again (--resubmit-unknown)")
        hint = "check the provider's dashboard, then re-run with --resubmit-unknown to submit it again"
        self.run.say_unknown(job, f"{why}; {hint}")
        return False

    async def use_remote_clip(self, job: Job, clip: RemoteClip) -> None:
        """The key's clip is on the remote: pull it and count the shot as cached ($0)."""
        if await self.gate.pull(job, clip) is None:
            self.run.fail(job, self.gate.account.refusals[job.key])
            return
        self.run.mark_cached(job)

    def say(self, job: Job, kind: str, claim: Claim, message: str, task_id: str | None = None) -> None:
        """A following/waiting event, once per claim state."""
        said = f"{kind}:{claim.record.owner.run_id}:{claim.task_id}:{message}"
        if self.told.get(job.shot_id) != said:
            self.told[job.shot_id] = said
            self.run.emit(kind, job, task_id=task_id, message=message)
