"""Encoded video segments kept in the clip cache's ``segments/`` area, so a re-stitch after a trim
or transition edit re-encodes only the segments whose inputs changed.

An entry is ``<cache>/segments/<key[:2]>/<key>.mp4`` with its sidecar, exactly like a clip (the
clip cache's code does the work): written atomically, its sha256 recorded, checked against it
before every use (with the same stat memo), and quarantined to ``quarantine/segments/`` when it
does not match, after which the segment is simply encoded again. The key is the sha256 of the
segment's identity (:func:`~kling_render.stitch.segments.segment_identity`: format version,
ffmpeg build, encoder arguments, the segment's filter graph, the digests of the clips it reads).

Clean-up (:meth:`SegmentStore.sweep`, after every stitch that encoded something). A segment is
*never* removed while the current cut uses it, or within :data:`IN_USE_SECONDS` of its last use
(another stitch, of this project or another sharing the cache, may be joining it). Beyond that:

- a segment unused for :data:`MAX_IDLE_DAYS` is removed;
- and while the area is larger than :data:`AREA_FACTOR` times the current cut's segments (at
  least :data:`MIN_AREA_BYTES`), the least recently used ones are removed.

So a project keeps the segments an undo of its latest edits would need, and the area does not
grow with the number of edits. "Used" is the sidecar's mtime, touched at each use.

The audio pass's result is kept here too, under its own key (stitch/plan.py): a re-stitch whose
sound did not change (a transition type, the output size) does not mix it again.

A :class:`SegmentSource` (the shared remote's segments, store/remote/segments.py) is asked for a
segment before it is encoded, and given every segment this machine encodes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import filelock

from kling_render.plan.keys import doc_key
from kling_render.store.cache import ClipCache, ClipMeta, Quarantined

__all__ = ["AREA", "SegmentSource", "SegmentStore", "Sweep", "segment_key"]

AREA = "segments"
IN_USE_SECONDS = 3600.0
MAX_IDLE_DAYS = 14
AREA_FACTOR = 2
MIN_AREA_BYTES = 2 * 1024**3


def segment_key(identity: Mapping[str, object]) -> str:
    """The cache key of a segment: the sha256 of its identity as canonical JSON."""
    return doc_key(identity, ascii_only=True)


class SegmentSource(Protocol):
    """Where segments made elsewhere come from, and where this machine's go (the shared remote)."""

    def fetch(self, key: str, store: SegmentStore, frames: int | None) -> Path | None:
        """Bring the segment ``key`` into ``store``, checked (its sha256, its size, its structure and,
        given ``frames``, that it holds that many video frames); its path there, or None when the
        source has none or only a damaged one."""
        ...

    def push(self, key: str, path: Path) -> None:
        """Offer the segment ``key`` (a file in the store) to the others; never raises for a failure
        to reach them (the next stitch simply encodes it)."""
        ...


@dataclass(frozen=True)
class Sweep:
    removed: int
    freed_bytes: int
    kept_bytes: int


class SegmentStore:
    def __init__(self, cache: ClipCache) -> None:
        self.cache = cache

    @property
    def quarantined(self) -> list[Quarantined]:
        return [q for q in self.cache.quarantined if q.provider == AREA]

    def use(self, key: str) -> Path | None:
        """The segment's file when it is cached and still has its recorded sha256; else None
        (a damaged one is quarantined). Marks it used (see the sweep)."""
        # Marked before it is checked: a sweep that read the old mark then leaves it alone (it
        # re-reads the mark under the put lock), one that already removed it makes this a miss.
        with contextlib.suppress(OSError):  # a read-only shared cache: still usable, just not marked
            os.utime(self.cache.meta_path(AREA, key))
        entry = self.cache.use(AREA, key)
        return None if entry is None else entry.path

    @contextlib.contextmanager
    def temp_file(self, suffix: str = ".mp4") -> Iterator[Path]:
        """Where ffmpeg writes a segment before :meth:`put` (removed on exit unless put)."""
        with self.cache.temp_file(suffix) as path:
            yield path

    def put(
        self, key: str, src: Path, seconds: float, *, sha256: str | None = None, replace: bool = False
    ) -> Path:
        """Add the encoded ``src`` (a :meth:`temp_file`) of ``seconds`` (0: not known) as ``key``; its
        path in the store. An entry already there is kept (and ``src`` dropped) unless ``replace``."""
        meta = ClipMeta(duration=seconds, model="segment")
        entry = self.cache.put(AREA, key, src, meta, sha256=sha256, replace=replace)
        return entry.path

    def entry(self, key: str) -> tuple[str, int] | None:
        """(sha256, size) the store records for ``key`` (no check of the file: :meth:`use` does)."""
        found = self.cache.get(AREA, key)
        return None if found is None else (found.sha256, found.size)

    def sweep(self, keep: Iterable[str], *, now: float | None = None) -> Sweep:
        """Remove unused segments by the rules in the module docstring; never one in ``keep``."""
        now = time.time() if now is None else now
        keep = set(keep)
        area = self.cache.root / AREA
        entries: list[tuple[float, int, str]] = []  # (last use, size, key)
        kept_bytes = 0
        with contextlib.suppress(OSError):
            for shard in os.scandir(area):
                if not shard.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(shard.path) as files:
                    for f in files:
                        if not f.name.endswith(".mp4"):
                            continue
                        key = f.name[:-4]
                        try:
                            size = f.stat(follow_symlinks=False).st_size
                            used = os.stat(self.cache.meta_path(AREA, key)).st_mtime
                        except (OSError, ValueError):
                            continue  # a half-added entry: the cache's own rules deal with it
                        if key in keep:
                            kept_bytes += size
                        else:
                            entries.append((used, size, key))
        total = kept_bytes + sum(size for _, size, _ in entries)
        bound = max(MIN_AREA_BYTES, AREA_FACTOR * kept_bytes)
        removed = freed = 0
        for used, size, key in sorted(entries):  # least recently used first
            idle = now - used
            if idle < IN_USE_SECONDS:
                continue
            if idle < MAX_IDLE_DAYS * 86400 and total <= bound:
                continue
            if self._remove(key, used):
                removed += 1
                freed += size
                total -= size
        return Sweep(removed, freed, kept_bytes)

    def _remove(self, key: str, used: float) -> bool:
        """Delete one segment (clip, sidecar, memo) unless it was used since ``used``."""
        try:
            with filelock.FileLock(str(self.cache.root / ".put.lock"), timeout=60):
                meta = self.cache.meta_path(AREA, key)
                if os.stat(meta).st_mtime != used:
                    return False  # used meanwhile
                self.cache.clip_path(AREA, key).unlink(missing_ok=True)  # the file first: no entry without its sidecar
                meta.unlink(missing_ok=True)
                self.cache.memo_path(AREA, key).unlink(missing_ok=True)
                return True
        except (OSError, ValueError, filelock.Timeout):
            return False
