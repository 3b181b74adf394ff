"""Exact frames of a clip, for continuity (``image: {from: SHOT, frame: first|last|SECONDS}``).

A position is counted in the upstream shot's kept (trimmed) range and lands on one frame of the
clip as decoded, numbered from 0 (:func:`frame_index`, pure): ``first`` is the frame shown at the
trim's start, ``last`` the one shown just before its end (the clip's end without a trim), and a
time ``t`` the frame shown at ``start + t`` (the last one at ``t`` = the kept length). Positions
never depend on the cut's output fps, so changing the output settings re-renders no child.

:func:`extract_frame` writes that frame as a PNG with the same bytes every time for the same clip
and index: decoded up to the exact frame (``select`` by its decode number, not a seek, which
lands on keyframes), converted to RGB with fixed scaler flags, one frame, PNG with ffmpeg's
bit-exact flags and no metadata. The bytes depend on the ffmpeg build, which kling-render pins
(``media/ffmpeg.py``); a frame's key (``frame:<clip sha256>@<index>``) names the clip and the
index, not the PNG, so it never depends on the build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from kling_render.errors import FFmpegError
from kling_render.fsutil import atomic_path
from kling_render.jobs import FramePos
from kling_render.media import ffmpeg
from kling_render.media.probe import probe

__all__ = ["ClipFrames", "clip_frames", "extract_args", "extract_frame", "frame_index", "frame_key_value"]

# Full-chroma, accurately rounded YUV -> RGB: the frame as it looks, the same way every time.
SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int"


@dataclass(frozen=True)
class ClipFrames:
    """A clip's video frame rate and its number of frames (from its packets: one per frame)."""

    fps: Fraction
    count: int


def frame_key_value(clip_sha256: str, index: int) -> str:
    """What stands for a frame in a downstream key: the clip's digest and the frame's index."""
    return f"frame:{clip_sha256}@{index}"


def _exact(seconds: float) -> Fraction:
    """A seconds value as written (0.1 is 1/10, not the float's binary expansion)."""
    return Fraction(repr(float(seconds)))


def frame_index(pos: FramePos, trim_start: float, trim_end: float | None, frames: ClipFrames) -> int:
    """The 0-based index of the frame at ``pos`` in the kept range ``[trim_start, trim_end)`` of a
    clip of ``frames`` (``trim_end`` None: the clip's end). Always a frame of the clip."""
    if frames.count < 1 or frames.fps <= 0:
        raise ValueError("a clip without frames has no frame to take")
    top = frames.count - 1
    first = min(math.floor(_exact(trim_start) * frames.fps), top)
    end = _exact(trim_end) if trim_end is not None else Fraction(frames.count) / frames.fps
    last = max(first, min(math.ceil(end * frames.fps) - 1, top))
    if pos == "first":
        return first
    if pos == "last":
        return last
    if isinstance(pos, str):
        raise ValueError(f"unknown frame position {pos!r}")
    return max(first, min(math.floor((_exact(trim_start) + _exact(pos)) * frames.fps), last))


def clip_frames(path: Path) -> ClipFrames:
    """The clip's frame rate and frame count: its first video stream's packets counted without
    decoding (H.264 and friends carry one frame per packet)."""
    info = probe(path)
    if info.fps is None or info.width is None:
        raise FFmpegError(f"counting the frames of {path.name}", "no video stream with a frame rate")
    args = ["-i", "file:" + str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    count = 0

    def seen(progress: ffmpeg.Progress) -> None:
        nonlocal count
        if progress.frame is not None:
            count = progress.frame

    ffmpeg.run(args, f"counting the frames of {path.name}", progress=seen)
    if count < 1:
        raise FFmpegError(f"counting the frames of {path.name}", "no video frames")
    return ClipFrames(info.fps, count)


def extract_args(clip: Path, index: int, dest: Path) -> list[str]:
    """The ffmpeg arguments (after the runner's base flags) that write frame ``index`` of ``clip``
    to ``dest`` as a PNG."""
    if index < 0:
        raise ValueError(f"frame index {index} is negative")
    return [
        "-y",
        "-i", "file:" + str(clip),
        "-map", "0:v:0", "-an", "-sn", "-dn",
        "-vf", f"select=eq(n\\,{index}),scale=flags={SWS_FLAGS},format=rgb24",
        "-fps_mode", "passthrough", "-frames:v", "1",
        "-c:v", "png", "-pred", "mixed",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        "-f", "image2", "-update", "1", "file:" + str(dest),
    ]  # fmt: skip


def extract_frame(clip: Path, index: int, dest: Path) -> Path:
    """Write frame ``index`` of ``clip`` to ``dest`` (atomically) as a PNG; FFmpegError when the
    clip has no such frame."""
    with atomic_path(dest, suffix=".png") as tmp:
        ffmpeg.run(extract_args(clip, index, tmp), f"taking frame {index} of {clip.name}")
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise FFmpegError(f"taking frame {index} of {clip.name}", "the clip has no such frame")
    return dest
