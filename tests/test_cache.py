"""The content-addressed clip cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kling_render.cache import ClipCache, ClipMeta, cache_root_for
from kling_render.fsutil import sha256_file

KEY = "ab" + "0" * 62


def _tmp_clip(cache: ClipCache, data: bytes = b"clip-bytes") -> Path:
    cache.tmp_dir.mkdir(parents=True, exist_ok=True)
    path = cache.tmp_dir / f"{os.getpid()}-x.mp4"
    path.write_bytes(data)
    return path


def test_put_moves_the_file_and_get_finds_it(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cache")
    assert cache.get("local", KEY) is None
    src = _tmp_clip(cache)
    entry = cache.put("local", KEY, src, ClipMeta(5.0, "m", "t1"))
    assert not src.exists()
    assert entry.path == tmp_path / "cache" / "local" / "ab" / f"{KEY}.mp4"
    assert entry.sha256 == sha256_file(entry.path) and entry.size == len(b"clip-bytes")
    assert (entry.duration, entry.model, entry.task_id) == (5.0, "m", "t1")
    assert cache.get("local", KEY) == entry
    assert cache.get("wavespeed", KEY) is None  # providers are separate namespaces
    assert cache.verify("local", KEY)


def test_put_is_idempotent(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path)
    first = cache.put("local", KEY, _tmp_clip(cache), ClipMeta(5.0, "m", "t1"))
    src = _tmp_clip(cache, b"other")
    second = cache.put("local", KEY, src, ClipMeta(5.0, "m", "t2"))
    assert second == first and not src.exists()
    assert sorted(p.name for p in first.path.parent.iterdir()) == [f"{KEY}.json", f"{KEY}.mp4"]


def test_half_added_or_damaged_entries_are_not_cached(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path)
    entry = cache.put("local", KEY, _tmp_clip(cache), ClipMeta(5.0, "m"))
    entry.path.unlink()  # sidecar without clip: a crash between the two steps of put
    assert cache.get("local", KEY) is None
    again = cache.put("local", KEY, _tmp_clip(cache, b"fresh"), ClipMeta(5.0, "m"))
    assert again.sha256 == sha256_file(again.path)
    again.path.write_bytes(b"truncated")  # a clip that does not match its sidecar
    assert cache.get("local", KEY) is None
    cache.meta_path("local", KEY).write_text("{")
    assert cache.get("local", KEY) is None


def test_bad_keys_and_names_never_become_paths(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path)
    with pytest.raises(ValueError):
        cache.clip_path("local", "../../etc")
    with pytest.raises(ValueError):
        cache.clip_path("../x", KEY)


def test_temp_files_are_removed_and_stale_ones_cleaned(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path)
    with cache.temp_file() as tmp:
        tmp.write_bytes(b"partial")
        assert tmp.parent == cache.tmp_dir
    assert not tmp.exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = cache.tmp_dir / f"{dead.stdout.strip()}-abc.mp4"
    stale.write_bytes(b"x")
    mine = cache.tmp_dir / f"{os.getpid()}-abc.mp4"
    mine.write_bytes(b"x")
    (cache.tmp_dir / "junk").write_bytes(b"x")
    assert cache.clean_temp() == 2
    assert [p.name for p in cache.tmp_dir.iterdir()] == [mine.name]


def test_cache_root_defaults_beside_the_project_and_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KLING_RENDER_CACHE", raising=False)
    assert cache_root_for(tmp_path / "p.yaml") == tmp_path / ".kling-render" / "cache"
    monkeypatch.setenv("KLING_RENDER_CACHE", str(tmp_path / "shared"))
    assert ClipCache.for_project(tmp_path / "p.yaml").root == tmp_path / "shared"


def test_sidecar_records_what_the_clip_is(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path)
    entry = cache.put("local", KEY, _tmp_clip(cache), ClipMeta(4.96, "kling-v3.0-std/image-to-video", "t9"))
    meta = json.loads(cache.meta_path("local", KEY).read_text())
    assert meta["sha256"] == entry.sha256 and meta["task_id"] == "t9" and meta["key"] == KEY
    assert set(meta) == {"key", "provider", "sha256", "size", "duration", "model", "task_id", "created"}


def test_stream_headers_ride_in_the_sidecar(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cache")
    media = {"width": 320, "height": 180, "fps": "24/1"}  # opaque to the cache: kept as given
    entry = cache.put("local", KEY, _tmp_clip(cache), ClipMeta(5.0, "m", "t1", media))
    assert entry.media == media and cache.get("local", KEY) == entry
    sidecar = cache.meta_path("local", KEY)
    assert json.loads(sidecar.read_text())["media"] == media
    for damaged in (None, "24 fps", [1, 2]):  # an older sidecar without it, or a damaged one
        doc = json.loads(sidecar.read_text())
        doc.pop("media", None)
        if damaged is not None:
            doc["media"] = damaged
        sidecar.write_text(json.dumps(doc))
        again = cache.get("local", KEY)
        assert again is not None and again.media is None and again.sha256 == entry.sha256
