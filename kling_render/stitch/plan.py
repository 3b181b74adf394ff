"""The re-encoded cut as steps (pure: no I/O, no subprocess).

:func:`plan_cut` turns the ordered clips and the output settings into a :class:`CutPlan`: the
timeline, and for each step its identity and key:

- one **segment** per clip (:mod:`~kling_render.stitch.segments`): the frames it covers, the clips
  it reads (the clip, and the next one's head when it ends in a transition) and its key in the
  segment store. A segment is keyed as soon as the clips it reads exist, so it can be encoded while
  later clips are still being generated;
- the **audio** pass: the whole cut's sound, mixed and encoded once; keyed once every clip exists;
- the **join**: the segments and the audio muxed into the cut, with its chapters; keyed once every
  segment and the audio are.

Segments are keyed as they always were (their identity, ASCII-escaped), the audio and the join as
``{"kind": ...}`` documents, all hashed by plan/keys.py.

A clip that does not exist yet is a :class:`~kling_render.stitch.graph.PendingClip` with its expected
duration. The timeline places a clip by the durations of the clips before it (whole frames, rounded
cumulatively), so a segment planned with a guessed duration may cover other frames than the final
plan's: its graph then differs, and so does its key. A wrong guess only makes a segment no cut uses,
never a wrong cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from kling_render.plan.keys import doc_key
from kling_render.stitch.graph import (
    AudioSettings,
    CutClip,
    OutputSettings,
    PendingClip,
    Timeline,
    build_graph,
    plan_timeline,
)
from kling_render.stitch.segments import Segment, segment_at, segment_identity
from kling_render.store.segments import segment_key

__all__ = [
    "AUDIO_FORMAT",
    "JOIN_FORMAT",
    "AudioStep",
    "CutPlan",
    "JoinStep",
    "SegmentStep",
    "plan_cut",
]

# Bumped whenever the way the audio pass or the join is made changes: old results stop matching.
AUDIO_FORMAT = 1
JOIN_FORMAT = 1


@dataclass(frozen=True)
class SegmentStep:
    index: int  # the clip it belongs to
    shot_id: str
    reads: tuple[int, ...]  # the clips it reads: (i,) or (i, i + 1)
    first_frame: int  # where it starts in the cut
    frames: int  # 0: the whole clip is its incoming transition (nothing to encode)
    segment: Segment | None  # its graph; None while a clip it reads does not exist
    key: str | None  # its key in the segment store; None with ``segment``

    @property
    def ready(self) -> bool:
        return self.key is not None


@dataclass(frozen=True)
class AudioStep:
    key: str | None  # None until every clip exists (and the music's digest is known)
    identity: dict[str, object] | None


@dataclass(frozen=True)
class JoinStep:
    key: str | None  # None until every part and the audio are keyed
    identity: dict[str, object] | None


@dataclass(frozen=True)
class CutPlan:
    clips: tuple[CutClip | PendingClip, ...]
    output: OutputSettings
    audio_settings: AudioSettings | None
    timeline: Timeline
    segments: tuple[SegmentStep, ...]  # one per clip, in cut order
    audio: AudioStep
    join: JoinStep

    @property
    def parts(self) -> tuple[SegmentStep, ...]:
        """The segments the cut is made of (those with frames), in order."""
        return tuple(s for s in self.segments if s.frames > 0)

    @property
    def complete(self) -> bool:
        """Every clip exists: the timeline is the final one and every step is keyed."""
        return self.join.key is not None

    def chapters(self) -> list[tuple[str, int, int]]:
        """(shot id, first frame, end frame) per clip."""
        return self.timeline.chapters([c.shot_id for c in self.clips])

    def reads(self, step: SegmentStep) -> list[CutClip]:
        """The clips a keyed segment reads, as ffmpeg inputs 0 (and 1)."""
        found = [self.clips[i] for i in step.reads]
        if not all(isinstance(c, CutClip) for c in found):
            raise ValueError(f"segment of {step.shot_id} is not ready: a clip it reads does not exist yet")
        return [c for c in found if isinstance(c, CutClip)]


def plan_cut(
    clips: Sequence[CutClip | PendingClip],
    output: OutputSettings,
    audio: AudioSettings | None,
    *,
    encoder: Sequence[str],
    audio_codec: Sequence[str],
    ffmpeg_identity: str,
    music_sha256: str | None = None,
) -> CutPlan:
    """The steps of the cut (see the module docstring). ``encoder`` and ``audio_codec`` are the
    segment and audio encoder arguments (part of the identities), ``ffmpeg_identity`` the build's,
    ``music_sha256`` the digest of ``audio.music`` (the audio step stays unkeyed without it).
    Every :class:`CutClip` must carry its ``sha256``."""
    tl = plan_timeline(clips, output.fps)
    steps: list[SegmentStep] = []
    for i, clip in enumerate(clips):
        out = tl.xfade[i + 1] if i + 1 < len(clips) else 0
        reads = (i, i + 1) if out else (i,)
        frames = tl.frames[i] - tl.xfade[i]
        segment = key = None
        if all(isinstance(clips[k], CutClip) for k in reads):
            segment = segment_at(i, clips, tl, output)
            digests = [_digest(clips[k]) for k in reads]
            key = segment_key(segment_identity(segment, digests, encoder, ffmpeg_identity))
        steps.append(SegmentStep(i, clip.shot_id, reads, tl.starts[i] + tl.xfade[i], frames, segment, key))
    existing = [c for c in clips if isinstance(c, CutClip)]
    audio_step = AudioStep(None, None)
    has_music = audio is not None and audio.music is not None
    if clips and len(existing) == len(clips) and (music_sha256 is not None or not has_music):
        identity = audio_identity(existing, output, audio, audio_codec, ffmpeg_identity, music_sha256)
        audio_step = AudioStep(doc_key(identity), identity)
    parts = [s for s in steps if s.frames > 0]
    join_step = JoinStep(None, None)
    if audio_step.key is not None and all(s.key is not None for s in parts):
        identity = join_identity(
            [str(s.key) for s in parts],
            [s.frames for s in parts],
            audio_step.key,
            tl.chapters([c.shot_id for c in clips]),
            output.fps,
            ffmpeg_identity,
        )
        join_step = JoinStep(doc_key(identity), identity)
    return CutPlan(tuple(clips), output, audio, tl, tuple(steps), audio_step, join_step)


def _digest(clip: CutClip | PendingClip) -> str:
    if not isinstance(clip, CutClip) or not clip.sha256:
        raise ValueError(f"{clip.shot_id}: a clip to plan needs its sha256")
    return clip.sha256


def audio_identity(
    clips: Sequence[CutClip],
    output: OutputSettings,
    audio: AudioSettings | None,
    codec: Sequence[str],
    ffmpeg_identity: str,
    music_sha256: str | None,
) -> dict[str, object]:
    """Everything that decides the audio pass's bytes: its filter graph (clip sound, cross-fades,
    music level and ducking, all placed on the timeline), whether it is loudness-normalised (the
    second pass's settings are measured from these same inputs), the codec and the inputs' digests."""
    graph = build_graph(clips, output, audio, music_input=len(clips) if music_sha256 else None, include_video=False)
    return {
        "kind": "audio",
        "format": AUDIO_FORMAT,
        "ffmpeg": ffmpeg_identity,
        "codec": list(codec),
        "graph": graph.filter_complex,
        "normalize": bool(audio is not None and audio.normalize),
        "inputs": [_digest(c) for c in clips],
        "music": music_sha256,
    }


def join_identity(
    parts: Sequence[str],
    frames: Sequence[int],
    audio_key: str,
    chapters: Sequence[tuple[str, int, int]],
    fps: int,
    ffmpeg_identity: str,
) -> dict[str, object]:
    """Everything that decides the joined cut's bytes: its parts (each by key, placed by its frame
    count), the audio, the chapters (titled by shot id)."""
    return {
        "kind": "join",
        "format": JOIN_FORMAT,
        "ffmpeg": ffmpeg_identity,
        "fps": fps,
        "frames": list(frames),
        "chapters": [[title, start, end] for title, start, end in chapters],
        "inputs": [*parts, audio_key],
    }


def part_durations(plan: CutPlan) -> list[Fraction]:
    """Each part's exact length, by which the join places the next one."""
    return [Fraction(s.frames, plan.output.fps) for s in plan.parts]
