"""Segments made ahead of the stitch (issue 20 items 4 and 7), from the project's cut as the cache
holds it now:

- :func:`segment_pipeline`: during ``render``, each segment is encoded as soon as the clips it
  reads exist, while the provider works on the others (stitch/pipelined.py, fed by the graph run's
  step ends, app/generation.py); the stitch after the run encodes only what is missing.
- :func:`encode_shard_segments`: after ``render --shard K/N``, the segments whose clips this machine
  has are encoded (or found) and put on the remote, so the machine that makes the cut encodes only
  what no shard could. A segment ending in a transition reads two clips: when this shard has one
  of them and the remote already holds the other (another shard finished first), that one is
  pulled and the segment made here; otherwise it is left to the stitch. Shards running at once
  split the segments (and the audio pass) by a create-only claim on the remote
  (store/remote/segments.py): each is encoded by the first shard to claim it, during its run or
  after; a claim whose shard died leaves that segment to the stitch, which encodes what is missing.

Shots without a clip are planned on their expected duration (the shot's): if a clip turns out to
last otherwise, the segments planned on the guess are simply not the ones the cut uses
(stitch/plan.py), and the stitch encodes the right ones.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kling_render.report.progress import Event, EventSink

if TYPE_CHECKING:
    from kling_render.media.probe import MediaInfo
    from kling_render.plan.inputs import ClipFacts, Outputs, StillFacts
    from kling_render.project.project import Project
    from kling_render.stitch.pipelined import CutInputs, SegmentNotice, SegmentPipeline
    from kling_render.store.cache import CachedClip, ClipCache
    from kling_render.store.remote.connect import Remote

__all__ = ["InfoOf", "cut_inputs", "cut_inputs_doc", "cut_is_current", "encode_shard_segments", "segment_pipeline"]

InfoOf = Callable[["ClipCache", "CachedClip", str], "MediaInfo | None"]
"""A cached clip's stream headers (None: treat the clip as not made yet)."""


def cut_inputs(
    project: Project,
    provider: str,
    cache: ClipCache,
    *,
    info: InfoOf | None = None,
    outputs: Outputs | None = None,
) -> CutInputs:
    """The project's cut as the cache holds it now: each shot's picked take (plan/inputs.py
    ``cut_keys``, as the stitch finds it) as a clip, or pending when it is not cached. ``info``
    gives a clip's headers (default: app/clips.py ``clip_info``, which quarantines a clip that
    fails its check); ``outputs`` what is made (default: the cache's CachedOutputs)."""
    from kling_render import stitch as stitching
    from kling_render.app.clips import clip_info
    from kling_render.fsutil import sha256_file
    from kling_render.plan.inputs import cut_units
    from kling_render.stitch.pipelined import CutInputs
    from kling_render.store.outputs import CachedOutputs

    headers = info or clip_info
    units = cut_units(project, provider, outputs or CachedOutputs(cache))
    clips: list[stitching.CutClip | stitching.PendingClip] = []
    for shot in project.shots:
        unit = units[shot.id]
        entry = None if unit.key is None else cache.use(unit.provider, unit.key)
        found = None if entry is None else headers(cache, entry, shot.id)
        trims = (shot.trim.start, shot.trim.end, shot.transition.type, shot.transition.duration)
        if entry is None or found is None:
            clips.append(stitching.PendingClip(shot.id, float(shot.duration), *trims))
        else:
            clips.append(stitching.CutClip(shot.id, entry.path, found, *trims, sha256=entry.sha256))
    out = project.output
    audio = None
    music_digest = None
    if project.audio is not None:
        a = project.audio
        audio = stitching.AudioSettings(music=a.music, music_volume=a.music_volume, duck=a.duck, normalize=a.normalize)
        music_digest = sha256_file(a.music) if a.music is not None and a.music.is_file() else None
    output = stitching.OutputSettings(width=out.width, height=out.height, fps=out.fps, fit=out.fit)
    return CutInputs(tuple(clips), output, audio, music_digest)


