"""What the local cache has made, as the planner asks it (``plan.inputs.Outputs``): a still by its
provider and key, a clip by its provider and key (checked against its recorded digest, its frames
counted), and a frame taken from a clip for continuity by its key value (whatever the provider).
With a remote, `plan` also asks the team's stills (:class:`TeamOutputs`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kling_render.errors import FFmpegError
from kling_render.media.frames import clip_frames
from kling_render.media.image_check import image_suffix
from kling_render.plan.inputs import ClipFacts, StillFacts
from kling_render.plan.keys import doc_key
from kling_render.store.cache import ClipCache, frames_of, stills_of

if TYPE_CHECKING:  # not imported at run time: a plan without a remote loads none of it
    from kling_render.store.remote.connect import Remote

__all__ = ["FRAMES", "CachedOutputs", "TeamOutputs", "frame_store_key"]

FRAMES = "png"  # the frames area's one namespace: a frame depends on the clip's bytes, not its provider


def frame_store_key(key_value: str) -> str:
    """Where a frame is kept in the frames area: the sha256 of its key value."""
    return doc_key({"frame": key_value})


class CachedOutputs:
    """The outputs ``cache`` holds, each provider's apart (a step's key is its provider's): stills and
    frames come from their areas of the cache (store/cache.py ``stills_of``, ``frames_of``)."""

    def __init__(self, cache: ClipCache) -> None:
        self.cache = cache
        self.stills = stills_of(cache)
        self.frames = frames_of(cache)

    def still(self, provider: str, key: str) -> StillFacts | None:
        entry = self.stills.use(provider, key)
        if entry is None:
            return None
        return StillFacts(entry.sha256, entry.path, f"{key[:16]}{image_suffix(entry.media)}")

    def frame(self, key_value: str) -> StillFacts | None:
        key = frame_store_key(key_value)
        entry = self.frames.use(FRAMES, key)
        return None if entry is None else StillFacts(entry.sha256, entry.path, f"{key[:16]}.png")

    def clip(self, provider: str, key: str) -> ClipFacts | None:
        entry = self.cache.use(provider, key)
        if entry is None:
            return None
        try:
            frames = clip_frames(entry.path)
        except FFmpegError:
            return None  # unreadable: its users wait as if it were not made
        return ClipFacts(entry.sha256, frames, entry.path, entry.duration)


class TeamOutputs(CachedOutputs):
    """:class:`CachedOutputs` and, for `plan` with a remote, the stills the remote holds (``on_remote``,
    their keys by provider): a still's recorded digest keys the steps that take it, as a local one
    would, so a plan on a machine that has not pulled the team's still prices its users as the team
    has them. (A clip's frames need the clip itself: a continuity shot keys on this machine's clips
    only.)"""

    def __init__(self, cache: ClipCache, team: Remote, on_remote: Mapping[str, set[str]]) -> None:
        super().__init__(cache)
        self.team = team
        self.on_remote = on_remote

    def still(self, provider: str, key: str) -> StillFacts | None:
        here = super().still(provider, key)
        if here is not None or key not in self.on_remote.get(provider, set()):
            return here
        record = asyncio.run(self.team.stills.get(provider, key))  # one read; a damaged record: exit 1
        return None if record is None else StillFacts(record.sha256)
