"""Clips on the remote: bytes named by their sha256, and for each shot key a record pointing at them.

    clips/<provider>/<key>.json        the record: the local cache sidecar's fields (sha256, size,
                                       duration, model, task id, stream headers), created
                                       create-only (If-None-Match: *)
    blobs/sha256/<sha[:2]>/<sha>.mp4   the clip's bytes

A push uploads the bytes first (streamed in parts, so memory stays flat; a blob's name is its
content, so two writers of one name write the same bytes and the upload may replace), then
creates the record. The record is the commit point: a reader never finds a record whose
bytes are not all there, and the first record of a key wins for good. A second, different clip
for the same key (two paid tasks, which claims exist to prevent) loses: :class:`PushConflict`
tells the caller to adopt the remote's clip, so every machine cuts the same bytes.

A pull streams the bytes into the local cache's temp directory, checks size and sha256 against
the record, then gives them the same structural check as a download (media/check.py: a blob with
the right digest but random bytes is refused) and only then adds them to the local cache, which
stays a cache of the remote. The record's stream headers (``media``) are kept for reference only:
the stitch takes them from its own check of the bytes (store/probes.py), never from a record.
Blobs are never deleted here: identical clips of two keys share one.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kling_render.errors import InvalidClipError, RemoteIntegrityError
from kling_render.fsutil import sha256_file
from kling_render.media.check import check_structure
from kling_render.records.state import now_iso
from kling_render.store.cache import CachedClip, ClipCache, ClipMeta
from kling_render.store.remote.store import RemoteStore, Written

__all__ = ["PushConflict", "Pushed", "RemoteClip", "RemoteClips"]

_KEY_RE = re.compile(r"^[0-9a-f]{16,128}\Z")  # as the local cache: a shot key is hex
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
_SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")


def records_prefix(provider: str) -> str:
    if not _NAME_RE.match(provider):
        raise ValueError(f"bad provider name {provider!r}")
    return f"clips/{provider}/"


def record_path(provider: str, key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"bad shot key {key!r}")
    return f"{records_prefix(provider)}{key}.json"


def blob_path(sha256: str) -> str:
    if not _SHA_RE.match(sha256):
        raise ValueError(f"bad sha256 {sha256!r}")
    return f"blobs/sha256/{sha256[:2]}/{sha256}.mp4"


@dataclass(frozen=True)
class RemoteClip:
    """A clip's record on the remote."""

    provider: str
    key: str
    sha256: str
    size: int
    duration: float
    model: str
    task_id: str | None
    created: str
    media: dict[str, Any] | None = None

    @property
    def meta(self) -> ClipMeta:
        return ClipMeta(self.duration, self.model, self.task_id, self.media)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "key": self.key,
            "provider": self.provider,
            "sha256": self.sha256,
            "size": self.size,
            "duration": round(self.duration, 4),
            "model": self.model,
            "task_id": self.task_id,
            "created": self.created,
        }
        if self.media is not None:
            doc["media"] = self.media
        return doc

    @classmethod
    def from_json(cls, raw: Any, provider: str, key: str) -> RemoteClip:
        """Raises ValueError unless ``raw`` is a well-formed record of ``provider``/``key``."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("key") != key or raw.get("provider") != provider:
            raise ValueError("it names another key or provider")
        sha, size = raw.get("sha256"), raw.get("size")
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ValueError("no valid sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError("no valid size")
        task_id = raw.get("task_id")
        media = raw.get("media")
        try:
            return cls(
                provider=provider,
                key=key,
                sha256=sha,
                size=size,
                duration=float(raw["duration"]),
                model=str(raw["model"]),
                task_id=task_id if isinstance(task_id, str) else None,
                created=str(raw.get("created", "")),
                media=media if isinstance(media, dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a field is missing or wrong ({exc})") from None


@dataclass(frozen=True)
class Pushed:
    """The remote holds this clip for the key; ``created`` False: it already did (same bytes)."""

    clip: RemoteClip
    created: bool


@dataclass(frozen=True)
class PushConflict:
    """The remote holds a *different* clip for the key (it came first and stays): adopt ``existing``."""

    existing: RemoteClip


class RemoteClips:
    def __init__(self, store: RemoteStore) -> None:
        self.store = store

    async def get(self, provider: str, key: str) -> RemoteClip | None:
        """The record for ``key``, or None. RemoteIntegrityError when it is there but unreadable."""
        path = record_path(provider, key)
        stored = await self.store.read(path)
        return None if stored is None else self._parse(stored.data, provider, key)

    def _parse(self, data: bytes, provider: str, key: str) -> RemoteClip:
        path = record_path(provider, key)
        try:
            return RemoteClip.from_json(json.loads(data.decode("utf-8")), provider, key)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RemoteIntegrityError(
                f"the clip record {path} on the remote {self.store.url} is damaged ({exc}); delete it so the "
                "clip is uploaded again"
            ) from None

    async def keys(self, provider: str) -> set[str]:
        """Every key with a record for ``provider`` (one listing, for plans and stitches)."""
        keys = set()
        for path in await self.store.list_paths(records_prefix(provider)):
            name = path.rsplit("/", 1)[-1]
            if name.endswith(".json") and _KEY_RE.match(name[:-5]):
                keys.add(name[:-5])
        return keys

    async def push(
        self, provider: str, key: str, src: Path, meta: ClipMeta, *, sha256: str | None = None
    ) -> Pushed | PushConflict:
        """Put the verified clip ``src`` on the remote as ``key`` (see the module docstring)."""
        existing = await self.get(provider, key)
        digest = sha256 if sha256 is not None else await asyncio.to_thread(sha256_file, src)
        if existing is not None and existing.sha256 != digest:
            return PushConflict(existing)
        size = src.stat().st_size
        blob = blob_path(digest)
        there = await self.store.head(blob)
        if there is None or there.size != size:  # missing, or cut short: we hold the bytes, put them back
            await self.store.upload(blob, src)
        if existing is not None:
            return Pushed(existing, False)
        clip = RemoteClip(
            provider=provider,
            key=key,
            sha256=digest,
            size=size,
            duration=meta.duration,
            model=meta.model,
            task_id=meta.task_id,
            created=now_iso(),
            media=meta.media,
        )
        data = (json.dumps(clip.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")
        outcome = await self.store.write(record_path(provider, key), data)
        if isinstance(outcome, Written):
            return Pushed(clip, True)
        if outcome.current is None:  # pragma: no cover - a create lost while nothing is there, three times
            raise RemoteIntegrityError(f"the clip record of {key} on the remote {self.store.url} could not be created")
        winner = self._parse(outcome.current.data, provider, key)
        return Pushed(winner, False) if winner.sha256 == digest else PushConflict(winner)

    async def pull(
        self, provider: str, key: str, cache: ClipCache, *, verify: Callable[[Path], object] | None = None
    ) -> CachedClip | None:
        """Bring ``key``'s clip into the local cache (checked by size and sha256); None if the
        remote has none. An entry already in the local cache is kept (the cache's put is idempotent).

        ``verify`` (e.g. the runner's decode-and-measure check) runs on the downloaded file after the
        sha256 check and before the cache takes it; whatever it raises propagates, nothing is kept."""
        clip = await self.get(provider, key)
        if clip is None:
            return None
        return await self.fetch(clip, cache, verify=verify)

    async def fetch(
        self, clip: RemoteClip, cache: ClipCache, *, verify: Callable[[Path], object] | None = None
    ) -> CachedClip:
        """Download the clip of a record already read (see :meth:`pull`)."""
        where = f"the clip {clip.key[:12]} on the remote {self.store.url}"
        bad = cache.probes.corrupt(clip.sha256)
        if bad is not None:
            raise RemoteIntegrityError(f"{where} does not decode (found by an earlier stitch: {bad})")
        with cache.temp_file() as tmp:
            await self.store.download(blob_path(clip.sha256), tmp, size=clip.size, sha256=clip.sha256)
            try:
                checked = await asyncio.to_thread(check_structure, tmp)
            except InvalidClipError as exc:
                raise RemoteIntegrityError(f"{where} is not a valid clip ({exc}); delete its record") from None
            if verify is not None:
                await asyncio.to_thread(verify, tmp)
            return cache.put(clip.provider, clip.key, tmp, clip.meta, sha256=clip.sha256, checked=checked)
