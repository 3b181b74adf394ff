"""Encoded segments (and audio passes) on the remote, content-addressed like the clips, so that any
machine that shares the remote (CI's shards, the machine that makes the cut) encodes each one once:

    segments/<key>.json                the record: {"version", "key", "sha256", "size", "created"},
                                       created create-only (If-None-Match: *)
    segments/claims/<key>.json         a shard's claim to encode it ({"host", "pid", "token",
                                       "since"}, create-only): shards running at once split them
    blobs/sha256/<sha[:2]>/<sha>.mp4   the bytes (the same blob area as the clips)

The key is the step's key (stitch/plan.py): the sha256 of everything that decides its bytes, so
two machines that encode one key make the same bytes; the first record stays. A push uploads the
bytes, then creates the record (the commit point). A pull reads the record, streams the bytes into
the local segment store's temp directory checking size and sha256, then checks the structure (every
box and sample inside the file, every H.264 sample's framing, and the frame count the plan expects)
before the store takes it. A record or blob that fails any of this is not used: the segment is
encoded locally, and the problem reported.

:class:`RemoteSegments` is the async API (the scheduler's executors call it);
:class:`SegmentRemote` adapts it to the stitch's synchronous
:class:`~kling_render.store.segments.SegmentSource`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kling_render.errors import InvalidClipError, RemoteError, RemoteIntegrityError
from kling_render.fsutil import sha256_file
from kling_render.media.check import check_container
from kling_render.records.state import now_iso
from kling_render.store.remote.clips import blob_path
from kling_render.store.remote.store import RemoteStore, Written
from kling_render.store.segments import SegmentStore

__all__ = ["RECORD_VERSION", "RemoteSegment", "RemoteSegments", "SegmentRemote", "claim_path", "record_path"]

RECORD_VERSION = 1
_KEY_RE = re.compile(r"^[0-9a-f]{64}\Z")
_SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")


@functools.cache
def _claimant() -> dict[str, object]:
    """Who claims, the same bytes for every claim of this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "since": now_iso()}


def record_path(key: str) -> str:
    return f"segments/{_checked(key)}.json"


def claim_path(key: str) -> str:
    return f"segments/claims/{_checked(key)}.json"


def _checked(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"bad segment key {key!r}")
    return key


