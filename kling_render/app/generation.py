"""The paid part of `render`: the plan's stills and takes as steps of one graph (run/graph.py),
wired to their providers, state, caches, remote and budget; and, beside them, the pipelined
stitch's segment encodes (stitch/pipelined.py), started as the clip steps end.

A render may use several providers (a shot's or a still's own ``provider:``): each step carries
its provider, and the graph runs one generator per (provider, kind of output), each with its
provider's state, slots and options, all under the run's one lock and one purse (one budget for
the whole render, whichever provider a step pays)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Literal

from kling_render.jobs import Job
from kling_render.media.image_check import check_image
from kling_render.money import Purse
from kling_render.plan.inputs import resolve, still_cost_of, still_job, wait_reason
from kling_render.plan.keys import doc_key
from kling_render.plan.model import Plan
from kling_render.plan.plan import take_job
from kling_render.plan.shard import in_shard
from kling_render.project.project import Project, cost_of
from kling_render.providers import provider_charges
from kling_render.providers.base import Provider
from kling_render.records.lockfile import LockFile
from kling_render.records.state import StateStore
from kling_render.report.progress import EventSink
from kling_render.run.context import Run
from kling_render.run.frames import FrameMaker
from kling_render.run.generate import Generator
from kling_render.run.graph import GraphRun, Kind, PaidStep
from kling_render.run.report import RunOptions, RunReport
from kling_render.run.scheduler import default_verify
from kling_render.stitch.pipelined import SegmentPipeline
from kling_render.store.cache import ClipCache, stills_of
from kling_render.store.outputs import CachedOutputs
from kling_render.store.remote.connect import Remote
from kling_render.store.remote.spend import RemoteSpend
from kling_render.workers import stitch_workers

__all__ = ["Pipelined", "cpu_slots", "paid_steps", "run_paid_steps", "step_providers"]

Until = Literal["stills"] | None

Pipelined = Callable[[asyncio.Semaphore], SegmentPipeline]
"""Makes the pipelined stitch of a run, given the run's CPU slots (app/segments.py)."""


def cpu_slots(project: Project) -> int:
    """CPU steps a run may hold at once (frames, segment encodes): the cores, within the stitch's
    memory budget at the project's output size (workers.py)."""
    from kling_render.env import stitch_memory_mb

    return stitch_workers(project.output.width, project.output.height, stitch_memory_mb())


def paid_steps(the_plan: Plan, *, shard: tuple[int, int] | None, until: Until) -> list[PaidStep]:
    """The plan's stills and takes as steps, each on its own provider (all, or shard K of N: a step
    belongs to a shard by its key, or while it waits by its stand-in key, which every shard
    computes alike). ``until stills``: the stills only (the approval gate before video spend)."""

    def mine(key: str) -> bool:
        return shard is None or in_shard(key, *shard)

    steps: list[PaidStep] = []
    for still in the_plan.stills:
        key = still.key or doc_key({"waiting": still.id})  # the same in every shard
        if not mine(key):
            continue
        charges = provider_charges(still.provider)
        waits = tuple(sorted({w.upstream for w in still.waits}))
        job = None if still.waits or still.job is None else _priced(still.job, charges)
        cost = float(still.cost) if charges else 0.0
        steps.append(PaidStep(still.id, "still", still.provider, job, waits, cost))
    if until == "stills":
        return steps
    for planned in the_plan.shots:
        if not mine(planned.job.key):
            continue
        charges = provider_charges(planned.provider)
        waits = tuple(sorted({w.upstream for w in planned.waits}))
        job = None if planned.waits else _priced(planned.job, charges)
        cost = float(planned.cost) if charges else 0.0
        steps.append(PaidStep(planned.id, "clip", planned.provider, job, waits, cost))
    return steps


def step_providers(the_plan: Plan) -> list[str]:
    """Every provider the plan's steps render on, the project's first."""
    found = [the_plan.provider, *(s.provider for s in the_plan.stills), *(p.provider for p in the_plan.shots)]
    return list(dict.fromkeys(found))


def _priced(job: Job, charges: bool) -> Job:
    """A free provider spends nothing, whatever the plan's prices say."""
    return job if charges else replace(job, cost_usd=0.0)


