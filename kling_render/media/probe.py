"""Media inspection with ffmpeg alone (no ffprobe): parse the ``ffmpeg -i`` stream dump.

``probe`` reads headers only; ``copy_check`` also reads every packet without decoding it (the
structural check's fallback for files :mod:`kling_render.media.check` does not read itself);
``check_clip`` (and ``verify_clip``) decodes every packet: a corrupt bitstream fails there.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from kling_render.errors import FFmpegError
from kling_render.media import ffmpeg

__all__ = ["ClipCheck", "MediaInfo", "check_clip", "copy_check", "parse_dump", "parse_fps", "probe", "verify_clip"]


@dataclass(frozen=True)
class MediaInfo:
    """What the stitcher needs to know about one media file (first video and audio stream)."""

    duration: float
    width: int | None
    height: int | None
    fps: Fraction | None
    video_codec: str | None
    pix_fmt: str | None
    sar: str | None
    has_audio: bool
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (fps as "num/den"), for the clip cache's sidecar."""
        doc = asdict(self)
        doc["fps"] = None if self.fps is None else f"{self.fps.numerator}/{self.fps.denominator}"
        return doc

    @classmethod
    def from_json(cls, raw: object) -> MediaInfo:
        """The inverse of :meth:`to_json`; ValueError for anything else (a damaged or older sidecar)."""
        if not isinstance(raw, dict) or set(raw) != {f.name for f in fields(cls)}:
            raise ValueError("not a MediaInfo document")
        for name, kinds in _JSON_KINDS.items():
            value = raw[name]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"MediaInfo field {name} has the wrong type")
        try:
            fps = None if raw["fps"] is None else Fraction(raw["fps"])
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"bad fps {raw['fps']!r}") from exc
        if fps is not None and fps <= 0:
            raise ValueError(f"bad fps {raw['fps']!r}")
        return cls(**{**raw, "duration": float(raw["duration"]), "fps": fps})


_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))
_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "duration": (int, float),
    "width": _OPT_INT,
    "height": _OPT_INT,
    "fps": _OPT_STR,
    "video_codec": _OPT_STR,
    "pix_fmt": _OPT_STR,
    "sar": _OPT_STR,
    "has_audio": (bool,),
    "audio_codec": _OPT_STR,
    "sample_rate": _OPT_INT,
    "channels": _OPT_INT,
}


@dataclass(frozen=True)
class ClipCheck:
    """What :func:`check_clip` found: the headers exactly as :func:`probe` reads them (the
    container's duration), and the duration measured by decoding."""

    headers: MediaInfo
    duration: float


_DURATION = re.compile(r"^\s*Duration:\s*(?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)", re.M)
_STREAM = re.compile(r"^\s*Stream #\d+:\d+(?:\[[^\]]*\])?(?:\([^)]*\))?: (Video|Audio): (.*)$", re.M)
_SIZE = re.compile(r"(?:^|\s|,)(\d{2,6})x(\d{2,6})(?:\s|,|$)")
_SAR = re.compile(r"\[SAR (\d+:\d+) DAR \d+:\d+\]")
_FPS = re.compile(r"(\d+(?:\.\d+)?k?) (?:fps|tbr)\b")
_RATE = re.compile(r"(\d+) Hz")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "7.1": 8}
_CHANNELS = re.compile(r"(\d+) channels")


