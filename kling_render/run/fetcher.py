"""Downloads and clip checks off the provider's slots (issue 16): a task's slot is free the moment
it completes; fetching its clip waits here, in a pool of its own, never in front of a submit or
a poll.

- Downloads run at most ``downloads`` at a time (network-bound: several per core).
- Checks (the full ffmpeg decode), hashes and cache moves run in a thread pool of ``workers``
  threads, the number of cores: each holds one ffmpeg process or one file, so a wave of clips
  never oversubscribes the CPU, and the event loop (submits, polls, state writes) never waits
  for a disk sync or a lock on the shared cache.
- The checks keep the normal CPU priority. Running them at nice +5/+10 (threads inherit it on
  Linux) was tried and measured: on a machine busy with other work the checks then get a fraction
  of their share and the run ends later (benchmarks/RESULTS.md); the event loop, mostly asleep,
  is woken promptly by the scheduler anyway.

Money does not depend on any of this: the task id is in the state file before the download, so a
crash mid-download re-downloads the same task; a clip that fails its check is handled by the
task-end rules as before (task_end.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from kling_render.workers import cpu_cores

__all__ = ["FetchPool"]

T = TypeVar("T")


class FetchPool:
    """The bounded pool of one run; ``close`` it when the run ends."""

    def __init__(self, workers: int | None = None, downloads: int | None = None) -> None:
        self.workers = max(1, workers or cpu_cores())
        self.downloads = max(1, downloads or 4 * self.workers)
        self._executor: ThreadPoolExecutor | None = None
        self._download_slots: asyncio.Semaphore | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="clip-check")
        return self._executor

    @contextlib.asynccontextmanager
    async def download_slot(self) -> AsyncIterator[None]:
        """Held while one clip downloads (at most ``downloads`` at once)."""
        if self._download_slots is None:  # made inside the running loop
            self._download_slots = asyncio.Semaphore(self.downloads)
        async with self._download_slots:
            yield

    async def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(*args, **kwargs)`` in the check pool (at most ``workers`` at once)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop taking work; checks already running finish in their threads (nothing waits on them)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
