"""Stitching: clips -> one final cut (SPEC §7).

The cut is made of steps, each runnable on its own, so a scheduler can run them as soon as their
inputs exist (a segment while later clips are still being generated) and on any machine:

    from kling_render.stitch import steps
    cut = steps.plan(clips, output, audio, music_sha256=...)   # pure: CutPlan (stitch/plan.py)
    for step in cut.segments:            # one per clip; step.key is None while a clip it reads is pending
        if step.ready and step.frames:
            steps.encode_segment(cut, step, store, work, source=remote_segments)   # -> StepResult
    steps.mix_audio(cut, store, work, source=remote_segments)   # once cut.audio.key is set
    steps.join(cut, [part paths], audio_path, dest, work)       # once cut.complete

- ``plan`` takes :class:`CutClip` (a clip that exists: its path, stream headers and sha256) and
  :class:`PendingClip` (a shot whose clip does not exist yet, with its expected duration) in cut
  order. Keys are content addresses (the clips' digests, the filter graph, the encoder settings,
  the ffmpeg build): a segment planned on a guessed duration that turns out wrong is simply not
  used by the final plan.
- ``encode_segment`` and ``mix_audio`` take the result from the segment store (store/segments.py)
  when it is there, else from ``source`` (the shared remote, store/remote/segments.py: pulled and
  checked), else encode it (and push it to ``source``). ``force=True`` encodes whatever is stored
  and replaces it. A clip whose bitstream does not decode raises CorruptClipError: it is
  quarantined from the cache and marked as bad by its digest (store/probes.py); fetch it again.
- ``join`` muxes the parts and the audio by stream copy, with one chapter per shot.

:func:`stitch` runs all of them for one cut (in parallel, up to the cores and the memory budget),
or the stream-copy fast path when no clip needs re-encoding; it writes through a temp file and
renames, so a failure leaves nothing half-written. ``probe`` inspects media; ``graph`` plans the
timeline and the audio graph, ``segments`` the video segments (pure); ``cut`` holds the ffmpeg
command lines of the audio pass and the stream-copy paths.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from kling_render.errors import MissingClipsError, StitchError
from kling_render.fsutil import atomic_path, pid_alive, remove_dead_temps, sha256_file, sha256_fileobj
from kling_render.media.probe import MediaInfo, probe, verify_clip
from kling_render.stitch import steps
from kling_render.stitch.cut import StitchProgress, can_stream_copy, copy_cut
from kling_render.stitch.encode import encode_cut
from kling_render.stitch.graph import (
    TRANSITIONS,
    AudioSettings,
    CutClip,
    OutputSettings,
    PendingClip,
    check_clips,
    max_transition,
)
from kling_render.stitch.plan import CutPlan
from kling_render.store.segments import AREA as SEGMENT_AREA
from kling_render.store.segments import SegmentSource, SegmentStore

__all__ = [
    "SEGMENT_AREA",
    "TRANSITIONS",
    "AudioSettings",
    "CutClip",
    "CutPlan",
    "MediaInfo",
    "OutputSettings",
    "PendingClip",
    "SegmentSource",
    "SegmentStore",
    "StitchProgress",
    "StitchResult",
    "clean_leftovers",
    "max_transition",
    "probe",
    "steps",
    "stitch",
    "verify_clip",
]

WORK_PREFIX = "kling-stitch-"  # a stitch's private work directory: kling-stitch-<pid>-<random>
_WORK_RE = re.compile(r"^kling-stitch-([0-9]{1,10})-[A-Za-z0-9_]+\Z")
STALE_SECONDS = 24 * 3600  # a leftover this old is stale even if its pid was reused


@dataclass(frozen=True)
class StitchResult:
    path: Path
    duration: float
    frames: int
    stream_copy: bool
    chapters: list[tuple[str, float, float]]  # (shot_id, start, end) in seconds
    segments: tuple[str, ...] = ()  # keys of the encoded segments the cut is made of (none for stream copy)
    encoded_segments: int = 0  # how many of them this stitch encoded; the others were in the store or pulled
    sha256: str = ""  # of the cut's bytes
    pulled_segments: int = 0  # how many came from the segment source (the shared remote)
    audio: str = ""  # the audio step's key (kept in the segment store too)
    audio_encoded: bool = False  # this stitch mixed the audio (it was not in the store)
    join: str = ""  # the join step's key: the cut's identity


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
    force: bool = False,
    source: SegmentSource | None = None,
) -> StitchResult:
    """Cut ``clips`` into ``dest`` (relative paths — clips, music, dest — are under ``base_dir``).

    A re-encode takes the segments and the audio it can from ``segments`` (then from ``source``)
    and adds the ones it encodes (without a store, they live in a temp directory for this stitch
    only); ``force`` encodes every segment and the audio anew. ``workers`` ffmpeg jobs run at once
    (default: the CPU cores, within the memory budget). A clip's ``sha256`` is hashed here when the
    caller left it out.

    Raises MissingClipsError for clip files that do not exist, StitchError for clips that
    cannot be cut as asked (every reason at once), CorruptClipError for a clip that does not
    decode, FFmpegError when ffmpeg fails otherwise.
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
    done = None
    clean_work_dirs()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cut-hash") as hasher:
        with (
            tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-") as work_dir,
            # Not fsynced: the cut is rebuilt from the (fsynced) clip cache by the next stitch or
            # render, which skips the encode only when the cut still matches the sha256 recorded in
            # the stitch manifest (stitch/manifest.py): a cut damaged by a crash is made again. Only
            # the atomic rename matters here; the fsync was 8 % of a stream-copy join.
            atomic_path(dest, suffix=".mp4", durable=False) as tmp,
        ):
            work = Path(work_dir)
            if fast:
                from kling_render.store.cache import ClipCache

                # Nothing is decoded by a stream copy: each clip is decoded once here (memoized), while
                # the copy runs (it reads the packets only); a clip that does not decode raises after
                # the copy, so the cut is never renamed into place.
                store = segments if segments is not None else SegmentStore(ClipCache(work / "segments"))
                with ThreadPoolExecutor(max_workers=workers or _cores(), thread_name_prefix="decode") as pool:
                    checks = [pool.submit(steps.decode_once, c, store) for c in clips]
                    try:
                        ms = copy_cut(clips, tmp, work, progress)
                    except BaseException:
                        for done_check in checks:
                            done_check.cancel()
                        raise
                    for done_check in checks:
                        done_check.result()
                # The chapters already say where the joined clips end: no second probe of the result.
                chapters = [(sid, s / 1000, e / 1000) for sid, s, e in ms]
                duration = ms[-1][2] / 1000
                frames = round(duration * output.fps)
            else:
                from kling_render.env import stitch_memory_mb
                from kling_render.store.cache import ClipCache
                from kling_render.workers import stitch_workers

                store = segments if segments is not None else SegmentStore(ClipCache(work / "segments"))
                clips = [c if c.sha256 else replace(c, sha256=sha256_file(c.path)) for c in clips]
                music_digest = sha256_file(audio.music) if audio is not None and audio.music is not None else None
                cut = steps.plan(clips, output, audio, music_sha256=music_digest)
                # Parallel up to the cores, within the memory budget (workers.py).
                workers = workers or stitch_workers(output.width, output.height, stitch_memory_mb())
                done = encode_cut(cut, tmp, work, store, progress, workers=workers, force=force, source=source)
                fps = Fraction(output.fps)
                chapters = [(sid, float(s / fps), float(e / fps)) for sid, s, e in done.chapters]
                frames = done.frames
                duration = float(frames / fps)
                join_key = str(cut.join.key)
            # The cut's sha256 (for the stitch manifest) is taken from the finished temp file while
            # the rename (which frees the old cut's blocks) and the clean-up of the work directory
            # run: the hash was the one cost of a stream-copy stitch over a plain concat (0.1 s of
            # a 150 MB cut). The file is opened here, so the rename cannot race the hasher.
            fh = tmp.open("rb")
            digest = hasher.submit(_hash_and_close, fh)
        sha256 = digest.result()
    if done is None:
        return StitchResult(dest, duration, frames, fast, chapters, sha256=sha256)
    return StitchResult(
        dest, duration, frames, fast, chapters, done.segments, done.encoded, sha256,
        done.pulled, done.audio, done.audio_encoded, join_key,
    )  # fmt: skip


def _cores() -> int:
    from kling_render.workers import cpu_cores

    return cpu_cores()


def clean_leftovers(dest: Path) -> None:
    """Remove what killed stitches left behind that this one can prove was theirs: temp cuts beside
    ``dest`` (``.<name>.<pid>.<random>.mp4.tmp``) and work directories in the system's temp
    directory (``kling-stitch-<pid>-<random>``), each when its pid is no longer running (or the
    leftover is over a day old, in case the pid was reused). Called before every stitch, even one
    that finds the cut up to date and writes nothing."""
    remove_dead_temps(dest, stale_after=STALE_SECONDS)
    clean_work_dirs()


def clean_work_dirs() -> None:
    """The work-directory half of :func:`clean_leftovers`."""
    try:
        with os.scandir(tempfile.gettempdir()) as entries:
            found = [e for e in entries if _WORK_RE.match(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in found:
        match = _WORK_RE.match(entry.name)
        assert match is not None
        try:
            stale = not pid_alive(int(match.group(1))) or time.time() - entry.stat().st_mtime > STALE_SECONDS
        except (OSError, ValueError, OverflowError):
            continue
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)


def _hash_and_close(fh: BinaryIO) -> str:
    with fh:
        return sha256_fileobj(fh)