def _split_top(spec: str) -> list[str]:
    """Split a stream description on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def parse_fps(text: str) -> Fraction | None:
    """ffmpeg prints rates rounded to 2 decimals; recover NTSC rates (24000/1001...) exactly."""
    m = _FPS.search(text)
    if not m:
        return None
    raw = m.group(1)
    value = Fraction(raw[:-1]) * 1000 if raw.endswith("k") else Fraction(raw)
    if value <= 0:
        return None
    whole = round(value)
    if abs(value - whole) < Fraction(1, 200):
        return Fraction(whole)
    ntsc_base = round(value * Fraction(1001, 1000))
    ntsc = Fraction(ntsc_base * 1000, 1001)
    if abs(value - ntsc) < Fraction(1, 100):
        return ntsc
    return value.limit_denominator(1001)


def parse_dump(text: str) -> MediaInfo:
    """Build a MediaInfo from the stderr of ``ffmpeg -i FILE`` (first input only)."""
    first_input = text.split("\nInput #1", 1)[0].split("\nStream mapping:", 1)[0]
    m = _DURATION.search(first_input)
    if m is None:
        raise ValueError("no Duration line in ffmpeg output")
    duration = 0.0
    if m.group(1) is not None:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    video: str | None = None
    audio: str | None = None
    for kind, spec in _STREAM.findall(first_input):
        if kind == "Video" and video is None and "attached pic" not in spec:
            video = spec
        elif kind == "Audio" and audio is None:
            audio = spec
    width = height = None
    fps = None
    vcodec = pix_fmt = sar = None
    if video is not None:
        parts = _split_top(video)
        vcodec = parts[0].split()[0]
        if len(parts) > 1:
            pix_fmt = parts[1].split("(")[0].strip() or None
        size = _SIZE.search(video)
        if size:
            width, height = int(size.group(1)), int(size.group(2))
        sar_m = _SAR.search(video)
        sar = sar_m.group(1) if sar_m else ("1:1" if size else None)
        fps = parse_fps(video)
    acodec = None
    rate = channels = None
    if audio is not None:
        parts = _split_top(audio)
        acodec = parts[0].split()[0]
        rate_m = _RATE.search(audio)
        rate = int(rate_m.group(1)) if rate_m else None
        if len(parts) > 2:
            layout = parts[2].split("(")[0].strip()
            ch_m = _CHANNELS.search(parts[2])
            channels = _LAYOUTS.get(layout) or (int(ch_m.group(1)) if ch_m else None)
    return MediaInfo(
        duration=duration,
        width=width,
        height=height,
        fps=fps,
        video_codec=vcodec,
        pix_fmt=pix_fmt,
        sar=sar,
        has_audio=audio is not None,
        audio_codec=acodec,
        sample_rate=rate,
        channels=channels,
    )


def _input_arg(path: Path) -> str:
    # "file:" stops ffmpeg reading a name like "a:b.mp4" or "-x.mp4" as a protocol or option.
    return "file:" + str(path)


def probe(path: Path) -> MediaInfo:
    """Read a file's container and stream headers; FFmpegError if ffmpeg cannot open it."""
    step = f"probing {path.name}"
    if not path.is_file():
        raise FFmpegError(step, f"{path}: No such file or directory")
    # -loglevel info (the later flag wins) so the stream dump is printed; -t 0 writes nothing.
    stderr = ffmpeg.run(
        [
            "-loglevel",
            "info",
            "-i",
            _input_arg(path),
            "-map",
            "0",
            "-c",
            "copy",
            "-t",
            "0",
            "-f",
            "null",
            "-",
        ],
        step,
    )
    return _headers(stderr, step)


def _headers(dump: str, step: str) -> MediaInfo:
    """The MediaInfo of an ``ffmpeg -i`` stream dump; FFmpegError when it has no usable stream."""
    try:
        info = parse_dump(dump)
    except ValueError as exc:
        raise FFmpegError(step, f"unreadable media: {exc}") from exc
    if info.width is None and not info.has_audio:
        raise FFmpegError(step, "no video or audio stream found")
    return info


_PROGRESS = re.compile(r"^(\w+)=(.*)$")
# With ``-loglevel level+info`` every log line is "[context @ 0x...] [level] message".
_LOGGED = re.compile(
    r"^(?:\[[^\]]* @ 0x[0-9a-fA-F]+\] )?\[(trace|debug|verbose|info|warning|error|fatal|panic)\] ?(.*)$"
)
_PROBLEM_LEVELS = ("error", "fatal", "panic")


def verify_clip(path: Path) -> MediaInfo:
    """:func:`check_clip`, as one MediaInfo whose duration is the measured one."""
    check = check_clip(path)
    return replace(check.headers, duration=check.duration)


