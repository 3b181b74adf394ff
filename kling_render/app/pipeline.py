"""render / stitch / status: plan -> runner -> stitch, wired from the pieces (I/O lives here)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from fractions import Fraction
from typing import IO, TYPE_CHECKING

from kling_render.app.commands import plan_for
from kling_render.app.cut import clip_units, make_cut, manifest_file
from kling_render.app.options import RenderOptions, RenderResult
from kling_render.errors import MissingClipsError
from kling_render.plan.inputs import step_names
from kling_render.plan.model import Plan
from kling_render.project.project import Project
from kling_render.report.progress import Event
from kling_render.report.sinks import make_sink
from kling_render.store.cache import ClipCache

if TYPE_CHECKING:
    from kling_render.providers.base import Provider
    from kling_render.records.state import StateStore
    from kling_render.run.report import RunOptions

# Seconds between polls when the user does not say: the local provider renders in a second or two,
# a real Kling task takes one to three minutes.
DEFAULT_POLL_INTERVAL = {"local": 0.2, "wavespeed": 5.0, "fal": 5.0}


def budget_for(project: Project, max_cost: float | None) -> float | None:
    return max_cost if max_cost is not None else project.budget_usd


def spend_id(project: Project, provider: str) -> str:
    """The id of the project's spend record on the remote: the sha256 of every step key of the
    whole project (whatever --only or --shard select), so every shard of one render, a partial
    render and a re-run of it share one budget; an edit of the project starts a new record."""
    from kling_render.plan.keys import doc_key

    cache = ClipCache.for_project(project.path)
    keys = {unit.some_key for unit in clip_units(project, provider, cache).values()}
    return doc_key({"spend": sorted(keys), "provider": provider})


def render(project: Project, opts: RenderOptions, *, stream: IO[str] | None = None) -> RenderResult:
    """Generate every shot that is not cached, then stitch the final cut (unless ``no_stitch``)."""
    from kling_render.app.commands import on_provider
    from kling_render.app.generation import paid_steps, run_paid_steps, step_providers
    from kling_render.providers import check_provider, make_provider
    from kling_render.records.lockfile import LockFile
    from kling_render.records.state import state_path_for
    from kling_render.store.remote.sync import open_for

    project = on_provider(project, opts.provider)  # --provider: every step there (exit 2 if it cannot)
    remote = open_for(project.remote, project.display)  # a bad URL: exit 2, before anything is written
    if opts.shard is not None and remote is None:
        from kling_render.errors import UsageError

        raise UsageError(
            "--shard needs a remote (KLING_RENDER_REMOTE, or remote: in the project): without one the shards "
            "share no clips and no later stitch can find them"
        )
    cache = ClipCache.for_project(project.path)
    sink = make_sink(json_lines=opts.json_events, stream=stream)
    try:
        if remote is not None:
            from kling_render.app.team import gather_team_outputs

            # The team's stills and clips that key other steps, before any key is computed (app/team.py).
            gather_team_outputs(project, project.provider, cache, remote, sink, cut=False)
        the_plan = plan_for(project, None, opts.only)
        if opts.reviewed_plan is not None:
            from kling_render.errors import UsageError
            from kling_render.plan.plan import stale_reasons

            reasons = stale_reasons(opts.reviewed_plan, the_plan)
            if reasons:
                raise UsageError("stale plan: " + "; ".join(reasons) + " (run `kling-render plan --out` again)")
        names = step_providers(the_plan)
        for name in names:  # a missing key or a bad URL stops the run before any state is written
            check_provider(name)
        # The budget is checked by the runner, before anything is submitted, against what this run
        # would submit: a shot whose paid task the state file records is polled again for free,
        # though the plan (which knows only the cache) still counts it as to render.
        budget = budget_for(project, opts.max_cost)
        if opts.shard is not None and budget is not None and the_plan.charges:
            # One budget for the project, whichever shard runs: a shard refuses to start when the whole
            # project's plan is over it (the spend record on the remote caps what they pay together).
            whole = float(_to_pay(the_plan))
            if whole > budget + 1e-9:
                from kling_render.errors import BudgetError

                raise BudgetError(
                    f"rendering the whole project would cost ${whole:.4f}, over the budget of ${budget:.4f}; every "
                    "shard refuses to start: raise the budget (budget.max_usd or --max-cost) or render fewer shots"
                )
        steps = paid_steps(the_plan, shard=opts.shard, until=opts.until)
        # Each provider's own state namespace, under the project file's one run lock (state.py), held
        # through the stitch too: another render or stitch of this project would write the same
        # cut, manifest and lock file.
        lock = LockFile(project.lock_path, paid=the_plan.charges)
        segments = None
        if not opts.no_stitch and not opts.force and opts.until is None and project.rows is None:
            from kling_render.app.segments import cut_is_current, segment_pipeline

            if not cut_is_current(project, the_plan.provider, cache, manifest_file(project)):
                # The pipelined stitch: each segment encoded as soon as its clips exist, while the
                # provider works on the others (a shard's go to the remote); the stitch encodes the rest.
                segments = segment_pipeline(
                    project, the_plan.provider, cache, sink, remote, shard=opts.shard is not None
                )
        with _state(project, the_plan.provider, opts) as state, contextlib.ExitStack() as stack:
            states = {the_plan.provider: state}
            for name in names:
                if name not in states:
                    states[name] = stack.enter_context(state.sibling(state_path_for(project.path, name)))
            lock.prepare()
            providers: dict[str, Provider] = {}
            try:
                for name in names:
                    providers[name] = make_provider(name, cache_dir=cache.root, endpoints=_endpoints(the_plan, name))
            except BaseException:
                _close_all(providers)
                raise
            report = run_paid_steps(
                project,
                steps,
                providers,
                states=states,
                cache=cache,
                options={name: _run_options(project, p, opts, budget) for name, p in providers.items()},
                events=sink,
                lock=lock,
                remote=remote,
                spend=None if remote is None or budget is None else remote.spend(spend_id(project, the_plan.provider)),
                segments=segments,
            )
            result = RenderResult(report.exit_code, the_plan, report.to_json())
            if opts.until == "stills":  # the approval gate: nothing of the video is paid yet
                return result
            if project.rows is not None:  # a cut per row, each as soon as its own clips exist
                from kling_render.app.rows_pipeline import finish_rows

                return finish_rows(project, opts, result, cache, sink, lock, remote)
            if result.exit_code != 0:
                return result
            if not opts.only and opts.shard is None:
                # A full render succeeded: shots no longer in the project leave the lock file.
                gone = lock.prune(step_names(project))
                if gone:
                    sink.emit(Event("lock-pruned", message=f"removed from {lock.path.name}: {', '.join(gone)}",
                                    extra={"removed": gone}))
            if opts.shard is not None and remote is not None and not opts.no_stitch:
                # A shard's cut is made by a later `stitch`; its share of the segments is made here.
                from kling_render.app.segments import encode_shard_segments

                encode_shard_segments(project, the_plan.provider, cache, remote, sink)
            if opts.no_stitch or opts.shard is not None:
                return result
            try:
                outcome = make_cut(project, the_plan.provider, cache, sink, force=opts.force, lock=lock, remote=remote)
            except MissingClipsError as exc:
                if not opts.only:
                    raise
                # A partial render (--only): the other shots have no clip yet, so there is no cut to make.
                sink.emit(
                    Event("stitch-skipped", message=f"not stitched: no clip yet for {', '.join(exc.shot_ids)}")
                )
                return result
            result.final_cut = outcome.path
            result.up_to_date = outcome.up_to_date
        return result
    finally:
        sink.close()


def _state(project: Project, provider: str, opts: RenderOptions) -> StateStore:
    from kling_render.records.state import StateStore

    return StateStore.for_project(project.path, provider, lock_timeout=opts.lock_timeout)


def _to_pay(the_plan: Plan) -> Fraction:
    """What rendering the plan pays: its steps to render on providers that charge, each distinct
    output once (a free provider's steps cost nothing, whatever the plan shows for them)."""
    from kling_render.providers import provider_charges

    clips = {p.job.key: p.cost for p in the_plan.to_render if provider_charges(p.provider)}
    stills = {s.key or s.id: s.cost for s in the_plan.stills_to_render if provider_charges(s.provider)}
    return sum(clips.values(), Fraction(0)) + sum(stills.values(), Fraction(0))


def _endpoints(the_plan: Plan, provider: str) -> list[str]:
    """The model endpoints the plan's steps on ``provider`` use (fal follows a request by its app)."""
    from kling_render.plan.inputs import offer_of

    found = [p.job.endpoint for p in the_plan.shots if p.provider == provider]
    found += [offer_of(s.still.model, provider).endpoint for s in the_plan.stills if s.provider == provider]
    return list(dict.fromkeys(found))


def _run_options(project: Project, provider: Provider, opts: RenderOptions, budget: float | None) -> RunOptions:
    """How ``provider``'s steps run: its slots (--concurrency, the project's, or its default), poll
    interval and reconcile grace; the budget applies to a provider that charges."""
    from kling_render import env
    from kling_render.run.report import RECONCILE_GRACE, RunOptions

    interval = opts.poll_interval
    if interval is None:
        interval = DEFAULT_POLL_INTERVAL.get(provider.name, 5.0)
    grace = env.reconcile_grace_override()
    # A provider whose task list shows only tasks that have ended (fal) proves an absence later.
    default_grace = max(RECONCILE_GRACE, getattr(provider, "list_lag", 0.0))
    return RunOptions(
        reconcile_grace=default_grace if grace is None else grace,
        # A free provider (local animatics) spends nothing against the budget.
        budget_usd=budget if provider.charges else None,
        concurrency=opts.concurrency or project.concurrency_for(provider.name),
        poll_interval=interval,
        resubmit_unknown=opts.resubmit_unknown,
        retry_failed=opts.retry_failed,
    )


def _close_all(providers: Mapping[str, Provider]) -> None:
    """Close the providers made so far when another cannot be made (no run will close them)."""
    import asyncio

    async def close() -> None:
        for provider in providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()

    if providers:
        asyncio.run(close())


__all__ = ["DEFAULT_POLL_INTERVAL", "RenderOptions", "RenderResult", "budget_for", "render", "spend_id"]
