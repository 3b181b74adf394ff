"""The structural check of a clip: every packet read, none decoded (issue 20 item 5).

A downloaded or pulled clip is checked here once: the whole file is read into memory and hashed,
its MP4 structure parsed (:mod:`~kling_render.media.mp4`: boxes, sample tables, every sample inside
the file) and every H.264 sample's framing walked (:mod:`~kling_render.media.h264`). That finds a
truncated download, an error page or random bytes, and a clip of the wrong length or size, in a
few milliseconds; a full decode costs about a CPU second per 720p clip, and the stitch's segment
encode decodes every clip anyway (and fails loudly on a corrupt bitstream, which is the one kind of
damage only a decode finds).

The stream headers (:class:`~kling_render.media.probe.MediaInfo`) are derived from the same bytes,
exactly as ``ffmpeg -i`` reports them (tests compare the two), so the stitch needs no probe. A file
this reader does not fully understand (not an MP4, fragmented, another codec, 10-bit, HE-AAC...)
is checked by one ``ffmpeg -c copy`` pass instead: it too reads every packet and decodes none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from kling_render.errors import FFmpegError, InvalidClipError
from kling_render.media.h264 import check_samples, parse_avcc, parse_sps
from kling_render.media.mp4 import Movie, Mp4Error, Track, Unsupported, parse_movie
from kling_render.media.probe import MediaInfo, copy_check, parse_fps

__all__ = ["CHECK_FORMAT", "CheckedClip", "Expected", "check_clip_bytes", "check_container", "check_structure"]

# Bumped whenever what the check derives changes: memos written by another version are not used.
CHECK_FORMAT = 1
MAX_CLIP_BYTES = 2 * 1024**3  # a clip is read into memory once; nothing a provider sends is near this


@dataclass(frozen=True)
class Expected:
    """What the clip should be, as far as the caller knows (None: not checked)."""

    duration: float | None = None  # the shot's seconds
    fps: int | None = 24
    width: int | None = None  # the model's resolution, when known
    height: int | None = None
    codec: str | None = "h264"
    tolerance: float = 0.5  # seconds


@dataclass(frozen=True)
class CheckedClip:
    """A clip that passed the structural check: what it is, by the digest of the bytes checked."""

    sha256: str
    size: int
    info: MediaInfo  # its stream headers, as ffmpeg reports them
    frames: int  # video frames (packets) in the file
    duration: float  # frames / fps: what it really lasts
    mismatches: tuple[str, ...] = ()  # where it differs from what was expected (the caller decides)

    def to_json(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "info": self.info.to_json(),
            "frames": self.frames,
            "duration": self.duration,
        }


def check_structure(path: Path, expect: Expected | None = None) -> CheckedClip:
    """Check the clip at ``path`` (see the module docstring); InvalidClipError naming the file and
    what is wrong when it is not a usable video clip."""
    try:
        size = path.stat().st_size
        if size > MAX_CLIP_BYTES:
            raise InvalidClipError(f"{path.name}: {size} bytes, more than any clip")
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidClipError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    return check_clip_bytes(data, path, expect)


def check_clip_bytes(data: bytes, path: Path, expect: Expected | None = None) -> CheckedClip:
    """:func:`check_structure` of bytes already read from ``path`` (the fallback runs ffmpeg on ``path``)."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        movie = parse_movie(data)
        found = _from_movie(data, movie)
    except Unsupported:
        found = None
    except Mp4Error as exc:
        raise InvalidClipError(f"{path.name} is not a valid clip: {exc}") from None
    if found is None:
        try:
            found = copy_check(path)
        except FFmpegError as exc:
            raise InvalidClipError(f"{path.name} is not a valid clip: {exc.detail}") from None
    info, frames = found
    if info.width is None or info.height is None or frames <= 0:
        raise InvalidClipError(f"{path.name} is not a valid clip: it has no video frames")
    duration = float(frames / info.fps) if info.fps else info.duration
    mismatches = _mismatches(info, duration, expect) if expect is not None else ()
    return CheckedClip(digest, len(data), info, frames, duration, mismatches)


def check_container(data: bytes, name: str) -> Movie:
    """The structure of an MP4 kling-render made itself (a segment, an audio pass): its boxes and
    sample tables, and the framing of every H.264 sample; InvalidClipError naming ``name``."""
    try:
        movie = parse_movie(data)
        for track in movie.tracks:
            if track.entry.codec in ("avc1", "avc3") and "avcC" in track.entry.children:
                config = parse_avcc(track.entry.children["avcC"])
                check_samples(data, track.offsets, track.sizes, config.length_size)
    except Mp4Error as exc:
        raise InvalidClipError(f"{name} is not a valid MP4: {exc}") from None
    return movie


def _mismatches(info: MediaInfo, duration: float, expect: Expected) -> tuple[str, ...]:
    found = []
    if expect.duration is not None and abs(duration - expect.duration) > expect.tolerance:
        found.append(f"the clip lasts {duration:.2f}s, the shot {expect.duration:g}s")
    if expect.fps is not None and info.fps != expect.fps:
        found.append(f"the clip has {info.fps} fps, not {expect.fps}")
    if expect.codec is not None and info.video_codec != expect.codec:
        found.append(f"the clip is {info.video_codec}, not {expect.codec}")
    if expect.width is not None and expect.height is not None and (info.width, info.height) != (
        expect.width,
        expect.height,
    ):
        found.append(f"the clip is {info.width}x{info.height}, not {expect.width}x{expect.height}")
    return tuple(found)


