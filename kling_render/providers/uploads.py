"""Uploaded media remembered by content: a file shared by many shots (and runs) is uploaded once
while the provider keeps it. A small JSON file beside the clip cache; only a cache: when it is
missing or damaged, uploads are simply made again.

``media_url`` is the one way a provider turns a shot's local file into a URL it can send: both
HTTP providers call it with their own upload (WaveSpeed's media API, fal's storage)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kling_render.errors import ProviderError
from kling_render.fsutil import atomic_write_json, sha256_file
from kling_render.jobs import MediaRef

Upload = Callable[[str, bytes], Awaitable[str]]  # (file name, bytes) -> the URL to send


class UploadRecords:
    """``{sha256: {download_url, uploaded_at}}`` in ``path``; an entry older than ``max_age`` seconds
    (of ``wall_clock``) is not used: the provider may have deleted the file."""

    def __init__(self, path: Path, max_age: float, wall_clock: Callable[[], float]) -> None:
        self.path = path
        self.max_age = max_age
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        self._uploading: dict[str, asyncio.Lock] = {}  # per content: one upload however many shots share it

    async def media_url(self, ref: MediaRef, upload: Upload) -> str:
        """The URL to send for ``ref``: its own URL, or the upload of its file (``upload``, retried by
        the caller) made once per content and remembered. The bytes uploaded are the bytes planned:
        a file whose digest changed since the plan is refused, not sent."""
        if ref.path is None:
            assert ref.url is not None
            return ref.url
        path = ref.path
        try:
            digest: str = ref.sha256 if ref.sha256 else await asyncio.to_thread(sha256_file, path)
        except OSError as exc:
            raise ProviderError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
        async with self._uploading.setdefault(digest, asyncio.Lock()):
            cached = self.get(digest)
            if cached is not None:
                return cached
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise ProviderError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
            if await asyncio.to_thread(_sha256_bytes, data) != digest:
                raise ProviderError(f"{path.name} changed since it was planned; run the command again")
            url = await upload(ref.name, data)
            await self.put(digest, url)
            return url

    def _load(self) -> dict[str, Any]:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or damaged: it is only a cache, uploads are redone
        return value if isinstance(value, dict) else {}

    def get(self, digest: str) -> str | None:
        """The URL the file with ``digest`` was uploaded to, while it is young enough to use."""
        entry = self._load().get(digest)
        if not isinstance(entry, dict):
            return None
        url, stamp = entry.get("download_url"), entry.get("uploaded_at")
        if not isinstance(url, str) or not isinstance(stamp, str):
            return None
        try:
            uploaded = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            return None
        age = self._wall_clock() - uploaded
        return url if 0 <= age <= self.max_age else None

    async def put(self, digest: str, url: str) -> None:
        """Remember an upload; a file that cannot be written fails the shot before its POST."""
        stamp = datetime.fromtimestamp(self._wall_clock(), UTC).isoformat()
        async with self._lock:  # re-read and merge: other shots record theirs too
            records = self._load()
            records[digest] = {"download_url": url, "uploaded_at": stamp}
            try:
                await asyncio.to_thread(atomic_write_json, self.path, records)
            except OSError as exc:  # before the POST: the shot fails, it is not ``unknown``
                raise ProviderError(f"cannot record the upload in {self.path.name}: {exc.strerror or exc}") from None


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
