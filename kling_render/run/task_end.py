"""What happens when a task ends (SPEC §6): a failed task is refunded and replaced by its cause, a
completed one is fetched, checked and cached, an expired one is given up; what it cost goes
through the account (money.py), what the step becomes through a lifecycle move.

Free first: a task that completed (and was paid) but whose output cannot be used (no output URL,
not a clip, an output that fails its check) is never paid for again in the same run. The step
fails with its task kept, and the next run fetches that task's output again, which is free while
the provider keeps it (WaveSpeed: 7 days). Only when a task already found unusable fails again is
a replacement paid, within the key's lifetime cap.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

from kling_render.errors import DownloadError, DownloadInterrupted, FFmpegError, OutputGoneError, TransientError
from kling_render.jobs import Job, TaskResult
from kling_render.media.check import CheckedClip
from kling_render.money import ASK_AGAIN, Account
from kling_render.records.ledger import TaskEntry
from kling_render.records.lifecycle import Move, Status, TaskOutcome
from kling_render.records.state import now_iso
from kling_render.run.context import Run
from kling_render.store.cache import CachedClip, ClipMeta

__all__ = ["Keep", "TaskEnd", "TaskEnds"]

TaskEnd = Literal["done", "retry", "stop"]
Keep = Callable[[Job, Path, ClipMeta, str], Awaitable[CachedClip]]
"""Puts a checked output away (through the remote when there is one) and returns its cache entry."""


class TaskEnds:
    """The task-end rules of one run."""

    def __init__(self, run: Run, account: Account, keep: Keep, followed: Mapping[str, float] | None = None) -> None:
        self.run = run
        self.account = account
        self.keep = keep
        # task id -> when it was submitted, for tasks followed through another run's claim (by the
        # store's time of that claim: remote_follow.py); the gate fills it in
        self.followed: Mapping[str, float] = {} if followed is None else followed

    def ledger_index(self, job: Job, task_id: str) -> int:
        """The ledger entry of ``task_id`` (one is added when the state file lacks it)."""
        run = self.run
        tasks = run.state.ledger(job.key).tasks
        for index in range(len(tasks) - 1, -1, -1):
            if tasks[index].task_id == task_id:
                return index
        record = run.state.get(job.shot_id)
        entry = TaskEntry(job.shot_id, record.submitted_at if record else None, 0.0, task_id, TaskOutcome.SUBMITTED)
        return run.state.add_task(job.key, entry, flush=False)

    def gone_for_good(self, job: Job, task_id: str, problem: str) -> bool:
        """A task or output the provider answers "not found" for, submitted longer ago than the
        provider keeps them: nothing will bring it back, so the step fails *with* its task given
        up, and the next run submits a new one (it is paid again, and the plan and the budget
        count it). Within the retention a 404 may be a hiccup: False, the task is kept."""
        run = self.run
        keep = run.provider.output_retention
        submitted = self.submitted_at(job, task_id)
        if keep is None or submitted is None:
            return False
        age = time.time() - submitted
        if age <= keep:
            return False
        self.account.gone(job, self.ledger_index(job, task_id))
        run.fail(
            job,
            f"task {task_id} is gone ({problem}): it was submitted {age / 86400:.1f} days ago and "
            f"{run.provider.name} keeps tasks {keep / 86400:g} days; the next run submits a new task "
            f"(${job.cost_usd:.4f})",
        )
        return True

    def submitted_at(self, job: Job, task_id: str) -> float | None:
        """When ``task_id`` was submitted (epoch seconds, this machine's clock): for a task followed
        through another run's claim, by the store's time of that claim (remote_follow.py); else the
        shot's record."""
        if task_id in self.followed:
            return self.followed[task_id]
        record = self.run.state.get(job.shot_id)
        if record is None or not record.submitted_at:
            return None
        try:
            return datetime.fromisoformat(record.submitted_at).timestamp()
        except ValueError:
            return None

    def failed(self, job: Job, task_id: str, result: TaskResult) -> TaskEnd:
        """A failed task is refunded (unless the provider may have charged it: then it stays spent);
        replaced within the cap unless its code says the inputs are at fault."""
        run = self.run
        code = f" (code {result.code})" if result.code else ""
        problem = f"task {task_id} {result.status}{code}: {result.error or 'no reason given'}"
        refunded = self.account.refund(job, self.ledger_index(job, task_id), result)
        money = "refunded" if refunded else "it may have been charged"
        if result.cause == "permanent" and run.provider.charges:
            run.fail(
                job,
                f"{problem}; {money}. The same inputs fail the same way, so none is submitted again: {ASK_AGAIN}",
                code=result.code,
            )
            return "stop"
        return self.replace_task(job, f"{problem} ({money})", code=result.code)

    def unusable(self, job: Job, task_id: str, problem: str) -> TaskEnd:
        """A task completed (and was paid) without a usable output (see the module docstring)."""
        run = self.run
        index = self.ledger_index(job, task_id)
        again = run.state.ledger(job.key).tasks[index].outcome == TaskOutcome.UNUSABLE
        self.account.unusable(job, index, problem)
        text = f"task {task_id} {problem} (paid)"
        if again and not self.account.paid_this_run(job) and run.provider.charges:
            return self.replace_task(job, f"{text}; its output failed again after being fetched a second time")
        if not run.provider.charges:  # a free provider's task costs nothing to replace
            return self.replace_task(job, text)
        keep = run.provider.output_retention
        kept = f" while {run.provider.name} keeps it ({keep / 86400:g} days)" if keep else ""
        run.keep_task(
            job,
            f"{text}; the next run fetches its output again, free{kept}, and pays a new task only if that fails too",
        )
        return "stop"

    def replace_task(self, job: Job, problem: str, *, code: str | None = None) -> TaskEnd:
        """Submit a new task for ``job`` when the cap (and the run) allows, else fail the step."""
        run = self.run
        stopped = self.account.stopped
        reason = stopped if stopped is not None else self.account.refusal(job)
        if reason is not None:
            run.fail(job, f"{problem}; {reason}", code=code)
            return "stop"
        run.move(job, Move.REPLACE, message=problem, error=problem)
        return "retry"

    async def fetch(self, job: Job, task_id: str, url: str) -> TaskEnd:
        """Download, check and keep the output of a completed task (``download_attempts`` tries)."""
        run = self.run
        fetch_error: str | None = None
        bad_output: str | None = None
        gone = interrupted = False
        for _ in range(max(1, run.options.download_attempts)):
            with run.cache.temp_file() as tmp:
                try:
                    async with run.fetcher.download_slot():
                        await run.provider.download(url, tmp)
                    if not tmp.is_file() or tmp.stat().st_size == 0:
                        raise DownloadError("the download is empty")
                except (DownloadError, TransientError) as exc:
                    fetch_error, bad_output, gone = str(exc), None, isinstance(exc, OutputGoneError)
                    interrupted = isinstance(exc, DownloadInterrupted | TransientError)  # not the output's fault
                    continue
                try:
                    checked = await run.fetcher.call(run.verify, tmp)
                except (FFmpegError, DownloadError) as exc:
                    fetch_error, bad_output = None, f"not a valid clip: {exc}"
                    continue
                if isinstance(checked, CheckedClip):
                    known = await run.fetcher.call(run.cache.probes.corrupt, checked.sha256)
                    if known is not None:  # these very bytes failed to decode in an earlier stitch
                        fetch_error, bad_output = None, f"not a valid clip: it does not decode ({known})"
                        continue
                    await run.fetcher.call(run.cache.probes.put, checked)  # the stitch needs no probe
                    media = checked.info.to_json()
                else:
                    media = checked.media
                duration, digest = checked.duration, checked.sha256
                warning = None
                tolerance = run.options.duration_tolerance
                # A clip that continues its input (video-extend) holds that input too: only its new
                # part must last the shot's duration (the cut keeps that part).
                longer_ok = job.extends and duration >= job.duration - tolerance
                if abs(duration - job.duration) > tolerance and not longer_ok:
                    # Paid, and a new task would cost again: kept, and the cut uses its real length.
                    warning = (
                        f"the clip lasts {duration:.2f}s, the shot {job.duration}s: kept, and the cut "
                        "uses its real length"
                    )
                meta = ClipMeta(duration, job.model, task_id, media)
                entry = await self.keep(job, tmp, meta, digest)
            run.emit("downloaded", job, task_id=task_id)
            self.account.fetched(job, self.ledger_index(job, task_id))
            outcome = run.outcome(job)
            record = run.record(job)
            own = record.status is Status.SUBMITTED and record.task_id == task_id
            run.move(
                job,
                Move.FETCHED if own else Move.FOLLOWED,  # another machine's task, followed through its claim
                paid=outcome.cost_usd - outcome.refunded_usd,
                message=warning,
                output_sha256=entry.sha256,
                error=None,
                finished_at=now_iso(),
            )
            run.record_lock(job, task_id, entry.sha256, entry.duration)
            outcome.clip, outcome.warning = entry.path, warning
            return "done"
        if bad_output is not None:
            return self.unusable(job, task_id, f"gave an unusable result: {bad_output}")
        if gone and self.gone_for_good(job, task_id, f"its output: {fetch_error}"):
            return "stop"
        if interrupted:  # the network or this machine's disk: the output may be fine
            run.keep_task(
                job, f"downloading the output of task {task_id} failed: {fetch_error}; the next run tries again"
            )
            return "stop"
        return self.unusable(job, task_id, f"could not be downloaded: {fetch_error}")
