"""Bounded worker pools sized to the machine.

``cpu_cores`` is what this process may run on (the affinity mask, so a container limited to two
CPUs of a large host counts two). :class:`ClipChecks` runs the render's clip checks — download,
decode check, hash, cache put — off the scheduler's critical path: a provider slot is free as soon
as its task completes, and the CPU-bound work runs in its own pool of ``cpu_cores`` threads, so it
never delays a submit or the detection of the next completed task.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ClipChecks", "cpu_cores"]

T = TypeVar("T")


def cpu_cores() -> int:
    """The CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class ClipChecks:
    """Where a render downloads and checks its clips.

    - ``download``: at most ``downloads`` transfers at once (twice the cores by default), so the
      first clips of a wave finish early and their checks start while the rest arrive, instead of
      twenty transfers sharing the link and all ending together.
    - ``run``: blocking work (ffmpeg's decode check, hashing, the cache put with its fsyncs) in a
      pool of ``workers`` threads (the cores by default), never on the event loop, which keeps
      submitting and polling meanwhile.

    Both are bounded: a wave of clips queues here, not on the CPU. ``close`` waits for nothing:
    a check still running in a thread is abandoned with the run (its ffmpeg ends with it).
    """

    def __init__(self, *, workers: int | None = None, downloads: int | None = None) -> None:
        self.workers = workers or cpu_cores()
        self.downloads = downloads or 2 * self.workers
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clip-check")
        self._transfers: asyncio.Semaphore | None = None

    async def download(self, fetch: Callable[[], Awaitable[T]]) -> T:
        """Await ``fetch()`` (a transfer) within the download bound."""
        if self._transfers is None:  # created in the running loop
            self._transfers = asyncio.Semaphore(self.downloads)
        async with self._transfers:
            return await fetch()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the check pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