def resolver(project: Project, cache: ClipCache) -> Callable[[PaidStep], Job | str]:
    """How a waiting step gets its job once the steps it waits for ended: resolved again against
    what the cache holds now (its key from the outputs' digests, each on its own provider), or why
    it cannot run."""
    outputs = CachedOutputs(cache)
    shots = {s.id: s for s in project.shots}
    stills = {s.step_id: s for s in project.stills}

    def resolve_step(step: PaidStep) -> Job | str:
        wanted = [step.name] if step.kind == "still" else [step.name.split("#", 1)[0]]
        res = resolve(project, project.provider, outputs, wanted=wanted)
        unit = res.units.get(step.name)
        if unit is None:
            return f"{step.name} is no longer in the project"
        if unit.key is None:
            return wait_reason(unit.waits).replace("will re-render", "not rendered").replace(
                "is not made yet", "was not made"
            )
        charges = provider_charges(unit.provider)
        if step.kind == "still":
            still = stills[step.name]
            cost = still_cost_of(still, project.prices, unit.provider)
            return _priced(still_job(still, unit, cost or Fraction(0)), charges)
        shot = shots[wanted[0]]
        cost = cost_of(shot, project.prices, unit.provider)
        return _priced(take_job(shot, unit, cost or Fraction(0)), charges)

    return resolve_step


def run_paid_steps(
    project: Project,
    steps: Sequence[PaidStep],
    providers: Mapping[str, Provider],
    *,
    states: Mapping[str, StateStore],
    cache: ClipCache,
    options: Mapping[str, RunOptions],
    events: EventSink,
    lock: LockFile,
    remote: Remote | None,
    spend: RemoteSpend | None,
    segments: Pipelined | None = None,
) -> RunReport:
    """Run ``steps`` in a fresh event loop, each through its provider's generator (``providers``,
    ``states`` and ``options`` by provider name: the step's provider's state file, slots, poll
    interval and grace); closes every provider. Ctrl-C stops the run with every move already
    flushed and returns the report with ``interrupted`` (exit code 130). Raises BudgetError before
    anything is paid when the render would pass the budget (one check for every provider).

    ``segments``: the pipelined stitch, told of every clip step's end; when the steps are over,
    its running encodes finish (those still queued are left to the stitch); on an error or Ctrl-C
    they are stopped."""
    budget = next((o.budget_usd for o in options.values() if o.budget_usd is not None), None)
    report = RunReport(budget_usd=budget)
    positions: dict[str, int] = {}

    async def main() -> RunReport:
        try:
            purse = Purse()
            cpu = asyncio.Semaphore(cpu_slots(project))
            kinds: dict[str, set[Kind]] = {}
            for step in steps:
                kinds.setdefault(step.provider, set()).add(step.kind)
            if not kinds:  # nothing to run: one generator still says the start and the finish
                kinds[next(iter(providers))] = {"clip"}
            generators: dict[tuple[str, Kind], Generator] = {}
            for name, made in kinds.items():
                provider, opts = providers[name], options[name]
                slots = asyncio.Semaphore(max(1, opts.concurrency or provider.default_concurrency))
                for kind in sorted(made):
                    run = Run(
                        provider, state=states[name], cache=cache if kind == "clip" else stills_of(cache),
                        options=opts, events=events, lock=lock,
                        verify=default_verify if kind == "clip" else check_image, total=len(steps), report=report,
                        positions=positions,
                    )  # fmt: skip
                    generators[(name, kind)] = Generator(run, remote=remote, spend=spend, slots=slots, purse=purse)
            pipeline = segments(cpu) if segments is not None else None

            def ended(step: PaidStep) -> None:
                if pipeline is not None and step.kind == "clip":
                    pipeline.clip_ended()

            graph = GraphRun(
                steps, generators, resolve=resolver(project, cache), frames=FrameMaker(cache, cpu), on_end=ended
            )
            try:
                done = await graph.run()
            except BaseException:
                if pipeline is not None:
                    await pipeline.abort()
                raise
            if pipeline is not None:
                await pipeline.finish()
            return done
        finally:
            for provider in providers.values():
                with contextlib.suppress(Exception):  # one provider's close never skips another's
                    await provider.aclose()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        report.interrupted = True
        return report
