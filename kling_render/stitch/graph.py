"""The final cut as an ffmpeg filter graph: pure functions, no I/O, no subprocess.

The ``filter_complex`` text is built directly rather than through ffmpeg-python: the graph is
a flat list of numbered chains (``[3:v:0]...[v3]``), ffmpeg-python's recursive topological
sort would walk a 200-clip xfade chain hundreds of frames deep, and it cannot express the
exact option order we want to keep golden-testable.

Timing is done in whole frames. The kept frame count of clip *i* is
``round(E_i·fps) − round(E_{i−1}·fps)`` where ``E_i`` is the sum of kept durations so far
(exact fractions, half rounds up), so rounding never drifts; transition lengths are whole
frames rounded the same cumulative way; each clip's audio is padded or cut to exactly its
frames' worth of 48 kHz samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from kling_render.media.probe import MediaInfo

__all__ = [
    "SAMPLE_RATE",
    "TRANSITIONS",
    "AudioSettings",
    "CutClip",
    "Graph",
    "OutputSettings",
    "PendingClip",
    "Timeline",
    "build_graph",
    "check_clips",
    "decimal_text",
    "kept_duration",
    "max_transition",
    "plan_timeline",
    "video_chain",
]

SAMPLE_RATE = 48000

# ffmpeg's xfade transition names (all but "custom"), plus "cut" for a plain join.
TRANSITIONS: frozenset[str] = frozenset(
    [
        "cut",
        "fade",
        "wipeleft",
        "wiperight",
        "wipeup",
        "wipedown",
        "slideleft",
        "slideright",
        "slideup",
        "slidedown",
        "circlecrop",
        "rectcrop",
        "distance",
        "fadeblack",
        "fadewhite",
        "radial",
        "smoothleft",
        "smoothright",
        "smoothup",
        "smoothdown",
        "circleopen",
        "circleclose",
        "vertopen",
        "vertclose",
        "horzopen",
        "horzclose",
        "dissolve",
        "pixelize",
        "diagtl",
        "diagtr",
        "diagbl",
        "diagbr",
        "hlslice",
        "hrslice",
        "vuslice",
        "vdslice",
        "hblur",
        "fadegrays",
        "wipetl",
        "wipetr",
        "wipebl",
        "wipebr",
        "squeezeh",
        "squeezev",
        "zoomin",
        "fadefast",
        "fadeslow",
        "hlwind",
        "hrwind",
        "vuwind",
        "vdwind",
        "coverleft",
        "coverright",
        "coverup",
        "coverdown",
        "revealleft",
        "revealright",
        "revealup",
        "revealdown",
    ]
)

# Scaler flags chosen for reproducible output across runs and CPUs.
SWS_FLAGS = "bicubic+accurate_rnd+bitexact"


@dataclass(frozen=True)
class CutClip:
    """One shot's clip as it enters the cut."""

    shot_id: str
    path: Path
    info: MediaInfo
    trim_start: float = 0.0
    trim_end: float | None = None  # seconds into the clip; None = clip end
    transition: str = "cut"  # into this clip from the previous one; ignored on the first clip
    transition_duration: float = 0.0
    sha256: str | None = None  # the clip file's digest when the caller knows it (keys cached segments)


@dataclass(frozen=True)
class PendingClip:
    """A shot whose clip does not exist yet, planned with the duration it is expected to have (the
    shot's). A segment planned from it is keyed by what it really reads, so a wrong guess only
    makes a segment no cut uses (stitch/plan.py)."""

    shot_id: str
    duration: float
    trim_start: float = 0.0
    trim_end: float | None = None
    transition: str = "cut"
    transition_duration: float = 0.0


@dataclass(frozen=True)
class OutputSettings:
    width: int = 1920
    height: int = 1080
    fps: int = 24
    fit: str = "contain"  # contain pads, cover crops


@dataclass(frozen=True)
class AudioSettings:
    music: Path | None = None
    music_volume: float = 0.3
    duck: bool = False
    normalize: bool = False


@dataclass(frozen=True)
class Timeline:
    """Frame-exact placement of every clip in the cut."""

    fps: int
    frames: tuple[int, ...]  # kept frames of each clip
    xfade: tuple[int, ...]  # transition frames into each clip (0 = cut; always 0 for the first)
    starts: tuple[int, ...]  # output frame where each clip starts appearing
    samples: tuple[int, ...]  # 48 kHz samples of each clip's audio (= its frames' worth)
    xfade_samples: tuple[int, ...]  # acrossfade length into each clip
    total_frames: int
    total_samples: int

    @property
    def duration(self) -> Fraction:
        return Fraction(self.total_frames, self.fps)

    def chapters(self, ids: Sequence[str]) -> list[tuple[str, int, int]]:
        """(shot id, first frame, end frame) per clip; a chapter starts where its transition starts."""
        ends = [*self.starts[1:], self.total_frames]
        return [(sid, s, e) for sid, s, e in zip(ids, self.starts, ends, strict=True)]


