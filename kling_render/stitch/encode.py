"""The re-encoded cut, all its steps in one process: video segments encoded in parallel, the
audio mixed once, a stream-copy join (the steps themselves are in :mod:`kling_render.stitch.steps`).

1. The video is planned as segments (:mod:`kling_render.stitch.plan`); each is looked up in the
   segment store by its key (:mod:`kling_render.store.segments`), then in the segment source (the
   shared remote) when there is one, and only the missing ones are encoded, each by its own ffmpeg
   with at most two clip inputs and the cut's x264 settings. A segment starts with an IDR frame
   (every x264 encode does) and has the same SPS/PPS as every other (``stitchable``, one size, fps
   and set of colour tags), which is checked before the join.
2. The audio of the whole cut is mixed and encoded once (:func:`~kling_render.stitch.steps.mix_audio`),
   in parallel with the segments: no AAC priming or frame-boundary gaps at the joins. It is kept in
   the store under its own key, so a re-stitch whose sound did not change does not mix it again.
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
from pathlib import Path

from kling_render.stitch.cut import StitchProgress
from kling_render.stitch.plan import CutPlan, SegmentStep
from kling_render.stitch.steps import encode_segment, join, mix_audio
from kling_render.store.segments import SegmentSource, SegmentStore

__all__ = ["EncodedCut", "encode_cut"]


@dataclass(frozen=True)
class EncodedCut:
    chapters: list[tuple[str, int, int]]  # (shot id, first frame, end frame)
    frames: int
    segments: tuple[str, ...]  # keys of the segments the cut is made of, in order
    encoded: int  # how many of them this stitch encoded (the rest came from the store or the source)
    pulled: int = 0  # how many came from the source
    audio: str = ""  # the audio step's key
    audio_encoded: bool = False  # the audio was mixed by this stitch


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
    cut: CutPlan,
    dest: Path,
    work: Path,
    store: SegmentStore,
    progress: StitchProgress | None = None,
    *,
    workers: int = 1,
    force: bool = False,
    source: SegmentSource | None = None,
) -> EncodedCut:
    """Make the complete plan ``cut`` into ``dest``: every part and the audio (from the store, the
    source, or encoded; all encoded anew with ``force``), then the join."""
    if not cut.complete or cut.audio.key is None:
        raise ValueError("a cut can be made only once every clip exists")
    parts = cut.parts
    unique: dict[str, SegmentStep] = {}
    for step in parts:
        unique.setdefault(str(step.key), step)  # the same segment twice in one cut is made once
    paths: dict[str, Path] = {}
    how: dict[str, str] = {}

    def audio_job(report: Callable[[str, float], None]) -> None:
        done = mix_audio(cut, store, work, force=force, source=source, report=report)
        paths[str(cut.audio.key)], how[str(cut.audio.key)] = done.path, done.how
        report("audio", 1.0)

    def segment_job(key: str, step: SegmentStep) -> Callable[[Callable[[str, float], None]], None]:
        def job(report: Callable[[str, float], None]) -> None:
            done = encode_segment(cut, step, store, work, force=force, source=source, report=report)
            paths[key], how[key] = done.path, done.how
            report("segment", 1.0)

        return job

    # What the store holds costs nothing: only the rest is weighed in the progress.
    stored = set() if force else {k for k in [*unique, str(cut.audio.key)] if store.use(k) is not None}
    # The audio first: for a long cut it is the longest single job, and it needs no segment.
    jobs = [audio_job, *(segment_job(k, s) for k, s in unique.items())]
    weights = [
        0.01 if str(cut.audio.key) in stored else max(1.0, cut.timeline.total_frames / 25),
        *(0.01 if k in stored else float(s.frames) for k, s in unique.items()),
    ]
    _Jobs(weights, progress).run(jobs, workers)

    keys = [str(s.key) for s in parts]
    join(cut, [paths[k] for k in keys], paths[str(cut.audio.key)], dest, work, progress)
    encoded = sum(1 for k in unique if how[k] == "encoded")
    pulled = sum(1 for k in unique if how[k] == "pulled")
    audio_key = str(cut.audio.key)
    return EncodedCut(
        cut.chapters(), cut.timeline.total_frames, tuple(keys), encoded, pulled, audio_key, how[audio_key] == "encoded"
    )