def check_clip(path: Path, *, audio_only: bool = False) -> ClipCheck:
    """Read the headers and decode the whole file in one ffmpeg run; FFmpegError if any packet
    is corrupt or missing.

    One process, not ``probe`` then a decode: starting ffmpeg is most of the cost for a short
    clip, and a render checks every clip it downloads. The log is read with its level tags:
    ``info`` lines carry the stream dump, ``error``/``fatal`` lines are the problems, and the
    untagged ``key=value`` lines are ``-progress``. The measured duration is decoded video
    frames / fps, or the last audio timestamp when that is longer. ``audio_only`` decodes only the
    sound (to find which clip broke an audio pass).
    """
    step = f"decoding {path.name}"
    if not path.is_file():
        raise FFmpegError(step, f"{path}: No such file or directory")
    maps = ["-map", "0:a:0?"] if audio_only else ["-map", "0:v:0?", "-map", "0:a:0?"]
    args = ["-loglevel", "level+info", "-xerror", "-i", _input_arg(path), *maps]
    args += ["-f", "null", "-progress", "pipe:2", "-nostats", "-"]
    dump, frames, out_time = _run_to_null(args, step)
    info = _headers(dump, step)
    measured = out_time
    if info.fps and frames:
        measured = max(measured, float(frames / info.fps))
    if measured <= 0:
        raise FFmpegError(step, "no decodable frames")
    return ClipCheck(info, measured)


def copy_check(path: Path) -> tuple[MediaInfo, int]:
    """Read the headers and every packet of ``path`` without decoding (``-c copy`` to null) in one
    ffmpeg run; returns the headers and the number of video packets. FFmpegError when ffmpeg
    cannot read the file to its end (truncated, garbage) or finds no stream."""
    step = f"reading {path.name}"
    if not path.is_file():
        raise FFmpegError(step, f"{path}: No such file or directory")
    args = ["-loglevel", "level+info", "-xerror", "-i", _input_arg(path), "-map", "0:v:0?", "-map", "0:a:0?"]
    args += ["-c", "copy", "-f", "null", "-progress", "pipe:2", "-nostats", "-"]
    dump, frames, _ = _run_to_null(args, step)
    return _headers(dump, step), frames


def _run_to_null(args: list[str], step: str) -> tuple[str, int, float]:
    """Run an ffmpeg pass to the null muxer with a ``level+info`` log and ``-progress`` on stderr:
    the stream dump, the last frame count and the furthest output time. FFmpegError with the
    logged problems when it fails or logs any (``-xerror`` stops at the first bad packet)."""
    try:
        stderr = ffmpeg.run(args, step)
    except FFmpegError as exc:
        problems = [text for level, text in _log_lines(exc.stderr) if level in _PROBLEM_LEVELS]
        raise FFmpegError(step, "\n".join(problems) or exc.stderr, ran=exc.ran) from exc
    dump: list[str] = []
    problems = []
    frames = 0
    out_time = 0.0
    for level, text in _log_lines(stderr):
        if level == "info":
            dump.append(text)
        elif level in _PROBLEM_LEVELS:
            problems.append(text)
        elif level == "progress":
            key, _, value = text.partition("=")
            if key == "frame" and value.strip().isdigit():
                frames = int(value)
            elif key == "out_time_us" and value.strip().lstrip("-").isdigit():
                out_time = max(out_time, int(value) / 1e6)
    if problems:
        raise FFmpegError(step, "\n".join(problems))
    return "\n".join(dump), frames, out_time


def _log_lines(stderr: str) -> list[tuple[str, str]]:
    """(level, text) for each line of a ``level+info`` log; ``-progress`` lines get "progress"."""
    out: list[tuple[str, str]] = []
    for line in stderr.splitlines():
        m = _LOGGED.match(line)
        if m is not None:
            out.append((m.group(1), m.group(2)))
        elif _PROGRESS.match(line.strip()):
            out.append(("progress", line.strip()))
        # Anything else is the tail of a multi-line message; -xerror still fails a bad packet.
    return out
