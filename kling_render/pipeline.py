"""render / stitch / status: plan -> runner -> stitch, wired from the pieces (I/O lives here)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kling_render.cache import CachedClip, ClipCache
from kling_render.commands import plan_for
from kling_render.errors import KlingRenderError, MissingClipsError
from kling_render.plan import Plan
from kling_render.progress import Event, EventSink, make_sink
from kling_render.project import Project

if TYPE_CHECKING:
    from kling_render.stitch.probe import MediaInfo

# Seconds between polls when the user does not say: the local provider renders in a second or two,
# a real Kling task takes one to three minutes.
DEFAULT_POLL_INTERVAL = {"local": 0.2, "wavespeed": 5.0}


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
    reviewed_plan: dict[str, Any] | None = None  # `render --plan`: render exactly this, or refuse


@dataclass
class RenderResult:
    exit_code: int
    plan: Plan
    report: dict[str, Any] = field(default_factory=dict)
    final_cut: Path | None = None
    message: str = ""


def budget_for(project: Project, max_cost: float | None) -> float | None:
    return max_cost if max_cost is not None else project.budget_usd


def render(project: Project, opts: RenderOptions, *, stream: IO[str] | None = None) -> RenderResult:
    """Generate every shot that is not cached, then stitch the final cut (unless ``no_stitch``)."""
    from kling_render import env
    from kling_render.lockfile import LockFile
    from kling_render.providers import make_provider
    from kling_render.run_report import RECONCILE_GRACE
    from kling_render.runner import RunOptions, run
    from kling_render.state import StateStore

    the_plan = plan_for(project, opts.provider, opts.only)
    if opts.reviewed_plan is not None:
        from kling_render.errors import UsageError
        from kling_render.plan import stale_reasons

        reasons = stale_reasons(opts.reviewed_plan, the_plan)
        if reasons:
            raise UsageError("stale plan: " + "; ".join(reasons) + " (run `kling-render plan --out` again)")
    # The budget is checked by the runner, before anything is submitted, against what this run
    # would submit: a shot whose paid task the state file records is polled again for free,
    # though the plan (which knows only the cache) still counts it as to render.
    budget = budget_for(project, opts.max_cost)
    cache = ClipCache.for_project(project.path)
    sink = make_sink(json_lines=opts.json_events, stream=stream)
    try:
        provider = make_provider(the_plan.provider, cache_dir=cache.root)
        interval = opts.poll_interval
        if interval is None:
            interval = DEFAULT_POLL_INTERVAL.get(the_plan.provider, 5.0)
        grace = env.reconcile_grace_override()
        run_opts = RunOptions(
            reconcile_grace=RECONCILE_GRACE if grace is None else grace,
            # A free provider (local animatics) spends nothing against the budget.
            budget_usd=budget if provider.charges else None,
            concurrency=opts.concurrency or project.concurrency_for(the_plan.provider),
            poll_interval=interval,
            resubmit_unknown=opts.resubmit_unknown,
            retry_failed=opts.retry_failed,
        )
        jobs = [p.job for p in the_plan.shots]
        if not provider.charges:  # nothing is spent, whatever the plan's (wavespeed) prices say
            jobs = [replace(job, cost_usd=0.0) for job in jobs]
        with StateStore.for_project(project.path, lock_timeout=opts.lock_timeout) as state:
            report = run(
                jobs,
                provider,
                state=state,
                cache=cache,
                options=run_opts,
                events=sink,
                lock=LockFile(project.lock_path),
            )
        result = RenderResult(report.exit_code, the_plan, report.to_json())
        if result.exit_code != 0:
            return result
        if opts.no_stitch:
            return result
        try:
            result.final_cut = _stitch(project, the_plan.provider, cache, sink)
        except MissingClipsError as exc:
            if not opts.only:
                raise
            # A partial render (--only): the other shots have no clip yet, so there is no cut to make.
            sink.emit(Event("stitch-skipped", message=f"not stitched: no clip yet for {', '.join(exc.shot_ids)}"))
        return result
    finally:
        sink.close()


def stitch(project: Project, provider: str | None, *, stream: IO[str] | None = None, json_events: bool = False) -> Path:
    """Cut the final video from cached clips only; MissingClipsError names shots without one."""
    from kling_render.commands import pick_provider

    name = pick_provider(project, provider)
    cache = ClipCache.for_project(project.path)
    sink = make_sink(json_lines=json_events, stream=stream)
    try:
        return _stitch(project, name, cache, sink)
    finally:
        sink.close()


def _clip_keys(project: Project, provider: str) -> dict[str, str]:
    from kling_render.plan import shot_key

    return {shot.id: shot_key(provider, shot) for shot in project.shots}


def _stitch(project: Project, provider: str, cache: ClipCache, sink: EventSink) -> Path:
    from kling_render import stitch as stitching

    keys = _clip_keys(project, provider)
    entries = {sid: cache.get(provider, key) for sid, key in keys.items()}
    missing = [sid for sid, entry in entries.items() if entry is None]
    if missing:
        raise MissingClipsError(missing)
    clips = []
    for shot in project.shots:
        entry = entries[shot.id]
        assert entry is not None
        clips.append(
            stitching.CutClip(
                shot_id=shot.id,
                path=entry.path,
                info=_media_info(entry),
                trim_start=shot.trim.start,
                trim_end=shot.trim.end,
                transition=shot.transition.type,
                transition_duration=shot.transition.duration,
            )
        )
    out = project.output
    audio = None
    if project.audio is not None:
        a = project.audio
        audio = stitching.AudioSettings(music=a.music, music_volume=a.music_volume, duck=a.duck, normalize=a.normalize)
    sink.emit(Event("stitching", message=f"{len(clips)} clips -> {out.path}"))
    result = stitching.stitch(
        clips,
        stitching.OutputSettings(width=out.width, height=out.height, fps=out.fps, fit=out.fit),
        audio,
        out.path,
    )
    how = "stream copy" if result.stream_copy else "re-encoded"
    sink.emit(
        Event(
            "stitched",
            message=f"{out.path} ({result.duration:.2f} s, {result.frames} frames, {how})",
            extra={
                "path": str(out.path),
                "duration": round(result.duration, 4),
                "frames": result.frames,
                "stream_copy": result.stream_copy,
            },
        )
    )
    return result.path


def _media_info(entry: CachedClip) -> MediaInfo:
    """The clip's stream headers as recorded in its cache sidecar when it was verified, so a
    stitch starts no ffmpeg per clip (a probe costs about as much as the whole stream-copy join
    of that clip); a probe for entries written without them."""
    from kling_render.stitch.probe import MediaInfo, probe

    if entry.media is not None:
        with contextlib.suppress(ValueError):
            return MediaInfo.from_json(entry.media)
    return probe(entry.path)


def status(project: Project, provider: str | None) -> dict[str, Any]:
    """Per-shot state from the state file (pending, submitted, done, failed, unknown), plus cache."""
    from kling_render.commands import pick_provider
    from kling_render.ledger import KeyLedger
    from kling_render.state import StateStore, read_state_file

    name = pick_provider(project, provider)
    keys = _clip_keys(project, name)
    cache = ClipCache.for_project(project.path)
    recorded, ledgers = read_state_file(StateStore.for_project(project.path).path)
    shots = []
    for shot in project.shots:
        rec = recorded.get(shot.id)
        key = keys[shot.id]
        cached = cache.get(name, key) is not None
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
        shots.append(doc)
    counts: dict[str, int] = {}
    for doc in shots:
        counts[doc["status"]] = counts.get(doc["status"], 0) + 1
    return {
        "project": project.name,
        "provider": name,
        "shots": shots,
        "counts": counts,
        "final_cut": str(project.output.path) if project.output.path.is_file() else None,
    }


__all__ = ["KlingRenderError", "RenderOptions", "RenderResult", "render", "status", "stitch"]
