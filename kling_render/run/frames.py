"""The frame step: a frame of one clip, extracted as a PNG for the shot that continues it.

A continuity input (``image: {from: intro, frame: last}``) stands in keys for the clip's digest
and the frame's index (``frame:<clip sha256>@<index>``, plan/inputs.py), so the downstream shot's
key is known as soon as the upstream clip is. The PNG itself is made here, once, before the shot
is submitted (its upload needs the file): extracted exactly (media/frames.py), kept in the cache's
frames area under the sha256 of that key value, and checked against its recorded digest like any
cached output. The extraction runs in a CPU slot of the scheduler, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from kling_render.errors import StitchError
from kling_render.jobs import Job, MediaRef
from kling_render.media.frames import extract_frame
from kling_render.store.cache import CachedClip, ClipCache, ClipMeta, frames_of
from kling_render.store.outputs import FRAMES, frame_store_key

__all__ = ["FrameMaker"]

_FRAME = re.compile(r"^frame:([0-9a-f]{64})@([0-9]{1,9})\Z")


class FrameMaker:
    """Makes the PNGs of a job's continuity inputs before the job is sent."""

    def __init__(self, cache: ClipCache, cpu: asyncio.Semaphore) -> None:
        self.frames = frames_of(cache)
        self.cpu = cpu
        self._made: dict[str, asyncio.Future[MediaRef]] = {}

    def needs(self, job: Job) -> bool:
        """Whether ``job`` has a continuity input whose PNG is not made yet."""
        return any(_pending(v) for v in _refs(job.params))

    async def prepare(self, job: Job) -> Job:
        """``job`` with every continuity input as a MediaRef to its PNG (extracted if need be)."""
        if not self.needs(job):
            return job

        async def one(value: Any) -> Any:
            if isinstance(value, list):
                return [await one(v) for v in value]
            if not _pending(value):
                return value
            return await self.frame(value.key, value.source)

        params = {name: await one(value) for name, value in job.params.items()}
        return replace(job, params=params)

    async def frame(self, key_value: str, clip: Path | None) -> MediaRef:
        """The PNG of ``key_value`` (a frame of ``clip``), extracted once however many shots take it."""
        made = self._made.get(key_value)
        if made is None:
            made = self._made[key_value] = asyncio.ensure_future(self._extract(key_value, clip))
        return await asyncio.shield(made)

    async def _extract(self, key_value: str, clip: Path | None) -> MediaRef:
        match = _FRAME.match(key_value)
        if match is None:
            raise StitchError(f"not a frame reference: {key_value!r}")
        sha, index = match.group(1), int(match.group(2))
        key = frame_store_key(key_value)
        entry = self.frames.use(FRAMES, key)
        if entry is None:
            if clip is None or not clip.is_file():
                raise StitchError(f"the clip {sha[:12]} a frame is taken from is not in the cache")
            async with self.cpu:
                entry = await asyncio.to_thread(self._make, clip, index, key)
        assert entry is not None
        return MediaRef(path=entry.path, sha256=entry.sha256, key=key_value, filename=f"{key[:16]}.png")

    def _make(self, clip: Path, index: int, key: str) -> CachedClip:
        self.frames.prepare()
        with self.frames.temp_file(".png") as tmp:
            extract_frame(clip, index, tmp)
            return self.frames.put(FRAMES, key, tmp, ClipMeta(0.0, "frame", None, {"format": "png"}))


def _refs(params: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for value in params.values():
        out.extend(value if isinstance(value, list) else [value])
    return out


def _pending(value: Any) -> bool:
    """A continuity input whose PNG is not made yet: it has a frame key and no file."""
    return isinstance(value, MediaRef) and value.path is None and (value.key or "").startswith("frame:")
