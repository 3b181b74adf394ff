"""Stitching: clips → one final cut (SPEC §7).

``probe`` inspects media; ``graph`` plans the timeline and the audio graph, ``segments`` the
video segments (pure); ``encode`` runs the segmented re-encode and the join, ``cut`` the audio
pass and the stream-copy fast path; ``segstore`` keeps encoded segments in the clip cache.
:func:`stitch` is the one entry point: it checks the clips, picks stream copy or a re-encode,
writes through a temp file and renames, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from kling_render.errors import MissingClipsError, StitchError
from kling_render.fsutil import atomic_path, sha256_file, sha256_fileobj
from kling_render.media.probe import MediaInfo, probe, verify_clip
from kling_render.stitch.cut import StitchProgress, can_stream_copy, copy_cut
from kling_render.stitch.encode import encode_cut
from kling_render.stitch.graph import (
    TRANSITIONS,
    AudioSettings,
    CutClip,
    OutputSettings,
    check_clips,
    max_transition,
)
from kling_render.store.segments import SegmentStore

__all__ = [
    "TRANSITIONS",
    "AudioSettings",
    "CutClip",
    "MediaInfo",
    "OutputSettings",
    "SegmentStore",
    "StitchProgress",
    "StitchResult",
    "max_transition",
    "probe",
    "stitch",
    "verify_clip",
]


@dataclass(frozen=True)
class StitchResult:
    path: Path
    duration: float
    frames: int
    stream_copy: bool
    chapters: list[tuple[str, float, float]]  # (shot_id, start, end) in seconds
    segments: tuple[str, ...] = ()  # keys of the encoded segments the cut is made of (none for stream copy)
    encoded_segments: int = 0  # how many of them this stitch encoded; the others were in the store
    sha256: str = ""  # of the cut's bytes


def _resolve(path: Path, base_dir: Path | None) -> Path:
    return path if path.is_absolute() or base_dir is None else base_dir / path


def stitch(
    clips: Sequence[CutClip],
    output: OutputSettings,
    audio: AudioSettings | None,
    dest: Path,
    *,
    base_dir: Path | None = None,
    progress: StitchProgress | None = None,
    segments: SegmentStore | None = None,
    workers: int | None = None,
) -> StitchResult:
    """Cut ``clips`` into ``dest`` (relative paths — clips, music, dest — are under ``base_dir``).

    A re-encode takes the segments it can from ``segments`` and adds the ones it encodes (without
    a store, they live in a temp directory for this stitch only); ``workers`` ffmpeg jobs run at
    once (default: the CPU cores). A clip's ``sha256`` is hashed here when the caller left it out.

    Raises MissingClipsError for clip files that do not exist, StitchError for clips that
    cannot be cut as asked (every reason at once), FFmpegError when ffmpeg fails.
    """
    clips = [replace(c, path=_resolve(c.path, base_dir)) for c in clips]
    dest = _resolve(dest, base_dir)
    missing = [c.shot_id for c in clips if not c.path.is_file()]
    if missing:
        raise MissingClipsError(missing)
    if audio is not None and audio.music is not None:
        music = _resolve(audio.music, base_dir)
        if not music.is_file():
            raise StitchError(f"music file not found: {music}")
        audio = replace(audio, music=music)
    problems = check_clips(clips, output)
    if problems:
        raise StitchError("cannot stitch:\n  " + "\n  ".join(problems))

    fast = can_stream_copy(clips, output, audio)
    segment_keys: tuple[str, ...] = ()
    encoded = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cut-hash") as hasher:
        with (
            tempfile.TemporaryDirectory(prefix="kling-stitch-") as work_dir,
            # Not fsynced: the cut is rebuilt from the (fsynced) clip cache by the next stitch or
            # render, which skips the encode only when the cut still matches the sha256 recorded in
            # the stitch manifest (stitch/manifest.py): a cut damaged by a crash is made again. Only
            # the atomic rename matters here; the fsync was 8 % of a stream-copy join.
            atomic_path(dest, suffix=".mp4", durable=False) as tmp,
        ):
            work = Path(work_dir)
            if fast:
                ms = copy_cut(clips, tmp, work, progress)
                # The chapters already say where the joined clips end: no second probe of the result.
                chapters = [(sid, s / 1000, e / 1000) for sid, s, e in ms]
                duration = ms[-1][2] / 1000
                frames = round(duration * output.fps)
            else:
                from kling_render.env import stitch_memory_mb
                from kling_render.store.cache import ClipCache
                from kling_render.workers import stitch_workers

                store = segments if segments is not None else SegmentStore(ClipCache(work / "segments"))
                digests = [c.sha256 or sha256_file(c.path) for c in clips]
                # Parallel up to the cores, within the memory budget (workers.py).
                workers = workers or stitch_workers(output.width, output.height, stitch_memory_mb())
                done = encode_cut(clips, digests, output, audio, tmp, work, store, progress, workers=workers)
                fps = Fraction(output.fps)
                chapters = [(sid, float(s / fps), float(e / fps)) for sid, s, e in done.chapters]
                frames = done.frames
                duration = float(frames / fps)
                segment_keys, encoded = done.segments, done.encoded
            # The cut's sha256 (for the stitch manifest) is taken from the finished temp file while
            # the rename (which frees the old cut's blocks) and the clean-up of the work directory
            # run: the hash was the one cost of a stream-copy stitch over a plain concat (0.1 s of
            # a 150 MB cut). The file is opened here, so the rename cannot race the hasher.
            fh = tmp.open("rb")
            digest = hasher.submit(_hash_and_close, fh)
        sha256 = digest.result()
    return StitchResult(dest, duration, frames, fast, chapters, segment_keys, encoded, sha256)


def _hash_and_close(fh: BinaryIO) -> str:
    with fh:
        return sha256_fileobj(fh)
