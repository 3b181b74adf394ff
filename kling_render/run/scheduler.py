"""The scheduler of a render: runs the steps of the plan's graph, each when its inputs are ready,
under per-kind limits (SPEC §6).

Paid steps (clips, stills) run through the generator (run/generate.py) with the provider's slots;
the money they may spend goes through the account (money.py). Interrupted by Ctrl-C, the run
stops with every move already flushed and reports ``interrupted`` (exit code 130).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kling_render.jobs import Job
from kling_render.providers.base import Provider
from kling_render.records.lockfile import LockFile
from kling_render.records.state import StateStore
from kling_render.report.progress import EventSink
from kling_render.run.context import ClipVerifier, Run
from kling_render.run.generate import Generator
from kling_render.run.report import RunOptions, RunReport
from kling_render.store.cache import ClipCache
from kling_render.store.remote.connect import Remote
from kling_render.store.remote.spend import RemoteSpend

if TYPE_CHECKING:
    from kling_render.media.check import CheckedClip

__all__ = ["RunOptions", "RunReport", "default_verify", "execute", "run"]


def default_verify(path: Path) -> CheckedClip:
    """The download check: structural (media/check.py), no decode (the stitch decodes each clip once)."""
    from kling_render.media.check import check_structure

    return check_structure(path)


async def _generate(run_: Run, jobs: Sequence[Job], remote: Remote | None, spend: RemoteSpend | None) -> RunReport:
    ids = [j.shot_id for j in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate shot ids in one run")
    generator = Generator(run_, remote=remote, spend=spend)
    actions = await generator.start(jobs)  # raises BudgetError before anything is paid
    tasks: dict[str, asyncio.Task[None]] = {}
    try:
        tasks = generator.launch(jobs, actions)
        await asyncio.gather(*tasks.values())
    except BaseException:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        raise
    finally:
        run_.fetcher.close()
        with contextlib.suppress(Exception):  # a stale hold only over-counts the project's spend
            await generator.account.flush_releases()
        run_.emit("finish", message=run_.summary())
    return run_.report


def _make_run(
    jobs: Sequence[Job],
    provider: Provider,
    state: StateStore,
    cache: ClipCache,
    options: RunOptions | None,
    events: EventSink | None,
    lock: LockFile | None,
    verify: ClipVerifier,
) -> Run:
    return Run(
        provider, state=state, cache=cache, options=options or RunOptions(), events=events, lock=lock,
        verify=verify, total=len(jobs),
    )  # fmt: skip


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
    spend: RemoteSpend | None = None,
) -> RunReport:
    """Render ``jobs`` (state must be open). Raises BudgetError before submitting anything when
    the steps to submit cost more than the budget. Does not close the provider."""
    run_ = _make_run(jobs, provider, state, cache, options, events, lock, verify)
    return await _generate(run_, jobs, remote, spend)


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
    spend: RemoteSpend | None = None,
) -> RunReport:
    """:func:`execute` in a fresh event loop; closes the provider. Ctrl-C stops the run with every
    move already flushed and returns the report with ``interrupted`` (exit code 130)."""
    run_ = _make_run(jobs, provider, state, cache, options, events, lock, verify)

    async def main() -> RunReport:
        try:
            return await _generate(run_, jobs, remote, spend)
        finally:
            await provider.aclose()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        run_.report.interrupted = True
        return run_.report
