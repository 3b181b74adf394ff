"""The remote in a render (SPEC §6): clips shared through it, claims so that no two machines pay
for one shot. The runner calls it from a few places; everything about the remote lives here.

- :meth:`RemoteGate.start`: one listing of the remote's clips. A shot whose clip is listed and not
  in the local cache is pulled (size and sha256 checked against its record, then the download's
  own clip check) instead of generated; a clip cached here and missing there is pushed; a clip
  cached here that differs from the remote's record is replaced by it (the remote's record is the
  team's clip), and the replacement is reported.
- :meth:`~RemoteGate.claim` (in the runner's submit, the body prepared, a task slot held): before
  any paid submit, the key's claim is created (create-only) or taken over (compare-and-swap),
  carrying the fingerprint of the body about to be sent. Lost: another run holds it, and the
  shot goes :meth:`~RemoteGate.elsewhere`, outside the slot.
- :meth:`~RemoteGate.record`: the task id into the claim, as soon as the local state has it;
  :meth:`~RemoteGate.own_task` the same for a task of this machine polled again (a resumed run,
  a reconciled submit).
- :meth:`~RemoteGate.elsewhere` (remote/follow.py): pull the clip once it is there; follow the holder's task (poll
  it, download and push its clip); wait while the holder submits; reconcile a claim whose holder
  died before recording its task id through the provider's task list (reconcile.decide), like an
  ``unknown`` shot. It never submits: only when the claim is free, or its holder is gone and its
  task ended without a clip, does it send the shot back to :meth:`~RemoteGate.claim`.
- :meth:`~RemoteGate.keep`: a clip made or downloaded here goes to the remote before the local
  cache (the first record of a key wins; a different clip already there is used instead, so
  every machine cuts the same bytes).
- :meth:`~RemoteGate.settle`: when a shot ends, the claim this run holds says how: ``done``,
  ``failed`` (``permanent`` when the same inputs fail the same way), ``released`` (nothing was
  submitted); a shot left ``unknown``, or whose task runs on, keeps its claim active.

A step's output lives in the remote's area for its kind (``remote.outputs(job.kind)``: clips, or
stills), which mirrors the run's local cache area; a pulled still is checked as a downloaded one
is (the run's ``verify``: media/image_check.py for a generator of stills). Claims are by key, and
a still's key never equals a clip's, so one claim namespace serves both.

The lifetime cap of paid tasks per key holds across machines: a claim counts the tasks recorded
on its key by every machine (``attempts``), and the larger of that and the local ledger's count
is held against the cap. A free provider (``local``) shares clips but takes no claims.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from kling_render.errors import RemoteError, RemoteIntegrityError, RemoteVersionError
from kling_render.jobs import Job, TaskResult
from kling_render.money import ASK_AGAIN, Account
from kling_render.plan.keys import fingerprint
from kling_render.records.lifecycle import Status, claim_close
from kling_render.run.context import Run
from kling_render.run.remote_follow import Follower
from kling_render.run.task_end import TaskEnds
from kling_render.store.cache import CachedClip, ClipMeta
from kling_render.store.remote.claims import Claim, Lost, Owner, Won
from kling_render.store.remote.clips import PushConflict, RemoteClip, RemoteClips
from kling_render.store.remote.connect import Remote
from kling_render.store.remote.sync import Differs, differing, replace_local

__all__ = ["RemoteGate"]

Route = Literal["go", "elsewhere", "stop"]
TRANSFERS_AT_ONCE = 4  # pulls and pushes at the start of a run
MAX_HANDOFFS = 20  # claim <-> elsewhere round trips for one shot before it fails this run
CLAIM_ROUNDS = 5  # lost compare-and-swaps in a row before a claim counts as contested


class RemoteGate:
    """The remote steps of one run (see the module docstring)."""

    def __init__(self, run: Run, account: Account, remote: Remote) -> None:
        self.run = run
        self.account = account
        # task id -> when it was submitted (epoch, this machine's clock), for tasks followed through
        # another run's claim: measured by the store's time (task_end.gone_for_good's 7-day rule)
        self.followed: dict[str, float] = {}
        # the task-end rules, keeping through the remote
        self.ends: TaskEnds = TaskEnds(run, account, self.keep, self.followed)
        self.remote = remote
        self.provider = run.provider.name
        self.claims_on = run.provider.charges  # a free provider's shots cost nothing twice
        self.held: dict[str, Claim] = {}  # key -> the claim this run holds, as last written
        self.on_remote: set[str] = set()  # keys whose record the remote holds
        self.listed = False  # whether :meth:`start` listed the remote (this run had steps at its start)
        self.ended: dict[str, dict[str, TaskResult | None]] = {}  # key -> tasks seen ending without a clip
        self.handoffs: dict[str, int] = {}  # shot id -> times its submit found another run's claim
        self.handed: set[str] = set()  # shots whose last claim found another run's: see handed_off
        self.warnings: dict[str, list[str]] = {}  # shot id -> remote problems that did not stop it
        self.follower = Follower(self)  # the shots whose claim another run holds (remote/follow.py)

    @property
    def owner(self) -> Owner:
        return self.remote.claims.owner

    def area(self, job: Job) -> RemoteClips:
        """Where ``job``'s output lives on the remote (clips, or stills)."""
        return self.remote.outputs(job.kind)

    def noun(self, job: Job) -> str:
        return self.area(job).area.noun

    # -- start of the run --------------------------------------------------------------------

    async def start(self) -> None:
        """Pull what the remote has and the local cache lacks; push what only the local cache has.
        A remote that cannot be listed stops the run (RemoteError, exit 1) before anything is paid."""
        run = self.run
        run.cache.prepare()
        first: dict[str, Job] = {}
        for job in run.jobs.values():
            first.setdefault(job.key, job)
        listed: set[str] = set()
        unreadable: dict[str, RemoteError] = {}  # a record that cannot be read (damaged, newer): refused
        differs: dict[str, Differs] = {}
        for kind in sorted({job.kind for job in first.values()}):
            area = self.remote.outputs(kind)
            listing = await area.listing(self.provider)
            listed |= set(listing)
            keys = [key for key, job in first.items() if job.kind == kind]
            differs |= await differing(area, self.provider, run.cache, keys, listing, errors=unreadable)
        self.on_remote |= listed
        self.listed = True
        for key, exc in unreadable.items():
            self.account.refusals[key] = f"its {self.noun(first[key])} on the remote is not used: {exc}"
        gate = asyncio.Semaphore(TRANSFERS_AT_ONCE)

        async def transfer(job: Job) -> None:
            async with gate:
                if job.key in unreadable:  # its clip here is used, but whether it is the team's is unknown
                    self.warn(job, self.account.refusals[job.key])
                elif job.key in differs:
                    await self.replace(job, differs[job.key])
                elif job.key not in listed:
                    entry = run.cache.use(self.provider, job.key)
                    if entry is not None:
                        await self.push_cached(job, entry)
                elif run.cache.get(self.provider, job.key) is None:
                    await self.pull(job)

        await asyncio.gather(*(transfer(job) for job in first.values()))

    async def fetch_listed(self, job: Job) -> None:
        """A step whose key became known during the run: its output is pulled if the remote had it
        at the start (one recorded since is found by its claim). A run that listed nothing at its
        start (every step of its kind waited for an input) asks for the key's record: one read."""
        if self.run.cache.get(self.provider, job.key) is None and (job.key in self.on_remote or not self.listed):
            await self.pull(job)

    async def replace(self, job: Job, differs: Differs) -> None:
        """This machine's clip for the key differs from the remote's record: the team's clip replaces
        it (reported with the shot). If the team's cannot be pulled, this machine's is kept."""
        try:
            entry = await replace_local(self.area(job), self.run.cache, differs, self.run.verify)
        except RemoteError as exc:
            noun = self.noun(job)
            self.warn(job, f"its {noun} differs from the remote's, which could not be pulled ({exc}); this one is used")
            return
        self.run.emit("replaced", job, task_id=entry.task_id, message=differs.message)
        self.warn(job, f"replaced by the team's {self.noun(job)}: {differs.message}")

    async def pull(self, job: Job, clip: RemoteClip | None = None, *, replace: str | None = None) -> CachedClip | None:
        """Bring the key's clip from the remote into the local cache, checked as a download is; None
        (and a refusal for the key: nothing is submitted for a clip the remote holds) when it cannot
        be used. ``replace``: the local cache's clip for the key is set aside for it (that reason)."""
        clips, cache, verify = self.area(job), self.run.cache, self.run.verify
        try:
            entry = await (
                clips.fetch(clip, cache, verify=verify, replace=replace)
                if clip
                else clips.pull(self.provider, job.key, cache, verify=verify)
            )
        except (RemoteIntegrityError, RemoteVersionError) as exc:
            self.account.refusals[job.key] = f"its {self.noun(job)} on the remote is not used: {exc}"
            return None
        except RemoteError as exc:
            self.account.refusals[job.key] = (
                f"its {self.noun(job)} is on the remote but could not be pulled ({exc}); the next run tries again"
            )
            return None
        if entry is not None:
            self.on_remote.add(job.key)
            self.run.emit("pulled", job, task_id=entry.task_id, message=f"from {self.remote.url}")
        return entry

    async def push_cached(self, job: Job, entry: CachedClip) -> None:
        """A clip only the local cache holds (made before the remote was set, or its push failed)."""
        meta = ClipMeta(entry.duration, entry.model, entry.task_id, entry.media)
        try:
            outcome = await self.area(job).push(self.provider, job.key, entry.path, meta, sha256=entry.sha256)
        except RemoteError as exc:
            self.warn(job, f"its {self.noun(job)} could not be pushed to the remote ({exc}); the next run tries again")
            return
        if isinstance(outcome, PushConflict):
            self.conflict(job, outcome.existing)
            why = f"differs from the remote's {self.noun(job)} for the same key"
            await self.pull(job, outcome.existing, replace=why)
            return
        self.on_remote.add(job.key)
        if outcome.created:
            self.run.emit("pushed", job, task_id=entry.task_id, message=f"to {self.remote.url}")

    # -- before a paid submit ----------------------------------------------------------------

    async def claim(self, job: Job, body: Mapping[str, Any]) -> Route:
        """Claim the key before its submit: "go" (this run holds the claim: submit), "elsewhere"
        (another run holds it: see :meth:`elsewhere`), "stop" (the shot failed, nothing submitted)."""
        if not self.claims_on:
            return "go"
        refusal = self.account.refusals.get(job.key)
        if refusal is not None:
            self.run.fail(job, refusal)
            return "stop"
        try:
            return await self._claim(job, fingerprint(body))
        except RemoteVersionError as exc:  # a newer kling-render's claim: neither used nor taken over
            self.run.fail(job, str(exc))
            return "stop"
        except RemoteError as exc:
            self.run.fail(job, f"its claim on the remote could not be written ({exc}); nothing was submitted")
            return "stop"

    async def _claim(self, job: Job, wire: dict[str, str]) -> Route:
        claims = self.remote.claims
        held = self.held.pop(job.key, None)
        if held is not None:  # a task of this run's claim failed: a replacement, on the same claim
            outcome: Won | Lost = await claims.submitting(held, wire)
        else:
            outcome = await claims.acquire(job.key, provider=self.provider, model=job.model, wire=wire)
        for _ in range(CLAIM_ROUNDS):
            if isinstance(outcome, Won):
                if held is None:
                    self.run.emit("claimed", job, message=f"on {self.remote.url}")
                self.held[job.key] = outcome.claim
                return "go"
            current = outcome.current
            if current is None:  # vanished (deleted by hand): create it again
                held = None
                outcome = await claims.acquire(job.key, provider=self.provider, model=job.model, wire=wire)
                continue
            verdict = await claims.judge(current)
            if verdict == "mine":
                held, outcome = current, await claims.submitting(current, wire)
                continue
            if verdict == "follow" and not await self._task_ended_and_holder_gone(current):
                return self.hand_off(job)
            if verdict in ("wait", "orphaned"):
                return self.hand_off(job)
            if verdict == "done" and await self.area(job).get(self.provider, job.key) is not None:
                return self.hand_off(job)
            if verdict == "refused" and not self.run.options.retry_failed:
                self.run.fail(job, self.refused_message(current))
                return "stop"
            # free; done but its clip record is gone; refused with --retry-failed; or a gone holder's
            # task ended without a clip: this run takes the claim over, within the cap.
            over = self.over_cap(job, current)
            if over is not None:
                self.run.fail(job, over)
                return "stop"
            held, outcome = None, await claims.take_over(current, wire=wire)
            if isinstance(outcome, Won):
                self.run.emit(
                    "claimed", job, message=f"took it over from {current.record.owner} ({current.record.status})"
                )
                self.held[job.key] = outcome.claim
                return "go"
        self.run.fail(job, "its claim on the remote kept changing under this run; nothing was submitted this run")
        return "stop"

    def hand_off(self, job: Job) -> Route:
        count = self.handoffs.get(job.shot_id, 0) + 1
        self.handoffs[job.shot_id] = count
        if count > MAX_HANDOFFS:
            self.run.fail(job, "its claim on the remote never settled; nothing was submitted this run")
            return "stop"
        self.handed.add(job.shot_id)
        return "elsewhere"

    def handed_off(self, job: Job) -> bool:
        """Whether the last :meth:`claim` of ``job`` sent it elsewhere (another run holds the claim)."""
        if job.shot_id in self.handed:
            self.handed.discard(job.shot_id)
            return True
        return False

    def over_cap(self, job: Job, claim: Claim) -> str | None:
        """Why a new task would break the lifetime cap, counting every machine's tasks on the key."""
        return self.account.cap_refusal(job, remote_attempts=claim.record.attempts)

    def refused_message(self, claim: Claim) -> str:
        record = claim.record
        return (
            f"its claim on the remote says it failed for good on {record.owner}: {record.error or 'no reason given'}; "
            f"the same inputs fail the same way, so none is submitted again: {ASK_AGAIN}"
        )

    async def _task_ended_and_holder_gone(self, claim: Claim) -> bool:
        return claim.task_id in self.ended.get(claim.key, {}) and await self.remote.claims.holder_gone(claim)

    # -- task ids into the claim -------------------------------------------------------------

    async def record(self, job: Job, task_id: str) -> None:
        """The task just submitted under this run's claim (the local state already has it)."""
        held = self.held.get(job.key)
        if not self.claims_on or held is None:
            return
        try:
            outcome = await self.remote.claims.record_task(held, task_id)
        except RemoteError as exc:
            self.warn(job, f"its task id could not be recorded in its claim on the remote ({exc})")
            return
        if isinstance(outcome, Won):
            self.held[job.key] = outcome.claim
            return
        self.held.pop(job.key, None)
        who = outcome.current.record.owner if outcome.current is not None else "someone"
        self.warn(job, f"its claim on the remote was taken over by {who} while its task {task_id} was submitted")

    async def own_task(self, job: Job, task_id: str | None) -> None:
        """A task this machine submitted is polled again (a resumed run, a reconciled submit): make
        sure the key's claim names it, so other machines follow it instead of paying again."""
        if not self.claims_on or task_id is None:
            return
        try:
            await self._own_task(job, task_id)
        except RemoteError as exc:
            self.warn(job, f"its task id could not be recorded in its claim on the remote ({exc})")

    async def _own_task(self, job: Job, task_id: str) -> None:
        claims = self.remote.claims
        held = self.held.get(job.key)
        if held is not None:
            if held.task_id != task_id:
                outcome: Won | Lost = await claims.record_task(held, task_id)
                if isinstance(outcome, Won):
                    self.held[job.key] = outcome.claim
            return
        record = self.run.state.get(job.shot_id)
        wire = record.wire if record is not None else None
        current = await claims.read(job.key)
        for _ in range(CLAIM_ROUNDS):
            if current is None:
                outcome = await claims.acquire(
                    job.key, provider=self.provider, model=job.model, wire=wire, task_id=task_id
                )
            elif current.record.status == "done" or (
                current.task_id not in (None, task_id) and current.record.status == "active"
            ):
                return  # its clip is made, or another task is recorded: ours is polled all the same
            elif current.task_id == task_id and not await claims.holder_gone(current):
                return  # a live run already follows it
            else:
                outcome = await claims.take_over(current, wire=wire, task_id=task_id)
            if isinstance(outcome, Won):
                self.held[job.key] = outcome.claim
                self.run.emit("claimed", job, task_id=task_id, message=f"on {self.remote.url}")
                return
            current = outcome.current

    # -- another run holds the claim ---------------------------------------------------------

    async def elsewhere(self, job: Job) -> bool:
        """Another run holds the key's claim: use what it makes (remote/follow.py). True when this
        run should submit after all; False when the shot is settled for this run. Never submits."""
        return await self.follower.elsewhere(job)

    # -- a clip made here --------------------------------------------------------------------

    async def keep(self, job: Job, tmp: Path, meta: ClipMeta, digest: str) -> CachedClip:
        """The verified clip ``tmp`` (in the cache's temp dir) of ``job``: to the remote first, then
        into the local cache. A different clip already on the remote for the key is used instead."""
        run = self.run
        try:
            pushed = await self.area(job).push(self.provider, job.key, tmp, meta, sha256=digest)
        except RemoteError as exc:
            self.warn(job, f"its {self.noun(job)} could not be pushed to the remote ({exc}); the next run pushes it")
            return await self.put(tmp, job, meta, digest)
        if isinstance(pushed, PushConflict):
            self.conflict(job, pushed.existing)
            try:
                entry = await self.area(job).fetch(pushed.existing, run.cache, verify=run.verify)
            except RemoteError as exc:
                noun = self.noun(job)
                self.warn(job, f"the remote's {noun} for it could not be pulled ({exc}); this machine's is used")
                return await self.put(tmp, job, meta, digest)
            self.on_remote.add(job.key)
            return entry
        self.on_remote.add(job.key)
        if pushed.created:
            run.emit("pushed", job, task_id=meta.task_id, message=f"to {self.remote.url}")
        return await self.put(tmp, job, meta, digest)

    async def put(self, tmp: Path, job: Job, meta: ClipMeta, digest: str) -> CachedClip:
        """Into the local cache, in the run's fetch pool (the move syncs the disk and may wait for
        another run's cache lock: never on the event loop)."""
        run = self.run
        return await run.fetcher.call(run.cache.put, self.provider, job.key, tmp, meta, sha256=digest)

    def conflict(self, job: Job, existing: RemoteClip) -> None:
        task = f" (task {existing.task_id})" if existing.task_id else ""
        noun = self.noun(job)
        self.run.emit(
            "push-conflict",
            job,
            message=f"the remote already holds another {noun} for these inputs{task}: that one is used, so every "
            f"machine uses the same {noun}",
        )

    # -- the end of a shot -------------------------------------------------------------------

    async def settle(self, job: Job) -> None:
        """Close the claim this run holds for ``job``'s key by how the shot ended (module docstring)."""
        for text in self.warnings.pop(job.shot_id, []):  # the task-end rules rewrite the outcome's warning
            self.warn(job, text, keep=False)
        claim = self.held.get(job.key)
        if claim is None or claim.record.status != "active":
            return
        run = self.run
        record = run.state.get(job.shot_id)
        status = record.status if record is not None else Status.PENDING
        close = claim_close(
            status,
            on_remote=job.key in self.on_remote,
            task_open=status is Status.SUBMITTED,
            submitted_any=claim.task_id is not None,
        )
        change: dict[str, Any]
        if close == "done":
            change = {"status": "done", "output_sha256": record.output_sha256 if record else None}
        elif close == "failed":
            change = {
                "status": "failed",
                "error": run.outcome(job).error,
                "permanent": run.state.ledger(job.key).blocked is not None,
            }
        elif close == "released":
            change = {"status": "released"}
        else:
            return
        try:
            finished = await self.remote.claims.finish(claim, **change)
        except RemoteError as exc:
            self.warn(job, f"its claim on the remote could not be closed ({exc})")
            return
        if isinstance(finished, Won):
            self.held[job.key] = finished.claim

    def warn(self, job: Job, text: str, *, keep: bool = True) -> None:
        """A remote problem that did not stop the shot: shown with it at the end of the run."""
        outcome = self.run.outcome(job)
        if keep:
            self.warnings.setdefault(job.shot_id, []).append(text)
        if text not in (outcome.warning or ""):
            outcome.warning = f"{outcome.warning}; {text}" if outcome.warning else text