@dataclass(frozen=True)
class RemoteSegment:
    key: str
    sha256: str
    size: int
    created: str

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "key": self.key, "sha256": self.sha256, "size": self.size,
                "created": self.created}  # fmt: skip

    @classmethod
    def from_json(cls, raw: Any, key: str) -> RemoteSegment:
        """Raises ValueError unless ``raw`` is a well-formed record of ``key`` this version reads."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        version = raw.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("no valid version")
        if version > RECORD_VERSION:
            raise ValueError(f"it was written by a newer kling-render (record version {version})")
        sha, size = raw.get("sha256"), raw.get("size")
        if raw.get("key") != key:
            raise ValueError("it names another key")
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ValueError("no valid sha256")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size < 2**40:
            raise ValueError("no valid size")
        return cls(key, sha, size, str(raw.get("created", ""))[:64])


class RemoteSegments:
    def __init__(self, store: RemoteStore) -> None:
        self.store = store

    async def get(self, key: str) -> RemoteSegment | None:
        """The record for ``key``, or None. RemoteIntegrityError when it is there but unreadable."""
        stored = await self.store.read(record_path(key))
        return None if stored is None else self._parse(stored.data, key)

    def _parse(self, data: bytes, key: str) -> RemoteSegment:
        try:
            return RemoteSegment.from_json(json.loads(data.decode("utf-8")), key)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RemoteIntegrityError(
                f"the segment record {record_path(key)} on the remote {self.store.url} is not usable ({exc})"
            ) from None

    async def push(self, key: str, src: Path, *, sha256: str | None = None) -> RemoteSegment:
        """Put the segment ``src`` on the remote as ``key`` (bytes first, then the record); the record
        the remote holds afterwards (an earlier one of the same key stays)."""
        existing = await self.get(key)
        if existing is not None:
            return existing
        digest = sha256 if sha256 is not None else await asyncio.to_thread(sha256_file, src)
        size = src.stat().st_size
        blob = blob_path(digest)
        there = await self.store.head(blob)
        if there is None or there.size != size:
            await self.store.upload(blob, src)
        record = RemoteSegment(key, digest, size, now_iso())
        data = (json.dumps(record.to_json(), sort_keys=True) + "\n").encode("utf-8")
        outcome = await self.store.write(record_path(key), data)
        if isinstance(outcome, Written) or outcome.current is None:
            return record
        return self._parse(outcome.current.data, key)

    async def claim(self, key: str) -> bool:
        """Take the claim to encode ``key`` (create-only): False when another process holds it (it is
        making the segment, or made it); True again for this process's own claim (the same bytes: a
        segment its pipeline claimed and failed is tried again after the run). A claim is never
        released: a shard that dies holding one leaves that segment to the stitch, which encodes
        whatever the remote lacks, claimed or not."""
        data = (json.dumps(_claimant(), sort_keys=True) + "\n").encode("utf-8")
        return isinstance(await self.store.write(claim_path(key), data), Written)

    async def pull(self, key: str, segments: SegmentStore, frames: int | None) -> Path | None:
        """Bring ``key``'s segment into the local store, checked (see the module docstring); None
        when the remote has none. RemoteIntegrityError when what it has is not usable."""
        record = await self.get(key)
        if record is None:
            return None
        with segments.temp_file() as tmp:
            await self.store.download(blob_path(record.sha256), tmp, size=record.size, sha256=record.sha256)
            try:
                await asyncio.to_thread(_check, tmp, frames, key)
            except InvalidClipError as exc:
                raise RemoteIntegrityError(f"the segment {key[:12]} on the remote {self.store.url}: {exc}") from None
            return segments.put(key, tmp, 0.0, sha256=record.sha256)


def _check(path: Path, frames: int | None, key: str) -> None:
    movie = check_container(path.read_bytes(), f"segment {key[:12]}")
    if frames is not None:
        videos = [t for t in movie.tracks if t.handler == "vide"]
        if len(videos) != 1 or videos[0].samples != frames:
            found = videos[0].samples if len(videos) == 1 else f"{len(videos)} video tracks"
            raise InvalidClipError(f"segment {key[:12]} has {found} frames, the plan {frames}")
    elif not movie.tracks or not any(t.samples for t in movie.tracks):
        raise InvalidClipError(f"segment {key[:12]} holds no media")


class SegmentRemote:
    """The remote's segments as the stitch's SegmentSource: blocking calls (each runs its own event
    loop, so it may be called from the stitch's worker threads); failures never stop a stitch, they
    are collected in ``problems`` (a segment that cannot be pulled is encoded here)."""

    def __init__(self, segments: RemoteSegments) -> None:
        self.segments = segments
        self.problems: list[str] = []
        self.pushed = 0
        self._lock = threading.Lock()

    def _problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)

    def fetch(self, key: str, store: SegmentStore, frames: int | None) -> Path | None:
        try:
            return asyncio.run(self.segments.pull(key, store, frames))
        except RemoteError as exc:
            self._problem(f"segment {key[:12]} not pulled ({exc}); encoded here")
            return None

    def claim(self, key: str) -> bool:
        """Whether this machine should encode ``key`` (a shard): True when it took the claim, or when
        the remote cannot say (an encode too many costs time, not correctness)."""
        try:
            return asyncio.run(self.segments.claim(key))
        except (RemoteError, OSError) as exc:
            self._problem(f"segment {key[:12]} not claimed ({exc}); encoded here")
            return True

    def push(self, key: str, path: Path) -> None:
        try:
            asyncio.run(self.segments.push(key, path))
        except (RemoteError, OSError) as exc:
            self._problem(f"segment {key[:12]} not pushed ({exc}); the next stitch encodes it")
            return
        with self._lock:
            self.pushed += 1
