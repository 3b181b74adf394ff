"""The cut's video as independent segments (pure: no I/O, no subprocess).

Encoding the whole cut as one ffmpeg graph holds every input and the whole ``xfade`` chain at
once: its memory grows with the number of clips (10 GB at 120 1080p clips), and one trim edit
re-encodes everything. So the video is cut into segments, one per clip, each encoded by its own
ffmpeg with at most two clip inputs, and the encoded segments are joined by stream copy.

Segment *i* is clip *i*'s frames after its incoming transition, ending with its outgoing one
(its tail blended with the head of clip *i+1*)::

    clip i:   [ incoming blend | own frames | outgoing blend ]
    segment i =                [ own frames | outgoing blend ]   (reads clip i, and clip i+1's head)

so it covers output frames ``starts[i] + xfade[i]`` to ``starts[i+1] + xfade[i+1]`` of the
timeline (:func:`~kling_render.stitch.graph.plan_timeline`), and the segments' frame counts add up
to the cut's. The blend lives with the clip it leaves rather than the one it enters: the head of
the next clip is its first few frames, which its decoder reaches at once, while the tail of the
previous clip would cost a decode of that whole clip (clips usually are one GOP, so seeking does
not help): 10 % more CPU on 1080p cross-fades (benchmarks/RESULTS.md).

Each part is cut from its clip with :func:`~kling_render.stitch.graph.video_chain`, the same
filters as the single graph, so a segment holds exactly the frames the single graph gives those
output positions (a test compares the frames). A segment's graph text names no file and no
position in the cut: with the digests of the clips it reads and the encoder settings, it is the
segment's identity (:func:`segment_identity`), which is what lets a trim edit re-encode only
the segments it touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from kling_render.stitch.graph import (
    SWS_FLAGS,
    CutClip,
    OutputSettings,
    PendingClip,
    Timeline,
    decimal_text,
    plan_timeline,
    video_chain,
)

__all__ = ["SEGMENT_FORMAT", "Segment", "plan_segments", "segment_at", "segment_identity"]

# Bumped whenever the way segments are cut or encoded changes: old cached segments stop matching.
SEGMENT_FORMAT = 1


@dataclass(frozen=True)
class Segment:
    index: int  # the clip it belongs to
    clips: tuple[int, ...]  # clips read, as ffmpeg inputs 0 (and 1): (i,) or (i, i + 1)
    first_frame: int  # where it starts in the cut
    frames: int  # how many frames it has (0: the whole clip is its incoming transition)
    filter_complex: str  # outputs [vout]


def plan_segments(clips: Sequence[CutClip], output: OutputSettings) -> tuple[Timeline, list[Segment]]:
    """The timeline and one segment per clip (a segment of 0 frames is skipped by the encoder)."""
    tl = plan_timeline(clips, output.fps)
    return tl, [segment_at(i, clips, tl, output) for i in range(len(clips))]


def segment_at(i: int, clips: Sequence[CutClip | PendingClip], tl: Timeline, output: OutputSettings) -> Segment:
    """Clip ``i``'s segment on the timeline ``tl``; it reads clip ``i`` and, when it ends with a
    transition, clip ``i + 1`` (both must be clips, not pending ones: their stream headers shape
    the graph). ValueError when one of them is pending."""
    clip = clips[i]
    n, into = tl.frames[i], tl.xfade[i]
    out = tl.xfade[i + 1] if i + 1 < len(clips) else 0
    following = clips[i + 1] if out else None
    if not isinstance(clip, CutClip) or (following is not None and not isinstance(following, CutClip)):
        raise ValueError(f"segment {i} reads a clip that does not exist yet")
    frames = n - into
    chains = [video_chain(0, clip, n, output, first=into, label="[own]")]
    if following is not None:
        chains += _blend_out(following, frames, out, output)
    else:
        chains.append("[own]null[cut]")
    chains.append(f"[cut]{NORMALISE}[vout]")
    inputs = (i, i + 1) if out else (i,)
    return Segment(i, inputs, tl.starts[i] + into, frames, ";\n".join(chains))


# Every segment's frames leave with the same colour tags (none), so every segment gets the same
# SPS/PPS whatever its clips are tagged with (x264 copies the first frame's tags into the SPS,
# and the join by stream copy needs one SPS for the whole cut).
NORMALISE = "setparams=range=tv:color_primaries=unknown:color_trc=unknown:colorspace=unknown"
# xfade takes no chroma-subsampled format: only the blended frames go to 4:4:4 and back, with
# pinned scaler flags (ffmpeg's automatic conversion would use unpinned ones).
_TO_444 = f"scale=flags={SWS_FLAGS},format=yuv444p"
_TO_420 = f"scale=flags={SWS_FLAGS},format=yuv420p,setsar=1"


def _blend_out(following: CutClip, frames: int, out: int, output: OutputSettings) -> list[str]:
    """``[own]`` (``frames`` frames) to ``[cut]``: its last ``out`` frames blended with the first
    ``out`` frames of ``following`` (input 1) by ``following``'s transition."""
    body = frames - out
    chains: list[str] = []
    if body:
        chains.append("[own]split[body_all][tail_all]")
        chains.append(f"[body_all]trim=end_frame={body}[body]")
        chains.append(f"[tail_all]trim=start_frame={body},setpts=PTS-STARTPTS,{_TO_444}[tail]")
    else:
        chains.append(f"[own]{_TO_444}[tail]")
    chains.append(video_chain(1, following, out, output, label="[head_420]"))
    chains.append(f"[head_420]{_TO_444}[head]")
    blend = "[cut]" if not body else "[blend]"
    duration = decimal_text(Fraction(out, output.fps))
    chains.append(f"[tail][head]xfade=transition={following.transition}:duration={duration}:offset=0,{_TO_420}{blend}")
    if body:
        # concat hands out microsecond timestamps: back to 1/fps, like every other segment
        chains.append(f"[body][blend]concat=n=2:v=1:a=0,settb=1/{output.fps}[cut]")
    return chains


def segment_identity(
    segment: Segment, digests: Sequence[str], encoder: Sequence[str], ffmpeg_identity: str
) -> dict[str, object]:
    """Everything that decides a segment's bytes: ``digests`` are the sha256 of the clips it reads
    (in input order), ``encoder`` the codec and muxer arguments. Its sha256 keys the cache."""
    return {
        "format": SEGMENT_FORMAT,
        "ffmpeg": ffmpeg_identity,
        "encoder": list(encoder),
        "graph": segment.filter_complex,
        "inputs": list(digests),
        "frames": segment.frames,
    }