def cut_inputs_doc(project: Project, provider: str, digests: dict[str, str]) -> dict[str, Any]:
    """The stitch manifest's inputs (everything that decides the cut's bytes) for the clips of
    ``digests`` (shot id -> sha256, every shot of the project)."""
    from kling_render import __version__
    from kling_render.media import caps as ffmpeg_caps
    from kling_render.records import manifest

    inputs = [
        manifest.ClipInput(
            shot.id, digests[shot.id], shot.trim.start, shot.trim.end, shot.transition.type, shot.transition.duration
        )
        for shot in project.shots
    ]
    build = ffmpeg_caps.current()
    return manifest.inputs_doc(
        clips=inputs,
        output=manifest.output_settings(project),
        audio=manifest.audio_settings(project),
        provider=provider,
        ffmpeg_version=build.version,
        ffmpeg_identity=build.identity,
        version=__version__,
    )


def cut_is_current(project: Project, provider: str, cache: ClipCache, manifest_path: Path) -> bool:
    """Whether the cut on disk is already the one the cached clips make (by its stitch manifest at
    ``manifest_path``: inputs and file size; no clip is checked, probed or quarantined): then a
    render has nothing to make ahead of its stitch."""
    from kling_render.plan.inputs import cut_units
    from kling_render.records import manifest
    from kling_render.store.outputs import CachedOutputs

    digests = {}
    for sid, unit in cut_units(project, provider, CachedOutputs(cache)).items():
        entry = None if unit.key is None else cache.get(unit.provider, unit.key)
        if entry is None:
            return False
        digests[sid] = entry.sha256
    doc = cut_inputs_doc(project, provider, digests)
    return manifest.check(manifest_path, doc, project.output.path, hash_cut=False).up_to_date


class _MemoOutputs:
    """The cache's outputs with each clip's frame count kept by its digest: the cut is planned
    again at every clip's end, and counting a continuity clip's frames runs ffmpeg."""

    def __init__(self, cache: ClipCache) -> None:
        from kling_render.store.outputs import CachedOutputs

        self.outputs = CachedOutputs(cache)
        self.known: dict[str, ClipFacts] = {}

    def still(self, provider: str, key: str) -> StillFacts | None:
        return self.outputs.still(provider, key)

    def frame(self, key_value: str) -> StillFacts | None:
        return self.outputs.frame(key_value)

    def clip(self, provider: str, key: str) -> ClipFacts | None:
        from dataclasses import replace

        entry = self.outputs.cache.use(provider, key)
        if entry is None:
            return None
        known = self.known.get(entry.sha256)
        if known is not None:
            return replace(known, path=entry.path)
        found = self.outputs.clip(provider, key)
        if found is not None:
            self.known[found.sha256] = found
        return found


def _memo_info() -> InfoOf:
    """Headers from the probe memo (by digest, kept per clip for the run) with no quarantine: a clip
    that fails its check is left pending, for the stitch to judge."""
    from kling_render.errors import InvalidClipError

    known: dict[str, MediaInfo] = {}

    def headers(cache: ClipCache, entry: CachedClip, _shot_id: str) -> MediaInfo | None:
        found = known.get(entry.sha256)
        if found is None:
            try:
                found = known[entry.sha256] = cache.probes.checked(entry.path, entry.sha256).info
            except InvalidClipError:
                return None
        return found

    return headers


def segment_pipeline(
    project: Project, provider: str, cache: ClipCache, sink: EventSink, remote: Remote | None, *, shard: bool = False
) -> Callable[[asyncio.Semaphore], SegmentPipeline]:
    """How ``render`` makes the pipelined stitch of ``project`` once its run's CPU slots exist:
    segments go to the segment store (and, with a remote, are pulled from it or pushed to it, as
    the stitch does). A ``shard`` makes no cut: it decodes no clip ahead for a stream copy."""
    from kling_render import stitch as stitching
    from kling_render.env import stitch_memory_mb
    from kling_render.stitch.pipelined import SegmentPipeline
    from kling_render.workers import stitch_workers

    info = _memo_info()
    outputs = _MemoOutputs(cache)
    store = stitching.SegmentStore(cache)
    out = project.output

    def inputs() -> CutInputs:
        return cut_inputs(project, provider, cache, info=info, outputs=outputs)

    def make(cpu: asyncio.Semaphore) -> SegmentPipeline:
        source = None
        if remote is not None:
            from kling_render.store.remote.segments import SegmentRemote

            source = SegmentRemote(remote.segments)
        workers = stitch_workers(out.width, out.height, stitch_memory_mb())
        return SegmentPipeline(
            inputs, store, cpu, workers=workers, source=source, notify=lambda n: sink.emit(notice_event(n)),
            decode=not shard, claim=source.claim if shard and source is not None else None,
        )  # fmt: skip

    return make


