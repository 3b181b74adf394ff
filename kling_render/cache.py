"""The content-addressed clip cache: ``<root>/<provider>/<key[:2]>/<key>.mp4`` plus a JSON sidecar.

An entry is complete when both files exist and the clip has the size the sidecar records.
``put`` writes the sidecar first, then renames the verified clip into place, so a crash
between the two leaves a sidecar without a clip: not an entry, and overwritten by the next
``put``. Downloads go to ``<root>/tmp/`` (same filesystem, so the final rename is atomic);
temp files of dead processes are removed by ``clean_temp``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import filelock

from kling_render import env
from kling_render.errors import StateError
from kling_render.fsutil import atomic_write_json, fsync_dir, pid_alive, sha256_file
from kling_render.state import STATE_DIR, now_iso

_KEY_RE = re.compile(r"^[0-9a-f]{16,128}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
STALE_TEMP_SECONDS = 24 * 3600  # a temp file this old is stale even if its pid was reused


@dataclass(frozen=True)
class ClipMeta:
    """What the sidecar records besides the key: where the clip came from."""

    duration: float
    model: str
    task_id: str | None = None
    media: dict[str, Any] | None = None  # the clip's stream headers (MediaInfo.to_json), if known


@dataclass(frozen=True)
class CachedClip:
    provider: str
    key: str
    path: Path
    sha256: str
    size: int
    duration: float
    model: str
    task_id: str | None
    created: str
    media: dict[str, Any] | None = None  # stream headers recorded when the clip was verified


def cache_root_for(project_path: Path) -> Path:
    """``KLING_RENDER_CACHE`` if set, else ``.kling-render/cache/`` beside the project."""
    override = env.cache_dir_override()
    if override is not None:
        return override
    return project_path.resolve().parent / STATE_DIR / "cache"


class ClipCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"

    @classmethod
    def for_project(cls, project_path: Path) -> ClipCache:
        return cls(cache_root_for(project_path))

    # -- paths -------------------------------------------------------------------------------

    def clip_path(self, provider: str, key: str) -> Path:
        if not _NAME_RE.match(provider):
            raise ValueError(f"bad provider name {provider!r}")
        if not _KEY_RE.match(key):
            raise ValueError(f"bad shot key {key!r}")
        return self.root / provider / key[:2] / f"{key}.mp4"

    def meta_path(self, provider: str, key: str) -> Path:
        return self.clip_path(provider, key).with_suffix(".json")

    # -- reading -----------------------------------------------------------------------------

    def get(self, provider: str, key: str) -> CachedClip | None:
        """The complete entry for ``key``, or None (missing, half-added or damaged entries)."""
        clip = self.clip_path(provider, key)
        try:
            raw = json.loads(self.meta_path(provider, key).read_text(encoding="utf-8"))
            size = clip.stat().st_size
        except (OSError, ValueError):
            return None
        try:
            entry = CachedClip(
                provider=provider,
                key=key,
                path=clip,
                sha256=str(raw["sha256"]),
                size=int(raw["size"]),
                duration=float(raw["duration"]),
                model=str(raw["model"]),
                task_id=raw.get("task_id"),
                created=str(raw["created"]),
                media=raw.get("media") if isinstance(raw.get("media"), dict) else None,
            )
        except (KeyError, TypeError, ValueError):
            return None
        return entry if entry.size == size and entry.key == raw.get("key") else None

    def contains(self, provider: str, key: str) -> bool:
        return self.get(provider, key) is not None

    def listed_keys(self, provider: str) -> set[str]:
        """Keys that have a clip file (complete or not): one directory walk, not a stat per key.

        A superset of the complete entries, so ``key in listed and contains(key)`` is ``contains``.
        """
        if not _NAME_RE.match(provider):
            raise ValueError(f"bad provider name {provider!r}")
        keys: set[str] = set()
        try:
            shards = [e.path for e in os.scandir(self.root / provider) if e.is_dir()]
        except OSError:
            return keys
        for shard in shards:
            with contextlib.suppress(OSError), os.scandir(shard) as entries:
                keys.update(e.name[:-4] for e in entries if e.name.endswith(".mp4"))
        return keys

    def verify(self, provider: str, key: str) -> bool:
        """Re-hash the entry's clip against its sidecar (slow: reads the whole clip)."""
        entry = self.get(provider, key)
        return entry is not None and sha256_file(entry.path) == entry.sha256

    def prepare(self) -> None:
        """Make sure clips can be added (root and ``tmp/`` exist and are writable directories).

        Called before a run submits anything: a cache that cannot take the clips would have the
        run pay for tasks whose outputs it cannot keep.
        """
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            probe = self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(6)}.probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StateError(
                f"the clip cache {self.root} is not a writable directory ({exc.strerror or exc}); "
                "fix its permissions or point KLING_RENDER_CACHE elsewhere"
            ) from None

    # -- adding ------------------------------------------------------------------------------

    def put(
        self, provider: str, key: str, src: Path, meta: ClipMeta, *, sha256: str | None = None
    ) -> CachedClip:
        """Move the verified file ``src`` (inside ``tmp/``) into the cache as ``key``.

        Idempotent: when ``key`` is already cached the existing entry is kept and ``src`` is
        removed. ``sha256`` saves re-hashing when the caller already has it.
        """
        clip = self.clip_path(provider, key)
        try:
            return self._put(provider, key, clip, src, meta, sha256)
        except OSError as exc:  # disk full, permissions: the run stops with one clear line
            with contextlib.suppress(OSError):
                src.unlink()
            raise StateError(f"cannot add {clip.name} to the clip cache {self.root}: {exc.strerror or exc}") from None

    def _put(
        self, provider: str, key: str, clip: Path, src: Path, meta: ClipMeta, sha256: str | None
    ) -> CachedClip:
        clip.parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time across processes sharing this cache (KLING_RENDER_CACHE).
        with filelock.FileLock(str(self.root / ".put.lock"), timeout=60):
            existing = self.get(provider, key)
            if existing is not None:
                src.unlink(missing_ok=True)
                return existing
            digest = sha256 or sha256_file(src)
            size = src.stat().st_size
            sidecar = {
                "key": key,
                "provider": provider,
                "sha256": digest,
                "size": size,
                "duration": round(meta.duration, 4),
                "model": meta.model,
                "task_id": meta.task_id,
                "created": now_iso(),
            }
            if meta.media is not None:
                sidecar["media"] = meta.media
            atomic_write_json(self.meta_path(provider, key), sidecar)
            with src.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(src, clip)
            fsync_dir(clip.parent)
        entry = self.get(provider, key)
        if entry is None:  # pragma: no cover - only if someone deletes it under us
            raise StateError(f"cache entry {clip} vanished right after it was added")
        return entry

    # -- temp files --------------------------------------------------------------------------

    @contextlib.contextmanager
    def temp_file(self, suffix: str = ".mp4") -> Iterator[Path]:
        """A fresh path in ``tmp/`` (named after this pid); removed on exit unless moved away."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        path = self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(6)}{suffix}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def clean_temp(self) -> int:
        """Remove temp files left by dead processes (or older than a day); return how many."""
        removed = 0
        try:
            entries = list(self.tmp_dir.iterdir())
        except OSError:
            return 0
        for path in entries:
            pid_text = path.name.split("-", 1)[0]
            try:
                stale = not pid_alive(int(pid_text)) or _age(path) > STALE_TEMP_SECONDS
            except (ValueError, OSError):
                stale = True
            if stale:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed


def _age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def meta_from(entry: CachedClip) -> dict[str, object]:
    """The entry as plain JSON values (for reports)."""
    doc = asdict(entry)
    doc["path"] = str(entry.path)
    return doc
