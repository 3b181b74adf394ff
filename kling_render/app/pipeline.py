"""render / stitch / status: plan -> runner -> stitch, wired from the pieces (I/O lives here)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from kling_render.app.commands import plan_for
from kling_render.errors import KlingRenderError, MissingClipsError
from kling_render.plan.inputs import resolve, step_names, still_cost_of, still_job
from kling_render.plan.model import Plan
from kling_render.plan.plan import take_job
from kling_render.project.project import Project
from kling_render.records import manifest
from kling_render.records.manifest import CutRecord
from kling_render.report.progress import Event, EventSink
from kling_render.report.sinks import make_sink
from kling_render.stitch.graph import AudioSettings, CutClip, OutputSettings
from kling_render.store.cache import ClipCache

if TYPE_CHECKING:
    from kling_render.plan.inputs import Unit
    from kling_render.providers.base import Provider
    from kling_render.records.lockfile import LockFile
    from kling_render.records.state import StateStore
    from kling_render.run.report import RunOptions
    from kling_render.store.remote.connect import Remote

# Seconds between polls when the user does not say: the local provider renders in a second or two,
# a real Kling task takes one to three minutes.
DEFAULT_POLL_INTERVAL = {"local": 0.2, "wavespeed": 5.0, "fal": 5.0}


@dataclass(frozen=True)
class RenderOptions:
    provider: str | None = None
    only: Sequence[str] | None = None
    max_cost: float | None = None
    concurrency: int | None = None
    poll_interval: float | None = None
    resubmit_unknown: bool = False
    retry_failed: bool = False
    no_stitch: bool = False
    json_events: bool = False
    lock_timeout: float = 0.0
    force: bool = False  # stitch even when the final cut is up to date
    reviewed_plan: dict[str, Any] | None = None  # `render --plan`: render exactly this, or refuse
    shard: tuple[int, int] | None = None  # `--shard K/N`: only the shots of shard K of N (shard.py)
    until: Literal["stills"] | None = None  # `--until stills`: pay for the stills only (the approval gate)


@dataclass
class RenderResult:
    exit_code: int
    plan: Plan
    report: dict[str, Any] = field(default_factory=dict)
    final_cut: Path | None = None
    up_to_date: bool = False  # the final cut was already up to date: not re-encoded
    message: str = ""
    cuts: list[dict[str, Any]] = field(default_factory=list)  # a rows: project: each row's cut (rows_pipeline)


def budget_for(project: Project, max_cost: float | None) -> float | None:
    return max_cost if max_cost is not None else project.budget_usd


def spend_id(project: Project, provider: str) -> str:
    """The id of the project's spend record on the remote: the sha256 of every step key of the
    whole project (whatever --only or --shard select), so every shard of one render, a partial
    render and a re-run of it share one budget; an edit of the project starts a new record."""
    from kling_render.plan.keys import doc_key

    cache = ClipCache.for_project(project.path)
    keys = {unit.some_key for unit in _clip_keys(project, provider, cache).values()}
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
                outcome = _stitch(project, the_plan.provider, cache, sink, force=opts.force, lock=lock, remote=remote)
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


def stitch(
    project: Project,
    provider: str | None,
    *,
    stream: IO[str] | None = None,
    json_events: bool = False,
    force: bool = False,
    lock_timeout: float = 0.0,
) -> StitchOutcome:
    """Cut the final video from cached clips only; MissingClipsError names shots without one.

    With a remote, the clips the local cache lacks are pulled first (sha256- and structure-checked),
    so any machine can make the cut of clips rendered elsewhere (CI's shards), and each clip is
    recorded in the lock file; segments another machine encoded are pulled rather than encoded,
    and the ones encoded here are pushed. Skipped when the cut is up to date (see
    :mod:`kling_render.records.manifest`) unless ``force``, which also encodes every segment and the
    audio anew, ignoring the segment store and the remote's segments. Holds the project's run lock
    (waiting up to ``lock_timeout`` seconds)."""
    from kling_render.app.commands import on_provider
    from kling_render.records.state import StateStore
    from kling_render.store.remote.sync import open_for

    project = on_provider(project, provider)
    name = project.provider
    cache = ClipCache.for_project(project.path)
    remote = open_for(project.remote, project.display)
    sink = make_sink(json_lines=json_events, stream=stream)
    try:
        with StateStore.for_project(project.path, name, lock_timeout=lock_timeout):
            # Clips quarantined from here on (by the pulls' and the lock's checks too) are reported by _stitch.
            since = len(cache.quarantined)
            lock = gather_clips(project, name, cache, sink, remote)
            return _stitch(project, name, cache, sink, force=force, lock=lock, reported=since, remote=remote)
    finally:
        sink.close()


def gather_clips(project: Project, provider: str, cache: ClipCache, sink: EventSink, remote: Remote | None) -> LockFile:
    """Before a `stitch` (the caller holds the run lock): the clips the local cache lacks pulled from
    the remote (sha256-checked), and each shot's cached clip recorded in the lock file."""
    from kling_render.app.commands import plan_providers
    from kling_render.app.team import gather_team_outputs
    from kling_render.providers import provider_charges
    from kling_render.records.lockfile import LockFile

    if remote is not None:  # each pulled still or clip gets the download's own check before it counts
        gather_team_outputs(project, provider, cache, remote, sink, cut=True)
    lock = LockFile(project.lock_path, paid=any(provider_charges(p) for p in plan_providers(project)))
    _record_clips(project, provider, cache, lock)
    return lock


def _record_clips(project: Project, provider: str, cache: ClipCache, lock: LockFile) -> None:
    """Each made step (every take, every still) in the lock file, unless already there: a render
    records its own; this records those made elsewhere (CI's shards, a teammate through the
    remote) on the machine that makes the cut. Keys and jobs come from the plan's resolution, the
    one place they are computed (a continuity shot's key names its upstream clip's digest), each
    on its own provider (``provider`` is the project's)."""
    from kling_render.project.project import cost_of
    from kling_render.providers import provider_charges
    from kling_render.records.lockfile import LockEntry
    from kling_render.store.cache import stills_of
    from kling_render.store.outputs import CachedOutputs

    res = resolve(project, provider, CachedOutputs(cache))
    shots = {s.id: s for s in project.shots}
    stills = {s.step_id: s for s in project.stills}
    still_cache = stills_of(cache)
    for unit in res.units.values():
        if unit.key is None:
            continue
        paid = provider_charges(unit.provider)
        if unit.kind == "still":
            still = stills[unit.name]
            cost = still_cost_of(still, project.prices, unit.provider) if paid else None
            job = still_job(still, unit, cost or Fraction(0))
            entry = still_cache.use(unit.provider, unit.key)
        else:
            shot = shots[unit.name.split("#", 1)[0]]
            job = take_job(shot, unit, (cost_of(shot, project.prices, unit.provider) if paid else None) or Fraction(0))
            entry = cache.use(unit.provider, unit.key)  # a damaged clip is quarantined (reported by _stitch)
        if entry is None or lock.holds(job.shot_id, job.key, entry.sha256, job.prompt or None):
            continue
        lock.record(job.shot_id, LockEntry.of(job, unit.provider, entry.task_id, entry.sha256, entry.duration))


@dataclass(frozen=True)
class StitchOutcome:
    path: Path
    up_to_date: bool  # the existing cut was kept: nothing was encoded
    cut: CutRecord
    steps: dict[str, Any] = field(default_factory=dict)  # segments (made, encoded, pulled), audio_encoded


@dataclass(frozen=True)
class PreparedCut:
    """Everything a stitch of the project needs, and the manifest inputs it is recorded under."""

    clips: list[CutClip]
    output: OutputSettings
    audio: AudioSettings | None
    inputs: dict[str, Any]
    shot_settings: dict[str, dict[str, Any]]  # per shot: its trim and transition (for the lock)


def manifest_file(project: Project) -> Path:
    """Where the project's stitch manifest lives: beside its state (a row's cut: ``rows/<key>/``)."""
    from kling_render.records.state import state_dir_for

    where = state_dir_for(project.path)
    return manifest.manifest_path(where / "rows" / project.row_key if project.row_key else where)


def prepare_cut(project: Project, provider: str, cache: ClipCache) -> PreparedCut:
    """The clips of every shot (from the cache) and the cut's settings; MissingClipsError if any is not cached."""
    from kling_render import stitch as stitching
    from kling_render.app.clips import clip_info
    from kling_render.app.segments import cut_inputs_doc

    keys = _clip_keys(project, provider, cache)
    # Only clips that still match their recorded sha256 reach a cut; the others are quarantined.
    entries = {sid: cache.use(k.provider, k.key) if k.key is not None else None for sid, k in keys.items()}
    missing = [shot.id for shot in project.shots if entries.get(shot.id) is None]
    if missing:
        raise MissingClipsError(missing)
    clips: list[CutClip] = []
    for shot in project.shots:
        entry = entries[shot.id]
        assert entry is not None
        # A clip that continues its input (video-extend) holds that input then the new part: the cut
        # keeps only the new part, its last ``duration`` seconds; the shot's trim is within it.
        offset = max(0.0, entry.duration - shot.duration) if shot.model.extends is not None else 0.0
        clip = stitching.CutClip(
            shot_id=shot.id,
            path=entry.path,
            info=clip_info(cache, entry, shot.id),
            trim_start=offset + shot.trim.start,
            trim_end=offset + shot.trim.end if shot.trim.end is not None else None,
            transition=shot.transition.type,
            transition_duration=shot.transition.duration,
            sha256=entry.sha256,
        )
        clips.append(clip)
    out = project.output
    audio = None
    if project.audio is not None:
        a = project.audio
        audio = stitching.AudioSettings(music=a.music, music_volume=a.music_volume, duck=a.duck, normalize=a.normalize)
    doc = cut_inputs_doc(project, provider, {sid: e.sha256 for sid, e in entries.items() if e is not None})
    return PreparedCut(
        clips=clips,
        output=stitching.OutputSettings(width=out.width, height=out.height, fps=out.fps, fit=out.fit),
        audio=audio,
        inputs=doc,
        shot_settings={shot.id: manifest.shot_cut_settings(shot) for shot in project.shots},
    )


def cut_freshness(project: Project, provider: str, *, hash_cut: bool = True) -> manifest.Freshness:
    """Is the final cut on disk the one the project's current clips and settings make? (for reports;
    ``hash_cut=False`` compares the recorded inputs and the file's size only)."""
    cache = ClipCache.for_project(project.path)
    try:
        prepared = prepare_cut(project, provider, cache)
    except MissingClipsError as exc:
        recorded = manifest.read(manifest_file(project))
        reasons = [f"no {provider} clip yet for {', '.join(exc.shot_ids)}"]
        made_from = recorded.inputs.get("provider") if recorded is not None else None
        if made_from is not None and made_from != provider:
            reasons.insert(0, f"it was made from {made_from} clips, not {provider}")
        return manifest.Freshness(False, reasons, recorded)
    return manifest.check(manifest_file(project), prepared.inputs, project.output.path, hash_cut=hash_cut)


def _clip_keys(project: Project, provider: str, cache: ClipCache) -> dict[str, Unit]:
    """The clip each shot's cut uses: its picked take (plan.inputs.cut_units), with its provider and
    key against what the cache holds (the key of a shot that takes another's clip or a frame of it
    names that clip's digest: None until it is made)."""
    from kling_render.plan.inputs import cut_units
    from kling_render.store.outputs import CachedOutputs

    return cut_units(project, provider, CachedOutputs(cache))


def _stitch(
    project: Project,
    provider: str,
    cache: ClipCache,
    sink: EventSink,
    *,
    force: bool,
    lock: LockFile,
    reported: int | None = None,
    remote: Remote | None = None,
) -> StitchOutcome:
    from kling_render import stitch as stitching
    from kling_render.fsutil import sha256_file
    from kling_render.records.state import now_iso

    # What killed stitches left goes first, even when the cut turns out up to date: temporary cuts
    # beside it, work directories, segments half-written into the cache's temp directory.
    stitching.clean_leftovers(project.output.path)
    cache.clean_temp()
    # Only clips that still match their recorded sha256 reach a cut; the others are quarantined.
    already = len(cache.quarantined) if reported is None else reported  # those already reported
    keys = _clip_keys(project, provider, cache)

    def report_quarantined() -> None:
        nonlocal already
        for moved in cache.quarantined[already:]:
            if moved.provider == stitching.SEGMENT_AREA:
                sink.emit(Event("quarantined", message=f"cached segment {moved.key[:12]} {moved.reason}: "
                                                       f"quarantined to {moved.moved_to}; it is encoded again"))
            for sid in (s for s, k in keys.items() if k.key == moved.key):
                sink.emit(Event("quarantined", shot_id=sid, message=moved.message))
        already = len(cache.quarantined)

    try:
        prepared = prepare_cut(project, provider, cache)
    finally:
        report_quarantined()
    out = project.output
    where = manifest_file(project)
    project_cut = {
        "order": [shot.id for shot in project.shots],
        "output": prepared.inputs["output"],
        "audio": prepared.inputs["audio"],
    }
    if not force:
        fresh = manifest.check(where, prepared.inputs, out.path)
        if fresh.up_to_date and fresh.manifest is not None:
            cut = fresh.manifest.cut
            sink.emit(
                Event(
                    "stitched",
                    message=f"{out.path} is up to date ({cut.duration:.2f} s, {cut.frames} frames): not re-encoded",
                    extra=_cut_extra(out.path, cut, up_to_date=True),
                )
            )
            lock.record_cut(prepared.shot_settings, project_cut, row=project.row_key)
            return StitchOutcome(out.path, True, cut)
    clips = prepared.clips
    sink.emit(Event("stitching", message=f"{len(clips)} clips -> {out.path}"))

    def progress(step: str, fraction: float) -> None:
        sink.emit(Event("stitch-progress", message=step, extra={"step": step, "fraction": round(fraction, 4)}))

    store = stitching.SegmentStore(cache)
    source = None
    if remote is not None:
        from kling_render.store.remote.segments import SegmentRemote

        source = SegmentRemote(remote.segments)
    try:
        result = stitching.stitch(
            clips, prepared.output, prepared.audio, out.path, progress=progress, segments=store, force=force,
            source=source,
        )  # fmt: skip
    except OSError as exc:  # a read-only or full output folder: the clips are safe in the cache
        from kling_render.errors import StateError

        raise StateError(
            f"cannot write the final cut {out.path}: {exc.strerror or exc}; "
            "the clips are cached: `kling-render stitch` makes the cut once it can be written"
        ) from None
    finally:
        report_quarantined()
        for problem in source.problems if source is not None else []:
            sink.emit(Event("warning", message=problem))
    stat = result.path.stat()
    cut = CutRecord(
        sha256=result.sha256 or sha256_file(result.path),
        size=stat.st_size,
        frames=result.frames,
        fps=prepared.output.fps,
        duration=result.duration,
        stream_copy=result.stream_copy,
    )
    manifest.write(where, prepared.inputs, cut, now_iso())
    lock.record_cut(prepared.shot_settings, project_cut, row=project.row_key)
    if result.encoded_segments or result.audio_encoded or result.pulled_segments:
        with contextlib.suppress(OSError):  # clean-up is best effort: never fails a stitch
            store.sweep([*result.segments, result.audio])
    how = "stream copy" if result.stream_copy else "re-encoded"
    if result.segments:
        how += f", {result.encoded_segments} of {len(result.segments)} segments encoded"
        if result.pulled_segments:
            how += f", {result.pulled_segments} pulled from the remote"
    steps = {
        "segments": len(result.segments),
        "segments_encoded": result.encoded_segments,
        "segments_pulled": result.pulled_segments,
        "audio_encoded": result.audio_encoded,
    }
    sink.emit(
        Event(
            "stitched",
            message=f"{out.path} ({result.duration:.2f} s, {result.frames} frames, {how})",
            extra={**_cut_extra(out.path, cut, up_to_date=False), **steps},
        )
    )
    return StitchOutcome(result.path, False, cut, steps)


def _cut_extra(path: Path, cut: CutRecord, *, up_to_date: bool) -> dict[str, Any]:
    return {
        "path": str(path),
        "duration": round(cut.duration, 4),
        "frames": cut.frames,
        "stream_copy": cut.stream_copy,
        "up_to_date": up_to_date,
        "sha256": cut.sha256,
    }


def status(project: Project, provider: str | None) -> dict[str, Any]:
    """Per-shot state from the state file (pending, submitted, done, failed, unknown), plus cache."""
    from kling_render.app.commands import on_provider
    from kling_render.records.ledger import KeyLedger
    from kling_render.records.state import read_project_state_file
    from kling_render.store.remote.sync import open_for, team_view

    project = on_provider(project, provider)
    name = project.provider
    cache = ClipCache.for_project(project.path)
    keys = _clip_keys(project, name, cache)
    remote = open_for(project.remote, project.display)
    states = {}
    for where in dict.fromkeys([name, *(k.provider for k in keys.values())]):
        recorded, ledgers = read_project_state_file(project.path, where)
        on_remote: set[str] = set()
        differs: dict[str, Any] = {}
        if remote is not None:  # a remote error: exit 1
            mine = [k.key for k in keys.values() if k.provider == where and k.key is not None]
            on_remote, differs = team_view(remote, where, cache, mine)
        states[where] = (recorded, ledgers, on_remote, differs)
    shots = []
    for shot in project.shots:
        where, key = keys[shot.id].provider, keys[shot.id].key or ""
        recorded, ledgers, on_remote, _ = states[where]
        rec = recorded.get(shot.id)
        cached = bool(key) and (cache.use(where, key) is not None or key in on_remote)
        ledger = ledgers.get(key, KeyLedger())
        # the key's tasks over all runs: how many count against its cap, paid and refunded apart
        history = {
            "tasks": ledger.created,
            "paid_usd": round(ledger.paid_usd, 4),
            "refunded_usd": round(ledger.refunded_usd, 4),
            "failed_for_good": ledger.blocked is not None,
        }
        if rec is None or rec.key != key:
            state = "done" if cached else "pending"
            doc: dict[str, Any] = {
                "id": shot.id,
                "status": state,
                "cached": cached,
                "task_id": None,
                "attempts": 0,
                "cost_usd": 0.0,
                "refunded_usd": 0.0,
                "error": None,
                "error_code": None,
                "stale": rec is not None and rec.key != key,
                "ledger": history,
            }
        else:
            state = "done" if cached and rec.status in ("pending", "done") else rec.status
            if state == "done" and not cached:  # its clip is gone or was quarantined: it must be rendered
                state = "pending"
            if state == "submitting":  # the POST may have created a task: SPEC §6 calls it unknown
                state = "unknown"
            doc = {
                "id": shot.id,
                "status": state,
                "cached": cached,
                "task_id": rec.task_id,
                "attempts": rec.attempts,
                "cost_usd": rec.cost_usd,
                "refunded_usd": rec.refunded_usd,
                "error": rec.error,
                "error_code": rec.error_code,
                "stale": False,
                "ledger": history,
            }
        doc["provider"] = where
        shots.append(doc)
    counts: dict[str, int] = {}
    for doc in shots:
        counts[doc["status"]] = counts.get(doc["status"], 0) + 1
    return {
        "project": project.name,
        "provider": name,
        "remote": str(remote.url) if remote is not None else None,
        "shots": shots,
        "counts": counts,
        "quarantined": [moved.message for moved in cache.quarantined],
        # With a remote its record is the team's clip: one that differs here is replaced by the next
        # render or stitch (the cut, and the lock, then change).
        "differs_from_team": [
            f"{shot_id}: {states[unit.provider][3][unit.key].message} at the next render or stitch"
            for shot_id, unit in keys.items()
            if unit.key is not None and unit.key in states[unit.provider][3]
        ],
        "final_cut": str(project.output.path) if project.output.path.is_file() else None,
    }


__all__ = [
    "KlingRenderError",
    "PreparedCut",
    "RenderOptions",
    "RenderResult",
    "StitchOutcome",
    "cut_freshness",
    "prepare_cut",
    "render",
    "status",
    "stitch",
]
