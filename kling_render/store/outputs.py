"""What the local cache has made, as the planner asks it (``plan.inputs.Outputs``): a still by its
provider and key, a clip by its provider and key (checked against its recorded digest, its frames
counted), and a frame taken from a clip for continuity by its key value (whatever the provider)."""

from __future__ import annotations

from kling_render.errors import FFmpegError
from kling_render.media.frames import clip_frames
from kling_render.media.image_check import image_suffix
from kling_render.plan.inputs import ClipFacts, StillFacts
from kling_render.plan.keys import doc_key
from kling_render.store.cache import ClipCache, frames_of, stills_of

__all__ = ["FRAMES", "CachedOutputs", "frame_store_key"]

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
        return ClipFacts(entry.sha256, frames, entry.path)