_HOW = {
    "encoded": "encoded",
    "stored": "already in the segment store",
    "pulled": "pulled from the remote",
    "claimed": "left to the shard that claimed it",
    "failed": "not made (the stitch does it again)",
    "stopped": "stopped",
}


def notice_event(notice: SegmentNotice) -> Event:
    """A ``segment`` event (no shot id: the shot's own events end with its clip)."""
    what = "clip decoded (a stream-copy cut's one decode)" if notice.how == "decoded" else (
        f"segment {_HOW.get(notice.how, notice.how)}"
    )
    text = f"{notice.shot_id}: {what} ({notice.seconds:.2f} s)"
    if notice.error:
        text += f": {notice.error}"
    extra = {"segment_of": notice.shot_id, "key": notice.key, "how": notice.how, "seconds": notice.seconds}
    return Event("segment", message=text, extra=extra)


def encode_shard_segments(project: Project, provider: str, cache: ClipCache, remote: Remote, sink: EventSink) -> int:
    """Encode or find every segment the clips at hand allow and offer each to the remote; returns
    how many this machine encoded. Best effort: a failure is a warning, the stitch makes up for it."""
    from kling_render.errors import KlingRenderError

    try:
        return _encode(project, provider, cache, remote, sink)
    except (KlingRenderError, OSError) as exc:
        sink.emit(Event("warning", message=f"segments not encoded on this shard ({exc}); the stitch encodes them"))
        return 0


def _encode(project: Project, provider: str, cache: ClipCache, remote: Remote, sink: EventSink) -> int:
    from kling_render import stitch as stitching
    from kling_render.plan.inputs import cut_units
    from kling_render.run.scheduler import default_verify
    from kling_render.stitch.pipelined import may_stream_copy
    from kling_render.store.outputs import CachedOutputs
    from kling_render.store.remote.segments import SegmentRemote
    from kling_render.store.remote.sync import pull_missing

    shots = list(project.shots)
    units = cut_units(project, provider, CachedOutputs(cache))
    have = [
        (u := units[shot.id]).key is not None and cache.use(u.provider, u.key) is not None for shot in shots
    ]
    # A transition's segment reads two clips: when this shard has one, the other is pulled if
    # another shard already put it up, so the segment is made here rather than by the stitch.
    wanted: dict[str, dict[str, str]] = {}  # by provider: shot id -> key
    for i in range(len(shots) - 1):
        if shots[i + 1].transition.duration > 0 and have[i] != have[i + 1]:
            unit = units[shots[i + 1 if have[i] else i].id]
            if unit.key is not None:
                wanted.setdefault(unit.provider, {})[unit.name] = unit.key
    for where, keys in wanted.items():
        pull_missing(remote.clips, where, keys, cache, sink, default_verify, strict=False)
    inputs = cut_inputs(project, provider, cache)
    if may_stream_copy(inputs):
        return 0  # a stream-copy cut has no segments
    cut = stitching.steps.plan(inputs.clips, inputs.output, inputs.audio, music_sha256=inputs.music_sha256)
    store = stitching.SegmentStore(cache)
    source = SegmentRemote(remote.segments)
    encoded = claimed = 0
    with tempfile.TemporaryDirectory(prefix=f"{stitching.WORK_PREFIX}{os.getpid()}-") as work_dir:
        for step in cut.parts:
            if step.ready:
                if store.entry(str(step.key)) is None and not source.claim(str(step.key)):
                    claimed += 1  # another shard makes it (shards running at once split the segments)
                    continue
                done = stitching.steps.encode_segment(cut, step, store, Path(work_dir), source=source)
                encoded += done.how == "encoded"
                if done.how == "stored":
                    source.push(str(step.key), done.path)  # made here before the remote was reachable
        audio = cut.audio.key
        if audio is not None and (store.use(audio) is not None or source.claim(audio)):
            done = stitching.steps.mix_audio(cut, store, Path(work_dir), source=source)
            if done.how == "stored":
                source.push(audio, done.path)
    ready = sum(1 for s in cut.parts if s.ready)
    for problem in source.problems:
        sink.emit(Event("warning", message=problem))
    message = f"{ready} of {len(cut.parts)} segments ready on the remote or claimed, {encoded} encoded here"
    if claimed:
        message += f", {claimed} left to the shards that claimed them"
    extra = {"ready": ready, "encoded": encoded, "claimed": claimed}
    sink.emit(Event("segments", message=message, extra=extra))
    return encoded
