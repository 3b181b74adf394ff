"""The content-addressed clip cache: ``<root>/<provider>/<key[:2]>/<key>.mp4`` plus a JSON sidecar.

An entry is complete when both files exist and the clip has the size the sidecar records.
``put`` writes the sidecar first, then renames the verified clip into place, so a crash
between the two leaves a sidecar without a clip: not an entry, and overwritten by the next
``put``. Downloads go to ``<root>/tmp/`` (same filesystem, so the final rename is atomic);
temp files of dead processes are removed by ``clean_temp`` (only names the cache made).

Two ways to read an entry:

- ``get``: presence and size only (one stat and the sidecar). For ``plan``, which spends nothing.
- ``use``: also checks the clip against its recorded sha256 before it is stitched, reported or
  counted as done. A clip that does not match is a miss and is *quarantined*: moved with its
  sidecar to ``<root>/quarantine/<provider>/`` (never deleted, never reaching a cut), a line
  appended to ``quarantine/log.jsonl``, and listed in ``quarantined`` for the caller's events.
  The sidecar's stream headers (``media``) are informational only: anyone can edit a sidecar, so
  what the stitch relies on comes from the probe memo (:mod:`kling_render.store.probes`), keyed
  by the clip's sha256 and written only by this machine's own checks.

Re-hashing every clip on every command would cost a no-op render of 20 1080p clips about as
much as the rest of it (see benchmarks/bench_cache_verify.py), so ``use`` keeps a memo beside
the sidecar, ``<key>.verified``: the clip's (device, inode, size, mtime_ns, ctime_ns) when it
last hashed to its sidecar's digest. While all five are unchanged the digest is trusted; any
write, truncation, replacement, rename-over, copy or restore changes at least one (ctime cannot
be set from user space), and the clip is hashed again. What the memo cannot see is damage
below the filesystem (bit rot on the medium, which keeps every stat field): ``verify`` and
``kling-render`` after a ``rm <key>.verified`` re-hash unconditionally. A lost or unreadable
memo only costs a re-hash; it is never a reason to trust a clip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock

from kling_render import env
from kling_render.errors import StateError
from kling_render.fsutil import atomic_path, atomic_write_json, fsync_dir, pid_alive, sha256_file
from kling_render.jobs import valid_task_id
from kling_render.masking import mask_json
from kling_render.records.state import STATE_DIR, now_iso

if TYPE_CHECKING:
    from kling_render.media.check import CheckedClip
    from kling_render.store.probes import ProbeMemo

_KEY_RE = re.compile(r"^[0-9a-f]{16,128}\Z")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
# The names temp_file and prepare make: ``<pid>-<12 hex><suffix>``. clean_temp removes nothing else.
_TEMP_RE = re.compile(r"^([0-9]{1,10})-[0-9a-f]{12}(\.[A-Za-z0-9]{1,16})?\Z")
MEMO_SUFFIX = ".verified"
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


@dataclass(frozen=True)
class Quarantined:
    """A clip that did not match its sidecar, moved aside (``moved_to``) instead of being used."""

    provider: str
    key: str
    moved_to: Path
    reason: str

    @property
    def message(self) -> str:
        return f"cached clip {self.key[:12]} {self.reason}: quarantined to {self.moved_to}; it is rendered again"


def cache_root_for(project_path: Path) -> Path:
    """``KLING_RENDER_CACHE`` if set, else ``.kling-render/cache/`` beside the project."""
    override = env.cache_dir_override()
    if override is not None:
        return override
    return project_path.resolve().parent / STATE_DIR / "cache"


class ClipCache:
    """A content-addressed store of outputs by provider and key. ``suffix`` names its files: clips
    are ``.mp4``; the stills area (:func:`stills_of`) keeps images as ``.img`` (their format is
    in the sidecar's ``media``), the frames area (:func:`frames_of`) PNGs."""

    def __init__(self, root: Path, *, suffix: str = ".mp4") -> None:
        self.root = root
        self.suffix = suffix
        self.tmp_dir = root / "tmp"
        self.quarantine_dir = root / "quarantine"
        self.quarantined: list[Quarantined] = []  # by this instance, in order (for events)
        self._memo: ProbeMemo | None = None

    @classmethod
    def for_project(cls, project_path: Path) -> ClipCache:
        return cls(cache_root_for(project_path))

    # -- paths -------------------------------------------------------------------------------

    def clip_path(self, provider: str, key: str) -> Path:
        if not _NAME_RE.match(provider):
            raise ValueError(f"bad provider name {provider!r}")
        if not _KEY_RE.match(key):
            raise ValueError(f"bad shot key {key!r}")
        return self.root / provider / key[:2] / f"{key}{self.suffix}"

    def meta_path(self, provider: str, key: str) -> Path:
        return self.clip_path(provider, key).with_suffix(".json")

    def memo_path(self, provider: str, key: str) -> Path:
        return self.clip_path(provider, key).with_suffix(MEMO_SUFFIX)

    def owner_of(self, path: Path) -> tuple[str, str] | None:
        """(provider, key) when ``path`` is an entry's clip file in this cache; else None."""
        try:
            rel = path.resolve().relative_to(self.root.resolve())
        except (ValueError, OSError):
            return None
        parts = rel.parts
        if len(parts) != 3 or not parts[2].endswith(".mp4"):
            return None
        provider, key = parts[0], parts[2][:-4]
        if not _NAME_RE.match(provider) or not _KEY_RE.match(key) or parts[1] != key[:2]:
            return None
        return provider, key

    @property
    def probes(self) -> ProbeMemo:
        """What this machine checked about clips, by sha256 (store/probes.py)."""
        if self._memo is None:
            from kling_render.store.probes import ProbeMemo

            self._memo = ProbeMemo(self.root)
        return self._memo

    # -- reading -----------------------------------------------------------------------------

    def get(self, provider: str, key: str) -> CachedClip | None:
        """The complete entry for ``key`` by presence and size, or None (missing, half-added or
        damaged entries). Its content is not checked, so its stream headers are left out: what
        stitches, reports or counts a clip as done calls :meth:`use`."""
        entry = self._sidecar(provider, key)
        if entry is None:
            return None
        try:
            size = entry.path.stat().st_size
        except OSError:
            return None
        return replace(entry, media=None) if size == entry.size else None

    def use(self, provider: str, key: str) -> CachedClip | None:
        """The entry for ``key`` when its clip still has the sha256 its sidecar records; else None.

        A clip that does not match (or has no readable sidecar) is quarantined (see the module
        docstring) and recorded in ``quarantined``. The digest is trusted without re-hashing while
        the clip's memo matches. A sidecar without a clip is a half-added entry, not damage.
        """
        entry = self._sidecar(provider, key)
        clip = self.clip_path(provider, key)
        try:
            stamp = _stamp(clip)
        except OSError:
            return None
        if entry is None:
            self._quarantine(provider, key, stamp, "has no readable sidecar")
            return None
        if stamp[2] != entry.size:
            self._quarantine(provider, key, stamp, f"has {stamp[2]} bytes, its sidecar records {entry.size}")
            return None
        if self._memo_ok(provider, key, entry.sha256, stamp):
            return entry
        try:
            digest = sha256_file(clip)
        except OSError:
            return None  # unreadable or gone under us: a miss
        if digest != entry.sha256:
            self._quarantine(provider, key, stamp, f"does not match its recorded sha256 (it hashes to {digest[:12]})")
            return None
        self._write_memo(provider, key, entry.sha256, stamp)
        return entry

    def _sidecar(self, provider: str, key: str) -> CachedClip | None:
        """The entry as its sidecar records it (None when missing or unreadable); the clip unread."""
        clip = self.clip_path(provider, key)
        try:
            raw = json.loads(self.meta_path(provider, key).read_text(encoding="utf-8"))
            entry = CachedClip(
                provider=provider,
                key=key,
                path=clip,
                sha256=str(raw["sha256"]),
                size=int(raw["size"]),
                duration=float(raw["duration"]),
                model=str(raw["model"]),
                task_id=raw.get("task_id") if valid_task_id(raw.get("task_id")) else None,
                created=str(raw["created"]),
                media=raw.get("media") if isinstance(raw.get("media"), dict) else None,
            )
        except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
            return None
        return entry if raw.get("key") == key else None

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
                n = len(self.suffix)
                keys.update(e.name[:-n] for e in entries if e.name.endswith(self.suffix))
        return keys

    def verify(self, provider: str, key: str) -> bool:
        """Re-hash the entry's clip against its sidecar, memo or not (slow: reads the whole clip)."""
        entry = self.get(provider, key)
        return entry is not None and sha256_file(entry.path) == entry.sha256

    # -- the verification memo and quarantine ------------------------------------------------

    def _memo_ok(self, provider: str, key: str, sha256: str, stamp: list[int]) -> bool:
        try:
            memo = json.loads(self.memo_path(provider, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(memo, dict) and memo.get("sha256") == sha256 and memo.get("stat") == stamp

    def _write_memo(self, provider: str, key: str, sha256: str, stamp: list[int]) -> None:
        # Not fsynced: losing it costs a re-hash. A read-only shared cache simply keeps re-hashing.
        with contextlib.suppress(OSError), atomic_path(self.memo_path(provider, key), durable=False) as tmp:
            tmp.write_text(json.dumps({"sha256": sha256, "stat": stamp}), encoding="utf-8")

    def quarantine(self, provider: str, key: str, reason: str) -> Quarantined | None:
        """Move the entry aside as damaged (``reason`` says why: it failed to decode, say); it is
        reported in ``quarantined``. None when there is no such clip."""
        try:
            stamp = _stamp(self.clip_path(provider, key))
        except OSError:
            return None
        before = len(self.quarantined)
        self._quarantine(provider, key, stamp, reason)
        return self.quarantined[-1] if len(self.quarantined) > before else None

    def set_aside(self, provider: str, key: str, reason: str) -> None:
        """Move a sound entry aside as the quarantine does (not reported as damage), so that another
        clip can take its key: the shared remote holds a different clip for it, which every
        machine must cut."""
        try:
            stamp = _stamp(self.clip_path(provider, key))
        except OSError:
            return
        self._quarantine(provider, key, stamp, reason, report=False)

    def _quarantine(self, provider: str, key: str, stamp: list[int], reason: str, *, report: bool = True) -> None:
        """Move the clip (the one stamped ``stamp``) and its sidecar aside, under the put lock so no
        put races the move; a clip replaced meanwhile by a fresh put is left where it is."""
        target = self.quarantine_dir / provider
        stem = f"{key}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        clip, moved = self.clip_path(provider, key), target / f"{stem}{self.suffix}"
        try:
            target.mkdir(parents=True, exist_ok=True)
            with filelock.FileLock(str(self.root / ".put.lock"), timeout=60):
                try:
                    if _stamp(clip) != stamp:
                        return
                except FileNotFoundError:
                    return
                self.memo_path(provider, key).unlink(missing_ok=True)
                os.replace(clip, moved)  # the clip first: a crash before the sidecar leaves a half entry
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.meta_path(provider, key), target / f"{stem}.json")
            line = json.dumps(mask_json({"at": now_iso(), "provider": provider, "key": key,
                                         "moved_to": str(moved), "reason": reason}))  # fmt: skip
            with (self.quarantine_dir / "log.jsonl").open("a", encoding="utf-8") as log:
                log.write(line + "\n")
        except (OSError, filelock.Timeout) as exc:
            # Cannot move it (a read-only shared cache): still a miss, and still never used.
            reason += f"; it could not be moved aside ({getattr(exc, 'strerror', None) or exc})"
            moved = clip
        if report:
            self.quarantined.append(Quarantined(provider, key, moved, reason))

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
        self,
        provider: str,
        key: str,
        src: Path,
        meta: ClipMeta,
        *,
        sha256: str | None = None,
        checked: CheckedClip | None = None,
        replace: bool = False,
    ) -> CachedClip:
        """Move the verified file ``src`` (inside ``tmp/``) into the cache as ``key``.

        Idempotent: when ``key`` is already cached the existing entry is kept and ``src`` is
        removed, unless ``replace`` (``stitch --force``: the new file takes the entry's place,
        atomically). ``sha256`` saves re-hashing when the caller already has it; ``checked``, the
        structural check of these bytes, is memoized under their digest (store/probes.py).
        """
        clip = self.clip_path(provider, key)
        self.use(provider, key)  # a damaged entry is moved aside, not kept in place of this clip
        if checked is not None:
            sha256 = sha256 or checked.sha256
            if checked.sha256 == sha256:
                self.probes.put(checked)
        try:
            return self._put(provider, key, clip, src, meta, sha256, replace)
        except OSError as exc:  # disk full, permissions: the run stops with one clear line
            with contextlib.suppress(OSError):
                src.unlink()
            raise StateError(f"cannot add {clip.name} to the clip cache {self.root}: {exc.strerror or exc}") from None

    def _put(
        self, provider: str, key: str, clip: Path, src: Path, meta: ClipMeta, sha256: str | None, replace: bool
    ) -> CachedClip:
        clip.parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time across processes sharing this cache (KLING_RENDER_CACHE).
        with filelock.FileLock(str(self.root / ".put.lock"), timeout=60):
            existing = None if replace else self.get(provider, key)
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
            if replace:  # the old memo names the old file: gone first, so nothing trusts it meanwhile
                self.memo_path(provider, key).unlink(missing_ok=True)
            atomic_write_json(self.meta_path(provider, key), sidecar)
            with src.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(src, clip)
            fsync_dir(clip.parent)
            self._write_memo(provider, key, digest, _stamp(clip))  # hashed just now, from the same inode
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
        """Remove temp files left by dead processes (or older than a day); return how many.

        Only regular files named the way this cache names them (``<pid>-<12 hex><suffix>``): a
        ``tmp/`` shared through ``KLING_RENDER_CACHE`` may hold anything else, and it is left alone.
        """
        removed = 0
        try:
            with os.scandir(self.tmp_dir) as scan:
                entries = [e for e in scan if _TEMP_RE.match(e.name) and e.is_file(follow_symlinks=False)]
        except OSError:
            return 0
        for entry in entries:
            match = _TEMP_RE.match(entry.name)
            assert match is not None
            try:
                stale = not pid_alive(int(match.group(1))) or _age(Path(entry.path)) > STALE_TEMP_SECONDS
            except (ValueError, OSError, OverflowError):
                continue
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed


def stills_of(cache: ClipCache) -> ClipCache:
    """The area of ``cache`` that keeps stills (images made by image models), by provider and key."""
    return ClipCache(cache.root / "stills", suffix=".img")


def frames_of(cache: ClipCache) -> ClipCache:
    """The area of ``cache`` that keeps frames taken from clips for continuity (PNGs), by the
    frame's key (the clip's digest and the frame's index)."""
    return ClipCache(cache.root / "frames", suffix=".png")


def _age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def _stamp(path: Path) -> list[int]:
    """What any change to a file's content or identity changes: device, inode, size, mtime, ctime."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def meta_from(entry: CachedClip) -> dict[str, object]:
    """The entry as plain JSON values (for reports)."""
    doc = asdict(entry)
    doc["path"] = str(entry.path)
    return doc
