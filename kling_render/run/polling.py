"""Polling one task until it ends, on a fixed grid (no drift from the time each poll takes)."""

from __future__ import annotations

import asyncio
import math

from kling_render.errors import AccountError, ProviderError, TaskGoneError
from kling_render.jobs import Job, TaskResult
from kling_render.money import Account
from kling_render.run.context import Run
from kling_render.run.task_end import TaskEnds

__all__ = ["wait_for"]


async def wait_for(
    run: Run, account: Account, ends: TaskEnds, job: Job, task_id: str, *, fresh: bool
) -> TaskResult | None:
    """Poll ``task_id`` until it ends; None when the step stops here (poll failed, timed out: the
    task is kept for the next run, unless the provider no longer knows it past its retention).

    A task just submitted is first polled one interval later, a resumed one at once.
    """
    loop = asyncio.get_running_loop()
    interval = run.options.poll_interval
    start = loop.time()
    timeout = run.options.task_timeout
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
                    await _cancel_queued(run, account, ends, job, task_id)
                raise
        n += 1
        try:
            result = await run.provider.poll(task_id)
        except ProviderError as exc:
            if isinstance(exc, AccountError):  # the key no longer works: nothing else will either
                account.account_lost(exc)
            if not (isinstance(exc, TaskGoneError) and ends.gone_for_good(job, task_id, str(exc))):
                run.keep_task(job, f"polling task {task_id} failed: {exc}; the next run polls it again")
            return None
        if result.status != last_status:
            last_status = result.status
            run.emit("polling", job, task_id=task_id, status=result.status)
        if result.terminal:
            return result
        if deadline is not None and loop.time() >= deadline:
            run.keep_task(job, f"task {task_id} still {result.status} after {timeout:g}s; the next run polls it again")
            return None
        n = max(n, math.ceil((loop.time() - start) / interval))  # a slow poll skips grid points


async def _cancel_queued(run: Run, account: Account, ends: TaskEnds, job: Job, task_id: str) -> None:
    """On an interrupt, ask the provider to drop a task last seen queued (best effort, 5 s): when it
    confirms the task never ran, it counts as never created and the step is pending again;
    otherwise the task stays submitted and the next run polls it (paid work is never thrown away)."""
    try:
        async with asyncio.timeout(5.0):
            removed = await run.provider.cancel(task_id)
    except Exception:  # best effort: the task stays submitted
        return
    if removed:
        account.cancelled(job, ends.ledger_index(job, task_id), task_id)
