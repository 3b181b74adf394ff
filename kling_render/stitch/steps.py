"""The steps of a re-encoded cut, each runnable on its own (the scheduler's executors call these):

- :func:`encode_segment`: one segment of a :class:`~kling_render.stitch.plan.CutPlan`, from the
  segment store, else from a :class:`~kling_render.store.segments.SegmentSource` (the shared
  remote), else encoded here (and then offered to the source);
- :func:`mix_audio`: the audio pass, likewise from the store or mixed here;
- :func:`join`: the parts and the audio muxed into the cut by stream copy.

The segment encode is the one full decode a clip's video gets, the audio pass its sound's (the
download check is structural, media/check.py). Both run with ``-xerror``, so a corrupt bitstream
fails them instead of being concealed; the clips read are then decoded on their own to find the
culprit, which is quarantined from the cache, marked as not decoding (store/probes.py) and reported
as a :class:`~kling_render.errors.CorruptClipError`. A failure no clip explains is raised as it is,
except in the audio pass, where it comes from the music (a user's file, which the mix has always
read with damaged packets concealed) and the pass runs again without ``-xerror``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from kling_render.errors import CorruptClipError, FFmpegError, StitchError
from kling_render.media import ffmpeg
from kling_render.media.mp4 import avc_config
from kling_render.media.probe import check_clip
from kling_render.stitch.cut import (
    AUDIO_CODEC,
    BITEXACT_PART,
    VIDEO_CODEC,
    StitchProgress,
    chapters_text,
    encode_audio,
    file_arg,
    graph_args,
    join_args,
    link_for_concat,
    reporter,
)
from kling_render.stitch.graph import AudioSettings, CutClip, OutputSettings, PendingClip
from kling_render.stitch.plan import CutPlan, SegmentStep, part_durations, plan_cut
from kling_render.store.segments import SegmentSource, SegmentStore

__all__ = ["StepResult", "decode_once", "encode_segment", "join", "mix_audio", "plan", "segment_encoder"]

Report = Callable[[str, float], None]


def segment_encoder(fps: int) -> list[str]:
    """Codec and muxer arguments of a segment (part of its identity). The track's timescale is
    the frame rate, so the join places every segment on an exact frame."""
    return [*VIDEO_CODEC, "-fflags", "+bitexact", "-flags:v", "+bitexact", "-video_track_timescale", str(fps)]


def plan(
    clips: Sequence[CutClip | PendingClip],
    output: OutputSettings,
    audio: AudioSettings | None,
    *,
    music_sha256: str | None = None,
) -> CutPlan:
    """:func:`~kling_render.stitch.plan.plan_cut` with this kling-render's encoder settings and the
    ffmpeg in use (its build is part of every key)."""
    from kling_render.media.caps import current

    return plan_cut(
        clips,
        output,
        audio,
        encoder=segment_encoder(output.fps),
        audio_codec=[*AUDIO_CODEC, *BITEXACT_PART],
        ffmpeg_identity=current().identity,
        music_sha256=music_sha256,
    )


@dataclass(frozen=True)
class StepResult:
    path: Path  # in the segment store
    how: str  # "stored" (found in the store), "pulled" (from the source) or "encoded" (here)


def encode_segment(
    cut: CutPlan,
    step: SegmentStep,
    store: SegmentStore,
    work: Path,
    *,
    force: bool = False,
    source: SegmentSource | None = None,
    report: Report | None = None,
    blame: bool = True,
) -> StepResult:
    """The segment ``step`` of ``cut`` in ``store``: looked up, pulled or encoded (see the module
    docstring). ``force`` encodes it whatever the store or the source hold, and the new file
    replaces the stored one. ValueError for a step that is not ready (a clip it reads is pending).
    ``blame=False`` raises a failed encode's FFmpegError as it is, looking for no culprit and
    quarantining nothing: an encode ahead of the stitch (the pipelined stitch) leaves the verdict
    on a clip to the stitch, which encodes the segment again."""
    if step.key is None or step.segment is None:
        raise ValueError(f"the segment of {step.shot_id} is not ready: a clip it reads does not exist yet")
    key, segment = step.key, step.segment
    if not force:
        found = store.use(key)
        if found is not None:
            return StepResult(found, "stored")
        if source is not None:
            pulled = source.fetch(key, store, step.frames)
            if pulled is not None:
                return StepResult(pulled, "pulled")
    reads = cut.reads(step)
    fps = cut.output.fps
    inputs = [arg for clip in reads for arg in ("-i", file_arg(clip.path))]
    what = f"stitching segment {step.index + 1} of {len(cut.segments)} ({step.shot_id})"
    with store.temp_file() as tmp:
        args = [
            "-y",
            "-xerror",  # a corrupt bitstream fails the encode instead of being concealed
            *inputs,
            *graph_args(segment.filter_complex, work / f"segment{step.index:05d}.txt"),
            *["-map", "[vout]", *segment_encoder(fps), "-f", "mp4", file_arg(tmp)],
        ]
        try:
            ffmpeg.run(args, what, progress=reporter(report, what, step.frames / fps))
        except FFmpegError as exc:
            if not blame:
                raise
            raise _culprit(reads, store, exc) from exc
        path = store.put(key, tmp, step.frames / fps, replace=force)
    if source is not None:
        source.push(key, path)
    return StepResult(path, "encoded")


def mix_audio(
    cut: CutPlan,
    store: SegmentStore,
    work: Path,
    *,
    force: bool = False,
    source: SegmentSource | None = None,
    report: Report | None = None,
) -> StepResult:
    """The cut's audio (:func:`~kling_render.stitch.cut.encode_audio`) in ``store``, under the audio
    step's key: looked up, pulled or mixed here (``force``: mixed whatever is stored)."""
    key = cut.audio.key
    if key is None:
        raise ValueError("the audio of the cut is not ready: not every clip exists yet")
    clips = [c for c in cut.clips if isinstance(c, CutClip)]
    if not force:
        found = store.use(key)
        if found is not None:
            return StepResult(found, "stored")
        if source is not None:
            pulled = source.fetch(key, store, None)
            if pulled is not None:
                return StepResult(pulled, "pulled")
    with store.temp_file(".m4a") as tmp:
        try:
            encode_audio(clips, cut.output, cut.audio_settings, tmp, work, report)
        except FFmpegError as exc:
            culprit = _culprit([c for c in clips if c.info.has_audio], store, exc, audio_only=True)
            if culprit is not exc or not exc.ran:
                raise culprit from exc
            # Every clip's sound decodes: the music has a damaged packet (a cut-short MP3, say),
            # which the mix conceals as it always did.
            encode_audio(clips, cut.output, cut.audio_settings, tmp, work, report, strict=False)
        path = store.put(key, tmp, float(cut.timeline.duration), replace=force)
    if source is not None:
        source.push(key, path)
    return StepResult(path, "encoded")


