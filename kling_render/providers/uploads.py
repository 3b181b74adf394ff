"""Uploaded media remembered by content: a file shared by many shots (and runs) is uploaded once
while the provider keeps it. A small JSON file beside the clip cache; only a cache: when it is
missing or damaged, uploads are simply made again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kling_render.errors import ProviderError
from kling_render.fsutil import atomic_write_json


class UploadRecords:
    """``{sha256: {download_url, uploaded_at}}`` in ``path``; an entry older than ``max_age`` seconds
    (of ``wall_clock``) is not used: the provider may have deleted the file."""

    def __init__(self, path: Path, max_age: float, wall_clock: Callable[[], float]) -> None:
        self.path = path
        self.max_age = max_age
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()

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