# -- MP4 with H.264 (and AAC): checked and described in Python ----------------------------------


def _from_movie(data: bytes, movie: Movie) -> tuple[MediaInfo, int] | None:
    """The headers and video frame count of a parsed movie, after walking every video sample;
    None when the movie is valid but outside what this reader describes exactly (ffmpeg then does)."""
    videos = [t for t in movie.tracks if t.handler == "vide"]
    audios = [t for t in movie.tracks if t.handler == "soun"]
    if len(videos) != 1 or len(audios) > 1:
        return None
    video = videos[0]
    if video.entry.codec not in ("avc1", "avc3") or "avcC" not in video.entry.children:
        return None
    config = parse_avcc(video.entry.children["avcC"])
    sps = parse_sps(config.sps[0])
    check_samples(data, video.offsets, video.sizes, config.length_size)
    if sps.chroma_format_idc != 1 or sps.bit_depth != 8 or sps.full_range or not sps.frame_mbs_only:
        return None  # described by ffmpeg (the samples' framing was still checked above)
    if movie.duration == 0 or movie.duration >= 0xFFFFFFFF:
        return None
    audio = _aac(audios[0]) if audios else None
    if audios and audio is None:
        return None
    fps = _fps(video)
    if fps is None:
        return None
    sar = "1:1"
    if sps.sar is not None and sps.sar[0] > 0 and sps.sar[1] > 0:
        sar = f"{sps.sar[0]}:{sps.sar[1]}"
    info = MediaInfo(
        duration=_dump_duration(movie.duration, movie.timescale),
        width=sps.width,
        height=sps.height,
        fps=fps,
        video_codec="h264",
        pix_fmt="yuv420p",
        sar=sar,
        has_audio=audio is not None,
        audio_codec="aac" if audio is not None else None,
        sample_rate=audio[0] if audio is not None else None,
        channels=audio[1] if audio is not None else None,
    )
    return info, video.samples


def _dump_duration(duration: int, timescale: int) -> float:
    """The movie's length as ``ffmpeg -i`` prints it (microseconds rounded to nearest, printed to the
    hundredth with +5 ms) and :func:`~kling_render.media.probe.parse_dump` reads it back."""
    us = (duration * 1_000_000 + timescale // 2) // timescale + 5000
    secs, rest = divmod(us, 1_000_000)
    mins, secs = divmod(secs, 60)
    hours, mins = divmod(mins, 60)
    return hours * 3600 + mins * 60 + float(f"{secs:02d}.{rest * 100 // 1_000_000:02d}")


def _fps(track: Track) -> Fraction | None:
    """The average frame rate as ffmpeg prints it (``24 fps``, ``29.97 fps``), read back as probe does.

    As ffmpeg's mov demuxer: frames over summed durations, a lone outsized last duration counted as
    the average so far."""
    total, samples = 0, 0
    for n, (count, delta) in enumerate(track.deltas):
        last = n + 1 == len(track.deltas)
        if last and n and count == 1 and samples > 100 and delta // 10 > total // samples:
            delta = total // samples
        total += count * delta
        samples += count
    if total <= 0:
        return None
    rate = track.timescale * samples / total
    hundredths = round(rate * 100)
    if hundredths == 0:
        return None
    text = f"{rate:3.2f}" if hundredths % 100 else f"{rate:1.0f}" if hundredths % 100_000 else f"{rate / 1000:1.0f}k"
    return parse_fps(f"{text} fps")


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _aac(track: Track) -> tuple[int, int] | None:
    """(sample rate, channels) of an AAC-LC track in mono or stereo; None for anything else."""
    if track.entry.codec != "mp4a" or "esds" not in track.entry.children:
        return None
    config = _audio_specific_config(track.entry.children["esds"])
    if config is None or len(config) < 2:
        return None
    bits = int.from_bytes(config[:2], "big")
    aot, rate_index, channels = bits >> 11, (bits >> 7) & 0xF, (bits >> 3) & 0xF
    if aot != 2 or rate_index >= len(_AAC_RATES) or channels not in (1, 2):
        return None
    return _AAC_RATES[rate_index], channels


def _audio_specific_config(esds: bytes) -> bytes | None:
    """The DecoderSpecificInfo of an ``esds`` box when its object type is AAC (0x40)."""
    pos, end = 4, len(esds)  # version and flags

    def descriptor(at: int) -> tuple[int, int, int] | None:
        if at >= end:
            return None
        tag, at, size = esds[at], at + 1, 0
        for _ in range(4):
            if at >= end:
                return None
            byte = esds[at]
            at += 1
            size = (size << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        return (tag, at, min(end, at + size))

    es = descriptor(pos)
    if es is None or es[0] != 3:
        return None
    at = es[1] + 2  # ES_ID
    if at >= end:
        return None
    flags = esds[at]
    at += 1
    if flags & 0x80:
        at += 2
    if flags & 0x40:
        if at >= end:
            return None
        at += 1 + esds[at]
    if flags & 0x20:
        at += 2
    config = descriptor(at)
    if config is None or config[0] != 4 or config[1] >= end or esds[config[1]] != 0x40:
        return None
    info = descriptor(config[1] + 13)
    if info is None or info[0] != 5:
        return None
    return bytes(esds[info[1] : info[2]])