# Decodes running in this process, by clip digest: a stitch that needs a clip the pipelined stitch
# is decoding right now waits for that decode instead of running a second one (stitch/pipelined.py
# leaves its running decodes to finish beside the stitch's copy).
_decoding: dict[str, Future[None]] = {}
_decoding_lock = threading.Lock()


def decode_once(clip: CutClip, store: SegmentStore, *, blame: bool = True) -> None:
    """Decode ``clip`` end to end unless this machine already did (memoized by its sha256): a
    stream-copy cut decodes nothing itself, so this is its clips' one decode. CorruptClipError
    (the clip quarantined and marked) when it does not decode; with ``blame=False`` (a decode
    ahead of the stitch), the FFmpegError as it is, nothing quarantined. A decode of the same
    clip already running in this process is waited for, not repeated."""
    memo = store.cache.probes
    digest = clip.sha256
    if digest and memo.decodes(digest):
        return
    mine: Future[None] | None = None
    if digest:
        with _decoding_lock:
            running = _decoding.get(digest)
            if running is None:
                mine = _decoding[digest] = Future()
        if running is not None:
            with contextlib.suppress(Exception):
                running.result()
            if memo.decodes(digest):
                return
            # It failed there: decoded again here, so this caller's rules (blame) apply.
    try:
        check_clip(clip.path)
        if digest:
            memo.mark_decodes(digest)  # before the waiters look
    except FFmpegError as exc:
        if not blame:
            raise
        culprit = _culprit([clip], store, exc)
        raise culprit from exc
    finally:
        if mine is not None:
            with _decoding_lock:
                _decoding.pop(str(digest), None)
            mine.set_result(None)


def join(
    cut: CutPlan,
    parts: Sequence[Path],
    audio: Path,
    dest: Path,
    work: Path,
    progress: StitchProgress | None = None,
) -> None:
    """Mux ``parts`` (the files of ``cut.parts``, in order) and ``audio`` into ``dest`` by stream
    copy, each part placed by its exact frame count, with one chapter per shot."""
    steps = cut.parts
    if len(parts) != len(steps):
        raise ValueError(f"{len(steps)} parts planned, {len(parts)} given")
    names = [s.shot_id for s in steps]
    _check_headers(parts, names)
    listing, safe = link_for_concat(parts, work, names, part_durations(cut))
    meta = work / "chapters.txt"
    meta.write_text(chapters_text(cut.chapters(), Fraction(1, cut.output.fps)), encoding="utf-8")
    ffmpeg.run(
        join_args(listing, safe, meta, dest, audio=audio),
        f"joining {len(parts)} segments",
        progress=reporter(progress, "joining", float(cut.timeline.duration)),
    )


def _check_headers(files: Sequence[Path], names: Sequence[str]) -> None:
    """Every segment must carry the same SPS/PPS: the join keeps only the first's."""
    first = avc_config(files[0]) if files else None
    for path, name in zip(files, names, strict=True):
        if avc_config(path) != first:
            raise StitchError(
                f"cannot join the cut: the segment of {name} was encoded with other H.264 headers than the "
                f"first ({path}); remove it and stitch again"
            )


def _culprit(clips: Sequence[CutClip], store: SegmentStore, exc: FFmpegError, *, audio_only: bool = False) -> Exception:
    """The error to raise for a failed encode that read ``clips``: a CorruptClipError for the first
    clip that does not decode on its own (quarantined and marked), else ``exc`` itself (ffmpeg could
    not start, a clip vanished, the disk is full...)."""
    if not exc.ran:
        return exc
    seen: set[Path] = set()
    for clip in clips:
        if clip.path in seen or not clip.path.is_file():
            continue
        seen.add(clip.path)
        try:
            check_clip(clip.path, audio_only=audio_only)
        except FFmpegError as bad:
            if bad.ran and clip.path.is_file():
                return _quarantine(clip, store, bad.detail)
    return exc


def _quarantine(clip: CutClip, store: SegmentStore, detail: str) -> CorruptClipError:
    cache = store.cache
    if clip.sha256:
        cache.probes.mark_corrupt(clip.sha256, detail)
    owner = cache.owner_of(clip.path)
    if owner is None:
        return CorruptClipError(clip.shot_id, None, clip.sha256, detail)
    moved = cache.quarantine(*owner, f"does not decode ({detail})")
    return CorruptClipError(clip.shot_id, owner[1], clip.sha256, detail, str(moved.moved_to) if moved else None)
