"""A shard's share of the stitch (issue 20 item 7): after ``render --shard K/N``, the segments whose
clips this machine has are encoded (or found) and put on the remote, so the machine that makes the
cut encodes only what no shard could.

A segment ending in a transition reads two clips: when this shard has one of them and the remote
already holds the other (another shard finished first), that one is pulled and the segment made
here; otherwise it is left to the stitch. Shots without a clip are planned on their expected duration (the
shot's): if a clip turns out to last otherwise, the segments planned on the guess are simply not
the ones the cut uses (stitch/plan.py), and the stitch encodes the right ones.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kling_render.report.progress import Event, EventSink

if TYPE_CHECKING:
    from kling_render.project.project import Project
    from kling_render.stitch.graph import CutClip, PendingClip
    from kling_render.store.cache import ClipCache
    from kling_render.store.remote.connect import Remote

__all__ = ["encode_shard_segments"]


def encode_shard_segments(project: Project, provider: str, cache: ClipCache, remote: Remote, sink: EventSink) -> int:
    """Encode or find every segment the clips at hand allow and offer each to the remote; returns
    how many this machine encoded. Best effort: a failure is a warning, the stitch makes up for it."""
    from kling_render.errors import KlingRenderError

    try:
        return _encode(project, provider, cache, remote, sink)
    except (KlingRenderError, OSError) as exc:
        sink.emit(Event("warning", message=f"segments not encoded on this shard ({exc}); the stitch encodes them"))
        return 0


def _encode(project: Project, provider: str, cache: ClipCache, remote: Remote, sink: EventSink) -> int:
    from kling_render import stitch as stitching
    from kling_render.app.clips import clip_info
    from kling_render.fsutil import sha256_file
    from kling_render.plan.plan import shot_key
    from kling_render.stitch.cut import can_stream_copy
    from kling_render.store.remote.segments import SegmentRemote
    from kling_render.store.remote.sync import pull_missing

    shots = list(project.shots)
    keys = [shot_key(provider, shot) for shot in shots]
    have = [cache.use(provider, key) is not None for key in keys]
    # A transition's segment reads two clips: when this shard has one, the other is pulled if
    # another shard already put it up, so the segment is made here rather than by the stitch.
    wanted: dict[str, str] = {}
    for i in range(len(shots) - 1):
        if shots[i + 1].transition.duration > 0 and have[i] != have[i + 1]:
            j = i + 1 if have[i] else i
            wanted[shots[j].id] = keys[j]
    if wanted:
        pull_missing(remote, provider, wanted, cache, sink)
    clips: list[CutClip | PendingClip] = []
    for shot, key in zip(shots, keys, strict=True):
        entry = cache.use(provider, key)
        trims = (shot.trim.start, shot.trim.end, shot.transition.type, shot.transition.duration)
        if entry is None:
            clips.append(stitching.PendingClip(shot.id, float(shot.duration), *trims))
        else:
            info = clip_info(cache, entry, shot.id)
            clips.append(stitching.CutClip(shot.id, entry.path, info, *trims, sha256=entry.sha256))
    out = project.output
    audio = None
    music_digest = None
    if project.audio is not None:
        a = project.audio
        audio = stitching.AudioSettings(music=a.music, music_volume=a.music_volume, duck=a.duck, normalize=a.normalize)
        music_digest = sha256_file(a.music) if a.music is not None else None
    output = stitching.OutputSettings(width=out.width, height=out.height, fps=out.fps, fit=out.fit)
    cut = stitching.steps.plan(clips, output, audio, music_sha256=music_digest)
    existing = [c for c in clips if isinstance(c, stitching.CutClip)]
    if len(existing) == len(clips) and can_stream_copy(existing, output, audio):
        return 0  # a stream-copy cut has no segments
    store = stitching.SegmentStore(cache)
    source = SegmentRemote(remote.segments)
    encoded = 0
    with tempfile.TemporaryDirectory(prefix=f"{stitching.WORK_PREFIX}{os.getpid()}-") as work_dir:
        for step in cut.parts:
            if step.ready:
                done = stitching.steps.encode_segment(cut, step, store, Path(work_dir), source=source)
                encoded += done.how == "encoded"
                if done.how == "stored":
                    source.push(str(step.key), done.path)  # made here before the remote was reachable
        if cut.audio.key is not None:
            done = stitching.steps.mix_audio(cut, store, Path(work_dir), source=source)
            if done.how == "stored":
                source.push(cut.audio.key, done.path)
    ready = sum(1 for s in cut.parts if s.ready)
    for problem in source.problems:
        sink.emit(Event("warning", message=problem))
    message = f"{ready} of {len(cut.parts)} segments ready on the remote, {encoded} encoded here"
    sink.emit(Event("segments", message=message, extra={"ready": ready, "encoded": encoded}))
    return encoded
