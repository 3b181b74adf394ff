"""The render graph's paid steps under one scheduler (SPEC §6): stills and takes of shots, each run
as soon as the outputs it takes exist, with per-kind limits.

A step whose inputs are files has its key at the start; a step that takes another step's output
(a still's image, a frame of another shot's clip) gets its key when that output is made: it waits
for exactly those steps (a downstream shot waits only for its own upstream), then its job is
resolved from what is made, its continuity frames are extracted (a CPU slot), and it runs like any
other step. Until then the budget counts it as spent.

Every paid step runs through a generator (run/generate.py): one per provider and kind of output
(clips, stills), sharing the provider's slots, one purse for the budget (a render on two providers
has one budget), one report and one numbering of the steps in the events. Money goes through each
generator's account (money.py).

``on_end`` is told of each step's end: CPU steps that take the outputs (the pipelined stitch's
segment encodes, app/segments.py) start from there, beside the paid steps, under the same CPU
slots as the frames; the graph itself knows nothing of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from kling_render.jobs import Job
from kling_render.run.context import Run
from kling_render.run.frames import FrameMaker
from kling_render.run.generate import Generator
from kling_render.run.report import RunReport

__all__ = ["GraphRun", "PaidStep", "StepEnded"]

Kind = Literal["still", "clip"]


@dataclass(frozen=True)
class PaidStep:
    """A still or a take of a shot. ``job`` is None while an input it takes is not made."""

    name: str
    kind: Kind
    provider: str
    job: Job | None
    waits: tuple[str, ...] = ()  # the steps whose outputs it takes
    cost_usd: float = 0.0


Resolve = Callable[[PaidStep], Job | str]
"""A waiting step's job now that the steps it waits for have ended, or why it cannot run."""

StepEnded = Callable[[PaidStep], None]
"""Told when a step has ended, whatever its outcome (done, cached, failed, skipped), on the event
loop: the CPU steps downstream of it (the pipelined stitch's segments) look for what is ready now.
It must return at once; what it starts runs beside the paid steps, never inside them."""


class GraphRun:
    """One render's paid steps (see the module docstring)."""

    def __init__(
        self,
        steps: Sequence[PaidStep],
        generators: Mapping[tuple[str, Kind], Generator],
        *,
        resolve: Resolve,
        frames: FrameMaker,
        on_end: StepEnded | None = None,
    ) -> None:
        self.steps = list(steps)
        self.generators = dict(generators)
        self.resolve = resolve
        self.frames = frames
        self.on_end = on_end
        self._by_name = {s.name: s for s in self.steps}
        self._ends: dict[str, asyncio.Future[None]] = {}

    def _generator(self, step: PaidStep) -> Generator:
        return self.generators[(step.provider, step.kind)]

    @property
    def any_run(self) -> Run:
        return next(iter(self.generators.values())).run

    async def run(self) -> RunReport:
        """Run every step; raises BudgetError before anything is paid when the steps to submit
        (and every waiting step, counted as spent) cost more than the budget."""
        known = [s for s in self.steps if s.job is not None]
        waiting = [s for s in self.steps if s.job is None]
        loop = asyncio.get_running_loop()
        for step in self.steps:
            self._ends[step.name] = loop.create_future()
        # The start: what each known step needs, per generator; one budget check for all of them.
        groups: dict[tuple[str, Kind], list[Job]] = {}
        for step in known:
            assert step.job is not None
            groups.setdefault((step.provider, step.kind), []).append(await self._with_frames(step, step.job))
        actions = {}
        to_submit = sum(s.cost_usd for s in waiting)
        for where, jobs in groups.items():
            found, cost = await self.generators[where].triage(jobs)
            actions[where] = found
            to_submit += cost
        first = next(iter(self.generators.values()))
        # One budget for the whole render, whichever provider pays a step: every generator shares
        # the purse, and a free provider's account has no budget to check.
        payer = next((g for g in self.generators.values() if g.account.charges), first)
        payer.account.check_budget(to_submit)
        for n, (where, jobs) in enumerate(groups.items()):
            self.generators[where].begin(jobs, to_submit, announce=n == 0)
        if not groups:
            first.begin([], to_submit)
        tasks: list[asyncio.Task[None]] = []
        try:
            for where, jobs in groups.items():
                launched = self.generators[where].launch(jobs, actions[where])
                for job in jobs:
                    task = launched.get(job.shot_id)
                    tasks.append(asyncio.create_task(self._finish(job.shot_id, task)))
            for step in waiting:
                tasks.append(asyncio.create_task(self._wait_then_run(step)))
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            for generator in self.generators.values():
                generator.run.fetcher.close()
                with contextlib.suppress(Exception):  # a stale hold only over-counts the project's spend
                    await generator.account.flush_releases()
            self.any_run.emit("finish", message=self.any_run.summary())
        return self.any_run.report

    async def _with_frames(self, step: PaidStep, job: Job) -> Job:
        """``job`` with its continuity frames extracted, unless its output is made already."""
        generator = self._generator(step)
        if not self.frames.needs(job) or generator.run.cache.get(step.provider, job.key) is not None:
            return job
        return await self.frames.prepare(job)

    async def _finish(self, name: str, task: asyncio.Task[None] | None) -> None:
        try:
            if task is not None:
                await task
        finally:
            self._ended(name)

    def _ended(self, name: str) -> None:
        """The step ``name`` ended: the steps waiting for it go on, and ``on_end`` is told (once)."""
        end = self._ends[name]
        if end.done():
            return
        end.set_result(None)
        if self.on_end is not None:
            try:
                self.on_end(self._by_name[name])
            except Exception:  # a watcher's failure never touches the paid steps: it is dropped
                self.on_end = None

    async def _wait_then_run(self, step: PaidStep) -> None:
        try:
            for upstream in step.waits:
                end = self._ends.get(upstream)
                if end is not None:
                    await asyncio.shield(end)
            generator = self._generator(step)
            found = self.resolve(step)
            if isinstance(found, str):
                generator.run.skip(step.name, found)
                return
            job = await self.frames.prepare(found)
            await generator.late(job)
        finally:
            self._ended(step.name)
