"""ffmpeg command lines of the cut: encoder settings, the audio pass (loudness measured, then
mixed and encoded once for the whole cut), the stream-copy fast path, concat lists, chapters.
The segment encode and the join are steps of :mod:`kling_render.stitch.steps`.

All media reach ffmpeg as arguments (``file:`` paths, no shell); the filter graph, the
chapter list and the concat list are small text files in a private temp directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

from kling_render.errors import FFmpegError, StitchError
from kling_render.media import ffmpeg
from kling_render.stitch.graph import (
    AudioSettings,
    CutClip,
    OutputSettings,
    build_graph,
    loudnorm_filter,
)

__all__ = [
    "StitchProgress",
    "can_stream_copy",
    "chapters_text",
    "concat_list_text",
    "copy_cut",
    "encode_audio",
    "link_for_concat",
]

# Called with the step ("measuring loudness", "encoding", "joining") and the fraction of it done.
StitchProgress = Callable[[str, float], None]


def reporter(progress: StitchProgress | None, step: str, total: float) -> ffmpeg.ProgressFn | None:
    """An ffmpeg progress callback that reports ``step`` as a fraction of ``total`` seconds."""
    if progress is None:
        return None

    furthest = 0.0  # never backwards: the +faststart pass reports no output time at all

    def report(p: ffmpeg.Progress) -> None:
        nonlocal furthest
        fraction = 1.0 if p.done else min(1.0, p.out_seconds / total) if total > 0 else 0.0
        furthest = max(furthest, fraction)
        progress(step, furthest)

    return report

# Pinned so the same clips give the same bytes on any machine (x264 output depends on threads).
X264_THREADS = "8"
# CRF 18 with preset "fast", not "medium": on 1080p test footage it gave the same SSIM against
# the source (0.9984 both; 0.9803 both on a Mandelbrot zoom) and files 0-5 % larger, for
# 20-30 % less CPU. The encode is ~85 % of a stitch with transitions, and every trim or
# transition edit re-stitches, so this is the stitch's main cost (benchmarks/RESULTS.md).
X264_PRESET = "fast"
VIDEO_CODEC = [
    "-c:v",
    "libx264",
    "-preset",
    X264_PRESET,
    "-crf",
    "18",
    "-profile:v",
    "high",
    "-pix_fmt",
    "yuv420p",
    "-threads:v",
    X264_THREADS,
    # Headers that do not depend on the content: the cut is encoded in segments joined by stream
    # copy, which needs one SPS/PPS for all of them (x264's option for exactly this).
    "-x264-params",
    "stitchable=1",
]
AUDIO_CODEC = ["-c:a", "aac", "-b:a", "192k", "-ar", "48000", "-ac", "2"]
# No timestamps, encoder names or input metadata in the file: re-stitching gives the same bytes.
BITEXACT = [
    "-fflags",
    "+bitexact",
    "-flags:v",
    "+bitexact",
    "-flags:a",
    "+bitexact",
    "-movflags",
    "+faststart",
]
# A file the join reads once: no +faststart pass.
BITEXACT_PART = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
MANY_INPUTS = 16  # above this, decoders get 2 threads each so memory stays bounded


INLINE_GRAPH_MAX = 64_000  # bigger graphs go through a file (one argv string is capped at 128 KiB)


def graph_args(text: str, script: Path) -> list[str]:
    """Inline for ordinary cuts (any ffmpeg); from a file for huge ones: ``-/filter_complex FILE``
    (ffmpeg >= 7), or ``-filter_complex_script FILE`` on older builds, which lack the former."""
    if len(text) <= INLINE_GRAPH_MAX:
        return ["-filter_complex", text]
    from kling_render.media.caps import current

    script.write_text(text, encoding="utf-8")
    release = current().release
    if release is not None and release < (7, 0):
        return ["-filter_complex_script", str(script)]
    return ["-/filter_complex", str(script)]


def file_arg(path: Path) -> str:
    return "file:" + str(path)


def _meta_escape(text: str) -> str:
    return re.sub(r"([=;#\\\n])", r"\\\1", text)


def chapters_text(chapters: Sequence[tuple[str, int, int]], timebase: Fraction) -> str:
    """An ffmetadata file with one titled [CHAPTER] per (title, start, end) in ``timebase`` units."""
    lines = [";FFMETADATA1"]
    for title, start, end in chapters:
        lines += [
            "[CHAPTER]",
            f"TIMEBASE={timebase.numerator}/{timebase.denominator}",
            f"START={start}",
            f"END={end}",
            f"title={_meta_escape(title)}",
        ]
    return "\n".join(lines) + "\n"


def _ffconcat_quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


def concat_list_text(paths: Sequence[str], durations: Sequence[Fraction] | None = None) -> str:
    """An ffconcat list; each name single-quoted with quotes escaped (no newlines allowed); with
    ``durations``, each file's exact length, so the join places the next one by it rather than by
    whatever the container rounds its own duration to."""
    lines = ["ffconcat version 1.0"]
    for i, p in enumerate(paths):
        lines.append(f"file {_ffconcat_quote(p)}")
        if durations is not None:
            lines.append(f"duration {float(durations[i]):.9f}")
    return "\n".join(lines) + "\n"


def can_stream_copy(clips: Sequence[CutClip], output: OutputSettings, audio: AudioSettings | None) -> bool:
    """True when no clip needs re-encoding: same codec, size, fps and audio layout; no trims,
    transitions, music or loudness normalisation."""
    if not clips:
        return False
    if audio is not None and (audio.music is not None or audio.normalize):
        return False
    layouts = set()
    for c in clips:
        i = c.info
        if c.trim_start != 0 or c.trim_end is not None:
            return False
        if c is not clips[0] and c.transition != "cut" and c.transition_duration > 0:
            return False
        if i.video_codec != "h264" or i.pix_fmt != "yuv420p" or i.sar not in (None, "1:1"):
            return False
        if (i.width, i.height) != (output.width, output.height) or i.fps != output.fps:
            return False
        layouts.add((i.has_audio, i.audio_codec, i.sample_rate, i.channels))
    return len(layouts) == 1 and next(iter(layouts))[1] in (None, "aac")


def _inputs(clips: Sequence[CutClip], music: Path | None) -> list[str]:
    args: list[str] = []
    threads = ["-threads", "2"] if len(clips) > MANY_INPUTS else []
    for c in clips:
        args += [*threads, "-i", file_arg(c.path)]
    if music is not None:
        args += ["-stream_loop", "-1", "-i", file_arg(music)]
    return args


_JSON = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}", re.S)


def _measure_loudness(
    clips: Sequence[CutClip],
    output: OutputSettings,
    audio: AudioSettings,
    work: Path,
    progress: StitchProgress | None = None,
    *,
    strict: bool = True,
) -> dict[str, str] | None:
    """Pass 1 of loudnorm over the audio-only graph; None when the mix is silent."""
    music_input = len(clips) if audio.music is not None else None
    graph = build_graph(
        clips, output, audio, music_input=music_input, include_video=False, loudnorm=loudnorm_filter(None)
    )
    stderr = ffmpeg.run(
        [
            "-loglevel",
            "info",
            *(["-xerror"] if strict else []),
            *_inputs(clips, audio.music),
            *graph_args(graph.filter_complex, work / "graph.txt"),
            "-map",
            graph.audio,
            "-f",
            "null",
            "-",
        ],
        "measuring loudness",
        progress=reporter(progress, "measuring loudness", float(graph.timeline.duration)),
    )
    found = _JSON.findall(stderr)
    if not found:
        raise FFmpegError("measuring loudness", "loudnorm printed no measurement")
    measured: dict[str, str] = {k: str(v) for k, v in json.loads(found[-1]).items()}
    try:
        level = float(measured["input_i"])
    except (KeyError, ValueError):
        return None
    return None if level < -70 else measured


def encode_audio(
    clips: Sequence[CutClip],
    output: OutputSettings,
    audio: AudioSettings | None,
    dest: Path,
    work: Path,
    progress: StitchProgress | None = None,
    *,
    strict: bool = True,
) -> None:
    """The whole cut's audio, mixed and encoded once into ``dest`` (AAC in MP4): clip sound with
    its cross-fades, music, ducking and the two-pass loudness normalisation. ``strict`` (``-xerror``)
    fails on any packet that does not decode instead of concealing it.

    Once for the whole cut, not per video segment: AAC frames do not end on segment boundaries
    and every AAC stream starts with priming samples, so audio encoded in pieces would have gaps
    or clicks at the joins. It is cheap (no video is decoded: the clips' video streams are not
    read) and its memory does not depend on the clips' resolution.
    """
    loudnorm = None
    if audio is not None and audio.normalize:
        measured = _measure_loudness(clips, output, audio, work, progress, strict=strict)
        loudnorm = loudnorm_filter(measured) if measured is not None else None
    music = audio.music if audio is not None else None
    music_input = len(clips) if music is not None else None
    graph = build_graph(clips, output, audio, music_input=music_input, include_video=False, loudnorm=loudnorm)
    ffmpeg.run(
        [
            "-y",
            *(["-xerror"] if strict else []),
            *_inputs(clips, music),
            *graph_args(graph.filter_complex, work / "audio-graph.txt"),
            "-map",
            graph.audio,
            *AUDIO_CODEC,
            *BITEXACT_PART,
            "-f",
            "mp4",
            file_arg(dest),
        ],
        f"stitching the audio of {len(clips)} clips",
        progress=reporter(progress, "mixing audio", float(graph.timeline.duration)),
    )


def link_for_concat(
    paths: Sequence[Path], work: Path, what: Sequence[str], durations: Sequence[Fraction] | None = None
) -> tuple[Path, bool]:
    """An ffconcat list of ``paths`` in ``work``; returns it and whether it may be read with
    ``-safe 1``. Each file is reached by a symlink with a plain name (no quoting issues); where a
    symlink cannot be made, by its absolute path (``what`` names it if that path has a newline)."""
    names: list[str] = []
    for i, (path, name) in enumerate(zip(paths, what, strict=True)):
        link = work / f"part{i:05d}{path.suffix if path.suffix.isascii() else ''}"
        try:
            os.symlink(path.resolve(), link)
            names.append(link.name)
        except OSError:
            if "\n" in str(path) or "\r" in str(path):
                raise StitchError(f"{name}: clip path contains a newline: {path!r}") from None
            names.append(str(path.resolve()))
    listing = work / "parts.ffconcat"
    listing.write_text(concat_list_text(names, durations), encoding="utf-8")
    return listing, all(not Path(n).is_absolute() for n in names)


def copy_cut(
    clips: Sequence[CutClip], tmp: Path, work: Path, progress: StitchProgress | None = None
) -> list[tuple[str, int, int]]:
    """Join same-format clips with the concat demuxer and ``-c copy``; chapters in milliseconds."""
    listing, safe = link_for_concat([c.path for c in clips], work, [c.shot_id for c in clips])
    chapters: list[tuple[str, int, int]] = []
    at = Fraction(0)
    for c in clips:
        end = at + Fraction(repr(c.info.duration))
        chapters.append((c.shot_id, round(at * 1000), round(end * 1000)))
        at = end
    meta = work / "chapters.txt"
    meta.write_text(chapters_text(chapters, Fraction(1, 1000)), encoding="utf-8")
    ffmpeg.run(
        join_args(listing, safe, meta, tmp),
        f"joining {len(clips)} clips by stream copy",
        progress=reporter(progress, "joining", float(at)),
    )
    return chapters


def join_args(listing: Path, safe: bool, chapters: Path, dest: Path, audio: Path | None = None) -> list[str]:
    """ffmpeg arguments joining the files of a concat ``listing`` by stream copy into ``dest``, with the
    chapters and metadata of an ffmetadata file; the audio comes from the listed files (if they
    have any) or, when given, from the one ``audio`` file (the segmented stitch's single pass)."""
    inputs = ["-f", "concat", "-safe", "1" if safe else "0", "-i", file_arg(listing)]
    if audio is not None:
        inputs += ["-i", file_arg(audio)]
    meta = "2" if audio is not None else "1"
    return [
        "-y",
        *inputs,
        *["-f", "ffmetadata", "-i", file_arg(chapters)],
        *["-map", "0:v:0", "-map", "1:a:0" if audio is not None else "0:a:0?"],
        *["-map_chapters", meta, "-map_metadata", meta],
        *["-c", "copy", *BITEXACT, "-f", "mp4", file_arg(dest)],
    ]
