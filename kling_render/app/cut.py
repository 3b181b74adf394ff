"""stitch: the final cut from the clips made (here, or elsewhere and pulled from the remote), recorded
in the lock file and the stitch manifest."""


from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kling_render.errors import MissingClipsError
from kling_render.plan.inputs import resolve, still_cost_of, still_job
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
    from kling_render.records.lockfile import LockFile
    from kling_render.store.remote.connect import Remote


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
            # Clips quarantined from here on (by the pulls' and the lock's checks too) are reported by make_cut.
            since = len(cache.quarantined)
            lock = gather_clips(project, name, cache, sink, remote)
            return make_cut(project, name, cache, sink, force=force, lock=lock, reported=since, remote=remote)
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
            entry = cache.use(unit.provider, unit.key)  # a damaged clip is quarantined (reported by make_cut)
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

    keys = clip_units(project, provider, cache)
    # Only clips that still match their recorded sha256 reach a cut; the others are quarantined.
    entries = {sid: cache.use(k.provider, k.key) if k.key is not None else None for sid, k in keys.items()}
    missing = [shot.id for shot in project.shots if entries.get(shot.id) is None]
    if missing:
        raise MissingClipsError(missing)
    clips: list[CutClip] = []
    for shot in project.shots:
        entry = entries[shot.id]
        assert entry is not None
        offset = shot.new_part_offset(entry.duration)  # a video-extend clip: only its new part is cut
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


def clip_units(project: Project, provider: str, cache: ClipCache) -> dict[str, Unit]:
    """The clip each shot's cut uses: its picked take (plan.inputs.cut_units), with its provider and
    key against what the cache holds (the key of a shot that takes another's clip or a frame of it
    names that clip's digest: None until it is made)."""
    from kling_render.plan.inputs import cut_units
    from kling_render.store.outputs import CachedOutputs

    return cut_units(project, provider, CachedOutputs(cache))


def make_cut(
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
    keys = clip_units(project, provider, cache)

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


__all__ = [
    "PreparedCut",
    "StitchOutcome",
    "clip_units",
    "cut_freshness",
    "gather_clips",
    "make_cut",
    "manifest_file",
    "prepare_cut",
    "stitch",
]
