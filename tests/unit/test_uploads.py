"""providers/uploads.py: the one way both HTTP providers turn a local file into a URL to send."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from kling_render.errors import ProviderError
from kling_render.jobs import MediaRef
from kling_render.providers.uploads import UploadRecords

DAY = 86400.0


class Storage:
    """An upload callable that counts what it is sent, slowly enough for shots to overlap."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def __call__(self, filename: str, data: bytes) -> str:
        self.sent.append((filename, data))
        await asyncio.sleep(0.05)
        return f"https://storage.example/{len(self.sent)}/{filename}"


def ref_for(path: Path) -> MediaRef:
    return MediaRef(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def test_shots_sharing_a_file_upload_it_once_and_later_runs_reuse_it(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"png bytes")
    records = UploadRecords(tmp_path / "uploads.json", 6 * DAY, lambda: 1000 * DAY)
    storage = Storage()

    async def shots() -> list[str]:
        return await asyncio.gather(*(records.media_url(ref_for(image), storage) for _ in range(5)))

    urls = asyncio.run(shots())
    assert storage.sent == [("a.png", b"png bytes")]
    assert set(urls) == {"https://storage.example/1/a.png"}
    again = UploadRecords(tmp_path / "uploads.json", 6 * DAY, lambda: 1000 * DAY)  # the next run
    assert asyncio.run(again.media_url(ref_for(image), storage)) == urls[0]
    assert len(storage.sent) == 1
    later = UploadRecords(tmp_path / "uploads.json", 6 * DAY, lambda: 1006.5 * DAY)  # the provider may have dropped it
    assert asyncio.run(later.media_url(ref_for(image), storage)) == "https://storage.example/2/a.png"
    stored = json.loads((tmp_path / "uploads.json").read_text())
    assert list(stored) == [hashlib.sha256(b"png bytes").hexdigest()]


def test_a_file_changed_since_the_plan_is_refused_before_any_upload(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"as planned")
    planned = ref_for(image)
    image.write_bytes(b"edited after the plan")
    storage = Storage()
    records = UploadRecords(tmp_path / "uploads.json", 6 * DAY, lambda: 1000 * DAY)
    with pytest.raises(ProviderError, match=r"a\.png changed since it was planned"):
        asyncio.run(records.media_url(planned, storage))
    assert storage.sent == []
    assert not (tmp_path / "uploads.json").exists()


def test_a_url_input_is_sent_as_it_is_and_a_missing_file_is_one_line(tmp_path: Path) -> None:
    storage = Storage()
    records = UploadRecords(tmp_path / "uploads.json", 6 * DAY, lambda: 1000 * DAY)
    url = "https://cdn.example/start.png"
    assert asyncio.run(records.media_url(MediaRef(url=url), storage)) == url
    with pytest.raises(ProviderError, match=r"cannot read gone\.png"):
        asyncio.run(records.media_url(MediaRef(path=tmp_path / "gone.png"), storage))
    assert storage.sent == []
