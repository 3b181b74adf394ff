"""The re-encoded cut: video segments encoded in parallel, the audio mixed once, a stream-copy join.

1. The video is planned as segments (:mod:`kling_render.stitch.segments`); each is looked up in
   the segment store by its identity (:mod:`kling_render.store.segments`) and only the missing
   ones are encoded, each by its own ffmpeg with at most two clip inputs and the cut's x264
   settings. A segment starts with an IDR frame (every x264 encode does) and has the same
   SPS/PPS as every other (``stitchable``, one size, fps and set of colour tags), which is
   checked before the join.
2. The audio of the whole cut is mixed and encoded once (:func:`~kling_render.stitch.cut.encode_audio`),
   in parallel with the segments: no AAC priming or frame-boundary gaps at the joins.
3. The segments are joined by the concat demuxer (stream copy, each placed by its exact frame
   count), muxed with the audio and the chapters, ``+faststart``.

Up to ``cpu_cores`` jobs run at once; memory is that of a few single-segment ffmpegs whatever the
number of clips. The first job to fail stops the others (their ffmpeg is killed) and its error is
raised; segments finished before that stay in the store for the next stitch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from kling_render.errors import StitchError
from kling_render.media import ffmpeg
from kling_render.media.mp4 import avc_config
from kling_render.stitch.cut import (
    VIDEO_CODEC,
    StitchProgress,
    _file,
    _graph_args,
    _reporter,
    chapters_text,
    encode_audio,
    join_args,
    link_for_concat,
)
from kling_render.stitch.graph import AudioSettings, CutClip, OutputSettings
from kling_render.stitch.segments import Segment, plan_segments, segment_identity
from kling_render.store.segments import SegmentStore, segment_key

__all__ = ["EncodedCut", "encode_cut", "segment_encoder"]


def segment_encoder(fps: int) -> list[str]:
    """Codec and muxer arguments of a segment (part of its identity). The track's timescale is
    the frame rate, so the join places every segment on an exact frame."""
    return [*VIDEO_CODEC, "-fflags", "+bitexact", "-flags:v", "+bitexact", "-video_track_timescale", str(fps)]


@dataclass(frozen=True)
class EncodedCut:
    chapters: list[tuple[str, int, int]]  # (shot id, first frame, end frame)
    frames: int
    segments: tuple[str, ...]  # keys of the segments the cut is made of, in order
    encoded: int  # how many of them this stitch encoded (the rest came from the store)


class _Stopped(Exception):
    """Raised in a job's progress callback to kill its ffmpeg after another job failed."""


class _Jobs:
    """Runs jobs on a thread pool with one aggregated progress and stop-on-first-failure."""

    def __init__(self, weights: Sequence[float], progress: StitchProgress | None) -> None:
        self.weights = list(weights)
        self.done = [0.0] * len(weights)
        self.progress = progress
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reported = 0.0

    def reporter(self, job: int) -> Callable[[str, float], None]:
        def report(_step: str, fraction: float) -> None:
            if self.stop.is_set():
                raise _Stopped
            with self.lock:
                self.done[job] = max(self.done[job], fraction)
                total = sum(w * d for w, d in zip(self.weights, self.done, strict=True)) / sum(self.weights)
                if self.progress is not None and total > self.reported:
                    self.reported = total
                    self.progress("encoding", total)

        return report

    def run(self, jobs: Sequence[Callable[[Callable[[str, float], None]], None]], workers: int) -> None:
        errors: list[BaseException] = []

        def call(n: int) -> None:
            if self.stop.is_set():
                return
            try:
                jobs[n](self.reporter(n))
            except _Stopped:
                pass
            except BaseException as exc:
                with self.lock:
                    errors.append(exc)
                self.stop.set()

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="stitch") as pool:
            try:
                for future in [pool.submit(call, n) for n in range(len(jobs))]:
                    future.result()
            except BaseException:  # Ctrl-C while waiting: the running ffmpegs are killed
                self.stop.set()
                raise
        if errors:
            raise errors[0]


