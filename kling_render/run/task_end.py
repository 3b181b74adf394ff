"""What happens when a task ends (SPEC §6): a failed task is refunded and replaced by its cause,
an unusable result is paid and counted, a completed one is fetched, verified and cached, an expired
one is given up. Each is recorded in the shot's record and in its key's ledger."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from kling_render.errors import DownloadError, FFmpegError, OutputGoneError, TransientError
from kling_render.fsutil import sha256_file
from kling_render.jobs import Job, TaskResult
from kling_render.records.ledger import TaskEntry
from kling_render.records.state import now_iso
from kling_render.store.cache import ClipMeta

if TYPE_CHECKING:
    from kling_render.run.scheduler import _Run

TaskEnd = Literal["done", "retry", "stop"]
ASK_AGAIN = "change the shot's inputs, bump its `take`, or render with --retry-failed"


class TaskEnds:
    """The task-end rules of one run."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def ledger_index(self, job: Job, task_id: str) -> int:
        """The ledger entry of ``task_id`` (one is added when the state file lacks it)."""
        run = self.run
        tasks = run.state.ledger(job.key).tasks
        for index in range(len(tasks) - 1, -1, -1):
            if tasks[index].task_id == task_id:
                return index
        record = run.state.get(job.shot_id)
        entry = TaskEntry(job.shot_id, record.submitted_at if record else None, 0.0, task_id, "submitted")
        return run.state.add_task(job.key, entry, flush=False)

    def gone_for_good(self, job: Job, task_id: str, problem: str) -> bool:
        """A task or output the provider answers "not found" for, submitted longer ago than the
        provider keeps them: nothing will bring it back, so the shot fails *with* its task given
        up, and the next run submits a new one (it is paid again, and the plan and the budget
        count it). Within the retention a 404 may be a hiccup: False, the task is kept."""
        run = self.run
        keep = run.provider.output_retention
        record = run.state.get(job.shot_id)
        if keep is None or record is None or not record.submitted_at:
            return False
        try:
            age = time.time() - datetime.fromisoformat(record.submitted_at).timestamp()
        except ValueError:
            return False
        if age <= keep:
            return False
        run.state.change_task(job.key, self.ledger_index(job, task_id), flush=False, outcome="gone")
        run.fail(
            job,
            f"task {task_id} is gone ({problem}): it was submitted {age / 86400:.1f} days ago and "
            f"{run.provider.name} keeps tasks {keep / 86400:g} days; the next run submits a new task "
            f"(${job.cost_usd:.4f})",
        )
        return True

    def failed(self, job: Job, task_id: str, result: TaskResult) -> TaskEnd:
        """A failed task is refunded (unless the provider may have charged it: then it stays spent);
        replaced within the cap unless its code says the inputs are at fault."""
        run = self.run
        code = f" (code {result.code})" if result.code else ""
        problem = f"task {task_id} {result.status}{code}: {result.error or 'no reason given'}"
        run.state.change_task(
            job.key,
            self.ledger_index(job, task_id),
            flush=False,
            outcome="failed" if result.refunded else "failed_charged",
            code=result.code,
            cause=result.cause,
            error=result.error,
        )
        outcome = run.report.outcomes[job.shot_id]
        outcome.error_code = result.code
        record = run.state.get(job.shot_id)
        assert record is not None
        money = "refunded"
        if result.refunded:
            run.committed -= job.cost_usd  # refunded: it no longer weighs on the budget
            run.report.refunded_usd += job.cost_usd
            outcome.refunded_usd += job.cost_usd
            run.state.update(job.shot_id, refunded_usd=record.refunded_usd + job.cost_usd, error_code=result.code)
        else:  # the provider may have billed it (fal: a 422 after its runner ran): it stays spent
            money = "it may have been charged"
            run.state.update(job.shot_id, error_code=result.code)
        if result.cause == "permanent" and run.provider.charges:
            run.fail(
                job,
                f"{problem}; {money}. The same inputs fail the same way, so none is submitted again: {ASK_AGAIN}",
                code=result.code,
            )
            return "stop"
        return self.replace_task(job, f"{problem} ({money})", code=result.code)

    def unusable(self, job: Job, task_id: str, problem: str) -> TaskEnd:
        """A task completed (and was paid) without a usable clip: it counts against the key's cap."""
        run = self.run
        run.state.change_task(
            job.key, self.ledger_index(job, task_id), flush=False, outcome="unusable", error=problem
        )
        return self.replace_task(job, f"task {task_id} {problem} (paid)")

    def replace_task(self, job: Job, problem: str, *, code: str | None = None) -> TaskEnd:
        """Submit a new task for ``job`` when the cap (and the run) allows, else fail the shot."""
        run = self.run
        reason = None if run.stop_submitting else run.submit_refusal(job)
        if run.stop_submitting or reason is not None:
            run.fail(job, f"{problem}; {reason}" if reason else problem, code=code)
            return "stop"
        run.state.update(job.shot_id, status="pending", error=problem)
        run.emit("retry", job, message=problem)
        return "retry"

    async def fetch(self, job: Job, task_id: str, url: str) -> TaskEnd:
        run = self.run
        fetch_error: str | None = None
        bad_clip: str | None = None
        gone = False
        for _ in range(max(1, run.options.download_attempts)):
            with run.cache.temp_file() as tmp:
                try:
                    async with run.fetcher.download_slot():
                        await run.provider.download(url, tmp)
                    if not tmp.is_file() or tmp.stat().st_size == 0:
                        raise DownloadError("the download is empty")
                except (DownloadError, TransientError) as exc:
                    fetch_error, bad_clip, gone = str(exc), None, isinstance(exc, OutputGoneError)
                    continue
                try:
                    duration, media = await run.fetcher.call(run.verify, tmp)
                except (FFmpegError, DownloadError) as exc:
                    fetch_error, bad_clip = None, f"not a valid clip: {exc}"
                    continue
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
                digest = await run.fetcher.call(sha256_file, tmp)
                meta = ClipMeta(duration, job.model, task_id, media)
                if run.gate is not None:  # to the shared remote first (remote/gate.py), then the cache
                    entry = await run.gate.keep(job, tmp, meta, digest)
                else:  # in the pool too: the move syncs the disk and may wait for another run's cache lock
                    entry = await run.fetcher.call(run.cache.put, run.provider.name, job.key, tmp, meta, sha256=digest)
            run.emit("downloaded", job, task_id=task_id)
            run.state.change_task(job.key, self.ledger_index(job, task_id), flush=False, outcome="done")
            run.state.update(
                job.shot_id, status="done", output_sha256=entry.sha256, error=None, finished_at=now_iso()
            )
            run.record_lock(job, task_id, entry.sha256, entry.duration)
            outcome = run.report.outcomes[job.shot_id]
            outcome.status, outcome.clip, outcome.error, outcome.warning = "done", entry.path, None, warning
            run.emit("done", job, task_id=task_id, cost_usd=outcome.cost_usd - outcome.refunded_usd, message=warning)
            return "done"
        if bad_clip is not None:
            return self.unusable(job, task_id, f"gave an unusable result: {bad_clip}")
        if gone and self.gone_for_good(job, task_id, f"its output: {fetch_error}"):
            return "stop"
        run.fail(
            job,
            f"downloading the output of task {task_id} failed: {fetch_error}; the next run tries again",
            keep_task=True,
        )
        return "stop"