def max_transition(prev_kept: float, next_kept: float) -> float:
    """The longest transition allowed between two clips: half the shorter neighbour."""
    return min(prev_kept, next_kept) / 2


def kept_duration(clip: CutClip | PendingClip) -> float:
    """The seconds of the clip that the cut keeps (its trim, else all of it)."""
    whole = clip.info.duration if isinstance(clip, CutClip) else clip.duration
    end = whole if clip.trim_end is None else clip.trim_end
    return end - clip.trim_start


def _exact(x: float) -> Fraction:
    # Through the shortest repr, so 1.01 is 101/100 and sums of user durations stay exact.
    return Fraction(repr(float(x)))


def _round(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def _is_transition(clip: CutClip | PendingClip) -> bool:
    return clip.transition != "cut" and clip.transition_duration > 0


def check_clips(clips: Sequence[CutClip], output: OutputSettings) -> list[str]:
    """Every reason these clips cannot be cut, as messages naming the shot (empty = fine)."""
    problems: list[str] = []
    if not clips:
        return ["no clips to stitch"]
    if output.width <= 0 or output.height <= 0 or output.width % 2 or output.height % 2:
        problems.append(f"output size {output.width}x{output.height} must be positive and even")
    if output.fps <= 0:
        problems.append(f"output fps {output.fps} must be positive")
    if output.fit not in ("contain", "cover"):
        problems.append(f"output fit {output.fit!r} must be 'contain' or 'cover'")
    frame = 1 / max(output.fps, 1)
    kept = [kept_duration(c) for c in clips]
    for i, clip in enumerate(clips):
        sid = clip.shot_id
        if clip.info.width is None or clip.info.height is None:
            problems.append(f"{sid}: clip has no video stream")
        if clip.trim_start < 0:
            problems.append(f"{sid}: trim start {clip.trim_start} is negative")
        if clip.trim_end is not None and clip.trim_end > clip.info.duration + frame:
            problems.append(
                f"{sid}: trim end {clip.trim_end} is past the clip's end ({clip.info.duration:.3f}s)"
            )
        if kept[i] < frame:
            problems.append(f"{sid}: keeps {kept[i]:.3f}s, less than one frame")
        if clip.transition not in TRANSITIONS:
            problems.append(f"{sid}: unknown transition {clip.transition!r}")
        if clip.transition_duration < 0:
            problems.append(f"{sid}: transition duration {clip.transition_duration} is negative")
        if i > 0 and _is_transition(clip):
            limit = max_transition(kept[i - 1], kept[i])
            if clip.transition_duration > limit + 1e-9:
                problems.append(
                    f"{sid}: transition {clip.transition_duration}s is longer than half the shorter "
                    f"neighbour ({limit:.3f}s)"
                )
    return problems


def plan_timeline(clips: Sequence[CutClip | PendingClip], fps: int) -> Timeline:
    """Whole-frame and whole-sample placement of the clips (see the module docstring)."""
    frames: list[int] = []
    samples: list[int] = []
    xfade: list[int] = []
    xfade_samples: list[int] = []
    starts: list[int] = []
    elapsed = Fraction(0)
    done_frames = 0
    done_samples = 0
    overlapped = Fraction(0)
    done_xfade = 0
    position = 0
    for i, clip in enumerate(clips):
        elapsed += _exact(kept_duration(clip))
        through = _round(elapsed * fps)
        n = max(1, through - done_frames)
        done_frames += n
        sample_end = _round(Fraction(done_frames * SAMPLE_RATE, fps))
        samples.append(sample_end - done_samples)
        done_samples = sample_end
        frames.append(n)
        t = 0
        if i > 0 and _is_transition(clip):
            # cumulative like the clips, so many 0.3 s fades at 24 fps do not each lose 0.2 frame.
            # Never into the frames of the previous clip that its own incoming transition uses: a
            # frame blends at most two clips (two transitions of exactly half a clip can otherwise
            # round to one frame more than the clip has), so each clip's frames split cleanly into
            # [incoming blend | own frames | outgoing blend] and the cut can be encoded in segments.
            overlapped += _exact(clip.transition_duration)
            t = min(_round(overlapped * fps) - done_xfade, frames[i - 1] - xfade[i - 1], n)
            t = max(t, 0)
            done_xfade += t
        xfade.append(t)
        xfade_samples.append(_round(Fraction(t * SAMPLE_RATE, fps)))
        position = 0 if i == 0 else position + frames[i - 1] - t
        starts.append(position)
    total = position + frames[-1] if frames else 0
    return Timeline(
        fps=fps,
        frames=tuple(frames),
        xfade=tuple(xfade),
        starts=tuple(starts),
        samples=tuple(samples),
        xfade_samples=tuple(xfade_samples),
        total_frames=total,
        total_samples=sum(samples) - sum(xfade_samples),
    )


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def _fit_filters(info: MediaInfo, out: OutputSettings) -> str:
    """scale+pad (contain) or scale+crop (cover) to the output size, in square pixels."""
    w, h = info.width or out.width, info.height or out.height
    if (w, h) == (out.width, out.height) and info.sar in (None, "1:1"):
        return ""  # already the output size in square pixels: scaling and padding would only copy frames
    sar = Fraction(1)
    if info.sar and ":" in info.sar:
        num, den = info.sar.split(":", 1)
        if num.isdigit() and den.isdigit() and int(num) > 0 and int(den) > 0:
            sar = Fraction(int(num), int(den))
    display_w = w * sar
    pick = min if out.fit == "contain" else max
    factor = pick(Fraction(out.width) / display_w, Fraction(out.height, h))
    sw, sh = _even(float(display_w * factor)), _even(float(h * factor))
    if out.fit == "contain":
        sw, sh = min(sw, out.width), min(sh, out.height)
        x, y = (out.width - sw) // 4 * 2, (out.height - sh) // 4 * 2
        return f"scale={sw}:{sh}:flags={SWS_FLAGS},pad={out.width}:{out.height}:{x}:{y}:color=black"
    sw, sh = max(sw, out.width), max(sh, out.height)
    x, y = (sw - out.width) // 4 * 2, (sh - out.height) // 4 * 2
    return f"scale={sw}:{sh}:flags={SWS_FLAGS},crop={out.width}:{out.height}:{x}:{y}"


def decimal_text(x: Fraction | float) -> str:
    """A number for a filter option (seconds, a level): plain decimal, enough digits to land on the frame."""
    text = f"{float(x):.9f}".rstrip("0").rstrip(".")
    return text or "0"


_AFORMAT = f"aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo"


def video_chain(i: int, clip: CutClip, n: int, out: OutputSettings, *, first: int = 0, label: str = "") -> str:
    """Input ``i``'s video as frames ``first``..``n``-1 of its ``n`` kept frames, at the output
    size, fps and format; labelled ``[v<i>]`` unless ``label`` says otherwise.

    Every part of a clip (the whole, its head, the rest after an incoming transition) is cut from
    the same stream the same way, so the parts are exactly the frames of the whole: the source is
    trimmed to its kept frames (the last one cloned if the file runs short), then to the part,
    and only the part is scaled.
    """
    start = _round(_exact(clip.trim_start) * out.fps)
    fit = _fit_filters(clip.info, out)
    part = f"trim=end_frame={n}," if first == 0 else f"trim=start_frame={first}:end_frame={n},setpts=PTS-STARTPTS,"
    return (
        f"[{i}:v:0]setpts=PTS-STARTPTS,fps={out.fps},"
        f"trim=start_frame={start}:end_frame={start + n},setpts=PTS-STARTPTS,"
        f"tpad=stop_mode=clone:stop={n},{part}"
        f"{fit + ',' if fit else ''}setsar=1,format=yuv420p{label or f'[v{i}]'}"
    )


def _audio_chain(i: int, clip: CutClip, samples: int) -> str:
    if not clip.info.has_audio:
        return f"anullsrc=r={SAMPLE_RATE}:cl=stereo,{_AFORMAT},atrim=end_sample={samples}[a{i}]"
    trim = f"atrim=start={decimal_text(clip.trim_start)},asetpts=PTS-STARTPTS," if clip.trim_start > 0 else ""
    return (
        f"[{i}:a:0]asetpts=PTS-STARTPTS,{trim}aresample={SAMPLE_RATE},{_AFORMAT},"
        f"apad=whole_len={samples},atrim=end_sample={samples}[a{i}]"
    )


@dataclass(frozen=True)
class Graph:
    """A filter_complex and the labels of its outputs."""

    filter_complex: str
    video: str | None  # e.g. "[vout]"; None for an audio-only graph
    audio: str  # e.g. "[aout]"
    timeline: Timeline


def loudnorm_filter(measured: dict[str, str] | None, *, target: float = -16.0) -> str:
    """loudnorm for −16 LUFS; with ``measured`` (pass 1's JSON) it is the exact second pass."""
    base = f"loudnorm=I={decimal_text(target)}:TP=-1.5:LRA=11"
    if measured is None:
        return base + ":print_format=json"
    return (
        f"{base}:measured_I={measured['input_i']}:measured_TP={measured['input_tp']}"
        f":measured_LRA={measured['input_lra']}:measured_thresh={measured['input_thresh']}"
        f":offset={measured['target_offset']}:linear=true:print_format=none"
    )


def build_graph(
    clips: Sequence[CutClip],
    output: OutputSettings,
    audio: AudioSettings | None,
    *,
    music_input: int | None = None,
    include_video: bool = True,
    loudnorm: str | None = None,
) -> Graph:
    """The whole cut as one filter_complex; clip *i* is ffmpeg input *i*, music is ``music_input``.

    ``loudnorm`` is appended to the final mix (pass 1 measures, pass 2 applies); it is the
    caller's choice because the two passes need different options.
    """
    tl = plan_timeline(clips, output.fps)
    chains: list[str] = []
    for i, clip in enumerate(clips):
        if include_video:
            chains.append(video_chain(i, clip, tl.frames[i], output))
        chains.append(_audio_chain(i, clip, tl.samples[i]))

    # Runs of clips joined by plain cuts become one concat; runs are then chained with xfade.
    groups: list[list[int]] = []
    for i in range(len(clips)):
        if i == 0 or tl.xfade[i] == 0:
            if groups:
                groups[-1].append(i)
            else:
                groups.append([i])
        else:
            groups.append([i])
    segs: list[str] = []
    for g, members in enumerate(groups):
        if len(members) == 1:
            segs.append(str(members[0]))
            continue
        pads = "".join((f"[v{i}][a{i}]" if include_video else f"[a{i}]") for i in members)
        outs = f"[v_c{g}][a_s{g}]" if include_video else f"[a_s{g}]"
        chains.append(f"{pads}concat=n={len(members)}:v={int(include_video)}:a=1{outs}")
        if include_video:  # concat outputs microsecond timestamps; xfade wants 1/fps on both sides
            chains.append(f"[v_c{g}]settb=1/{output.fps}[v_s{g}]")
        segs.append(f"_s{g}")
    cur = segs[0]
    for g in range(1, len(groups)):
        first = groups[g][0]
        nxt = segs[g]
        name = clips[first].transition
        dur = Fraction(tl.xfade[first], output.fps)
        offset = Fraction(tl.starts[first], output.fps)
        if include_video:
            chains.append(
                f"[v{cur}][v{nxt}]xfade=transition={name}:duration={decimal_text(dur)}:offset={decimal_text(offset)}[v_x{g}]"
            )
        chains.append(f"[a{cur}][a{nxt}]acrossfade=ns={tl.xfade_samples[first]}:o=1:c1=tri:c2=tri[a_x{g}]")
        cur = f"_x{g}"

    video_label = None
    if include_video:
        chains.append(f"[v{cur}]null[vout]")
        video_label = "[vout]"
    mix = f"[a{cur}]"
    total = tl.total_samples
    if audio is not None and audio.music is not None and music_input is not None:
        seconds = Fraction(total, SAMPLE_RATE)
        fade = min(Fraction(3), seconds / 3)
        chains.append(
            f"[{music_input}:a:0]aresample={SAMPLE_RATE},{_AFORMAT},asetpts=PTS-STARTPTS,"
            f"atrim=end_sample={total},volume={decimal_text(audio.music_volume)},"
            f"afade=t=out:st={decimal_text(seconds - fade)}:d={decimal_text(fade)},apad=whole_len={total}[music]"
        )
        music = "[music]"
        if audio.duck:
            # sidechaincompress ends its output as soon as either input ends, dropping what it holds
            # of the other: which samples survive then depends on thread timing, and the cut's bytes
            # changed from one stitch to the next. Both inputs are padded without end and the result
            # is cut to length, so it never sees an end of stream.
            chains.append(f"{mix}asplit=2[clipmix][duckkey]")
            chains.append("[music]apad[music_open]")
            chains.append("[duckkey]apad[duckkey_open]")
            chains.append(
                "[music_open][duckkey_open]sidechaincompress=threshold=0.02:ratio=8:attack=20:release=400,"
                f"atrim=end_sample={total}[ducked]"
            )
            mix, music = "[clipmix]", "[ducked]"
        chains.append(f"{mix}{music}amix=inputs=2:duration=first:dropout_transition=0:normalize=0[mixed]")
        mix = "[mixed]"
    tail = f"{loudnorm},aresample={SAMPLE_RATE},{_AFORMAT}," if loudnorm else ""
    chains.append(f"{mix}{tail}apad=whole_len={total},atrim=end_sample={total}[aout]")
    return Graph(filter_complex=";\n".join(chains), video=video_label, audio="[aout]", timeline=tl)