def encode_cut(
    clips: Sequence[CutClip],
    digests: Sequence[str],
    output: OutputSettings,
    audio: AudioSettings | None,
    dest: Path,
    work: Path,
    store: SegmentStore,
    progress: StitchProgress | None = None,
    *,
    workers: int = 1,
) -> EncodedCut:
    """Re-encode the cut into ``dest``; ``digests`` are the clips' sha256 (in ``clips`` order)."""
    from kling_render.media.caps import current

    timeline, planned = plan_segments(clips, output)
    parts = [s for s in planned if s.frames > 0]
    encoder = segment_encoder(output.fps)
    identity = current().identity
    keys = [segment_key(segment_identity(s, [digests[k] for k in s.clips], encoder, identity)) for s in parts]
    paths: dict[str, Path] = {}
    missing: dict[str, Segment] = {}
    for segment, key in zip(parts, keys, strict=True):
        if key in paths or key in missing:
            continue  # the same segment twice in one cut is encoded once
        found = store.use(key)
        if found is None:
            missing[key] = segment
        else:
            paths[key] = found

    audio_file = work / "audio.m4a"

    def audio_job(report: Callable[[str, float], None]) -> None:
        encode_audio(clips, output, audio, audio_file, work, report)

    def segment_job(key: str, segment: Segment) -> Callable[[Callable[[str, float], None]], None]:
        def job(report: Callable[[str, float], None]) -> None:
            paths[key] = _encode_segment(segment, clips, key, encoder, store, output.fps, len(parts), work, report)

        return job

    # The audio first: for a long cut it is the longest single job, and it needs no segment.
    jobs = [audio_job, *(segment_job(k, s) for k, s in missing.items())]
    weights = [max(1.0, timeline.total_frames / 25), *(float(s.frames) for s in missing.values())]
    _Jobs(weights, progress).run(jobs, workers)

    files = [paths[k] for k in keys]
    _check_headers(files, [clips[s.index].shot_id for s in parts])
    listing, safe = link_for_concat(
        files, work, [clips[s.index].shot_id for s in parts], [Fraction(s.frames, output.fps) for s in parts]
    )
    chapters = timeline.chapters([c.shot_id for c in clips])
    meta = work / "chapters.txt"
    meta.write_text(chapters_text(chapters, Fraction(1, output.fps)), encoding="utf-8")
    ffmpeg.run(
        join_args(listing, safe, meta, dest, audio=audio_file),
        f"joining {len(parts)} segments",
        progress=_reporter(progress, "joining", float(timeline.duration)),
    )
    return EncodedCut(chapters, timeline.total_frames, tuple(keys), len(missing))


def _encode_segment(
    segment: Segment,
    clips: Sequence[CutClip],
    key: str,
    encoder: Sequence[str],
    store: SegmentStore,
    fps: int,
    count: int,
    work: Path,
    report: Callable[[str, float], None],
) -> Path:
    inputs = [arg for k in segment.clips for arg in ("-i", _file(clips[k].path))]
    what = f"stitching segment {segment.index + 1} of {count} ({clips[segment.index].shot_id})"
    with store.temp_file() as tmp:
        ffmpeg.run(
            [
                "-y",
                *inputs,
                *_graph_args(segment.filter_complex, work / f"segment{segment.index:05d}.txt"),
                "-map",
                "[vout]",
                *encoder,
                "-f",
                "mp4",
                _file(tmp),
            ],
            what,
            progress=_reporter(report, what, segment.frames / fps),
        )
        return store.put(key, tmp, segment.frames, fps)


def _check_headers(files: Sequence[Path], names: Sequence[str]) -> None:
    """Every segment must carry the same SPS/PPS: the join keeps only the first's."""
    first = avc_config(files[0]) if files else None
    for path, name in zip(files, names, strict=True):
        if avc_config(path) != first:
            raise StitchError(
                f"cannot join the cut: the segment of {name} was encoded with other H.264 headers than the "
                f"first ({path}); remove it and stitch again"
            )
