"""Outputs on the remote: bytes named by their sha256, and for each step key a record pointing at them.

    clips/<provider>/<key>.json        a clip's record: the local cache sidecar's fields (sha256,
                                       size, duration, model, task id, stream headers), created
                                       create-only (If-None-Match: *)
    blobs/sha256/<sha[:2]>/<sha>.mp4   the clip's bytes
    stills/<provider>/<key>.json       a still's record (an image made by an image model), alike
    blobs/sha256/<sha[:2]>/<sha>.img   the still's bytes

Each kind of output has its :class:`Area` (as the local cache has ``stills_of``), and everything
below holds for both: a pulled still is checked as a downloaded still is (media/image_check.py).

A push uploads the bytes first (streamed in parts, so memory stays flat; a blob's name is its
content, so two writers of one name write the same bytes and the upload may replace), then
creates the record. The record is the commit point: a reader never finds a record whose
bytes are not all there, and the first record of a key wins for good. A second, different clip
for the same key (two paid tasks, which claims exist to prevent) loses: :class:`PushConflict`
tells the caller to adopt the remote's clip, so every machine cuts the same bytes.

A pull streams the bytes into the local cache's temp directory, checks size and sha256 against
the record, then gives the clip the same check as a download (the ``verify`` the caller passes:
the download path's own: a clip's structural check, media/check.py, or a still's), and only then
adds it to the local cache, which stays a cache of the remote. A blob with the right digest and
random bytes never counts as a clip, nor do bytes an earlier stitch found not to decode
(store/probes.py). Nothing but the digest and size is taken from a record: the duration and stream
headers kept in the local cache are the check's, measured on the clip, and the stitch takes a
clip's headers from its own check of the bytes (the probe memo), never from a record (a record is
editable; its ``duration`` and ``media`` are written for people and older versions, never read).
A record's task id passes jobs.valid_task_id or is dropped; a record from a newer kling-render
(``version``) is refused.
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

from kling_render.errors import KlingRenderError, RemoteError, RemoteIntegrityError, RemoteVersionError
from kling_render.fsutil import sha256_file
from kling_render.jobs import valid_task_id
from kling_render.masking import mask_json
from kling_render.media.check import CheckedClip
from kling_render.media.image_check import CheckedImage
from kling_render.records.state import now_iso
from kling_render.store.cache import CachedClip, ClipCache, ClipMeta
from kling_render.store.remote.store import RemoteStore, Written

__all__ = ["CLIPS", "STILLS", "Area", "ClipCheck", "PushConflict", "Pushed", "RemoteClip", "RemoteClips"]

RECORD_VERSION = 1
ClipCheck = Callable[[Path], CheckedClip | CheckedImage]
"""The check an output passes before it counts (the download path's: run/scheduler.default_verify,
a clip's structure; media/image_check.check_image, a still): what it found (digest, duration, stream
headers); raises when the file is not usable."""

_KEY_RE = re.compile(r"^[0-9a-f]{16,128}\Z")  # as the local cache: a shot key is hex
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
_SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Area:
    """Where one kind of output lives on the remote: its records' folder, its blobs' suffix, and
    the word messages use for it."""

    records: str
    suffix: str
    noun: str


CLIPS = Area("clips", ".mp4", "clip")
STILLS = Area("stills", ".img", "still")


def records_prefix(provider: str, area: Area = CLIPS) -> str:
    if not _NAME_RE.match(provider):
        raise ValueError(f"bad provider name {provider!r}")
    return f"{area.records}/{provider}/"


def record_path(provider: str, key: str, area: Area = CLIPS) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"bad shot key {key!r}")
    return f"{records_prefix(provider, area)}{key}.json"


def blob_path(sha256: str, area: Area = CLIPS) -> str:
    if not _SHA_RE.match(sha256):
        raise ValueError(f"bad sha256 {sha256!r}")
    return f"blobs/sha256/{sha256[:2]}/{sha256}{area.suffix}"


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

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": RECORD_VERSION,
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
        version = raw.get("version", RECORD_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"bad version {str(version)[:20]!r}")
        if version > RECORD_VERSION:
            raise NewerRecord(version)
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
                task_id=task_id if valid_task_id(task_id) else None,  # never into a file unchecked
                created=str(raw.get("created", "")),
                media=media if isinstance(media, dict) else None,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"a field is missing or wrong ({exc})") from None


class NewerRecord(ValueError):
    """The record was written by a newer kling-render (its ``version``)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"version {version}")
        self.version = version


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
    """The records and blobs of one :class:`Area` (clips, or stills) of a remote."""

    def __init__(self, store: RemoteStore, area: Area = CLIPS) -> None:
        self.store = store
        self.area = area

    def record_path(self, provider: str, key: str) -> str:
        return record_path(provider, key, self.area)

    def blob_path(self, sha256: str) -> str:
        return blob_path(sha256, self.area)

    async def get(self, provider: str, key: str) -> RemoteClip | None:
        """The record for ``key``, or None. RemoteIntegrityError when it is there but unreadable."""
        path = self.record_path(provider, key)
        stored = await self.store.read(path)
        return None if stored is None else self._parse(stored.data, provider, key)

    def _parse(self, data: bytes, provider: str, key: str) -> RemoteClip:
        path, noun = self.record_path(provider, key), self.area.noun
        try:
            return RemoteClip.from_json(json.loads(data.decode("utf-8")), provider, key)
        except NewerRecord as exc:
            raise RemoteVersionError(
                f"the {noun} record {path} on the remote {self.store.url} has schema version {exc.version}, newer "
                f"than this kling-render understands ({RECORD_VERSION}): it is not used, and nothing is paid for "
                "its step; upgrade kling-render"
            ) from None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RemoteIntegrityError(
                f"the {noun} record {path} on the remote {self.store.url} is damaged ({exc}); delete it so the "
                f"{noun} is uploaded again"
            ) from None

    async def keys(self, provider: str) -> set[str]:
        """Every key with a record for ``provider`` (one listing, for plans and stitches)."""
        return set(await self.listing(provider))

    async def listing(self, provider: str) -> dict[str, str | None]:
        """Every key with a record for ``provider``, with the record's ETag (one listing): records
        are create-only, so an unchanged ETag is an unchanged record."""
        keys: dict[str, str | None] = {}
        for meta in await self.store.list_meta(records_prefix(provider, self.area)):
            name = meta.path.rsplit("/", 1)[-1]
            if name.endswith(".json") and _KEY_RE.match(name[:-5]):
                keys[name[:-5]] = meta.etag
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
        blob = self.blob_path(digest)
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
        data = (json.dumps(mask_json(clip.to_json()), indent=2, sort_keys=True) + "\n").encode("utf-8")
        outcome = await self.store.write(self.record_path(provider, key), data)
        if isinstance(outcome, Written):
            return Pushed(clip, True)
        if outcome.current is None:  # pragma: no cover - a create lost while nothing is there, three times
            raise RemoteIntegrityError(
                f"the {self.area.noun} record of {key} on the remote {self.store.url} could not be created"
            )
        winner = self._parse(outcome.current.data, provider, key)
        return Pushed(winner, False) if winner.sha256 == digest else PushConflict(winner)

    async def pull(self, provider: str, key: str, cache: ClipCache, *, verify: ClipCheck) -> CachedClip | None:
        """Bring ``key``'s clip into the local cache (see :meth:`fetch`); None if the remote has none.
        An entry already in the local cache is kept (the cache's put is idempotent)."""
        clip = await self.get(provider, key)
        if clip is None:
            return None
        return await self.fetch(clip, cache, verify=verify)

    async def fetch(
        self, clip: RemoteClip, cache: ClipCache, *, verify: ClipCheck, replace: str | None = None
    ) -> CachedClip:
        """Download the clip of a record already read: size and sha256 against the record, then
        ``verify`` (the download path's check), whose measured duration and stream headers go into
        the local cache (a clip's check into the probe memo too). RemoteIntegrityError when the clip
        is not usable: nothing is kept. ``replace``: the local cache's clip for the key is set aside
        first (with this reason), once the remote's has passed its checks."""
        with cache.temp_file() as tmp:
            blob, noun = self.blob_path(clip.sha256), self.area.noun
            bad = cache.probes.corrupt(clip.sha256) if self.area == CLIPS else None
            if bad is not None:
                raise RemoteIntegrityError(
                    f"{blob} on the remote {self.store.url} does not decode (found by an earlier stitch: {bad}); "
                    f"not used. Delete it and its record so the {noun} is made again"
                )
            await self.store.download(blob, tmp, size=clip.size, sha256=clip.sha256)
            try:
                checked = await asyncio.to_thread(verify, tmp)
            except RemoteError:
                raise
            except (KlingRenderError, ValueError, OSError) as exc:
                raise RemoteIntegrityError(
                    f"{blob} on the remote {self.store.url} has the digest its record says but is not a usable "
                    f"{noun} ({exc}); not used. Delete it and its record so the {noun} is made again"
                ) from None
            memo = checked if isinstance(checked, CheckedClip) else None
            media = checked.info.to_json() if isinstance(checked, CheckedClip) else checked.media
            meta = ClipMeta(checked.duration, clip.model, clip.task_id, media)
            if replace is not None:
                await asyncio.to_thread(cache.set_aside, clip.provider, clip.key, replace)
            return await asyncio.to_thread(
                cache.put, clip.provider, clip.key, tmp, meta, sha256=clip.sha256, checked=memo
            )
