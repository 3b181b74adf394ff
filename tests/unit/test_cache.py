"""The content-addressed clip cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kling_render.fsutil import sha256_file
from kling_render.store.cache import ClipCache, ClipMeta, cache_root_for

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
    names = sorted(p.name for p in first.path.parent.iterdir())
    assert names == [f"{KEY}.json", f"{KEY}.mp4", f"{KEY}.verified"]


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
    stale = cache.tmp_dir / f"{dead.stdout.strip()}-0123456789ab.mp4"
    stale.write_bytes(b"x")
    stale_probe = cache.tmp_dir / f"{dead.stdout.strip()}-abcdef012345.probe"
    stale_probe.write_bytes(b"")
    mine = cache.tmp_dir / f"{os.getpid()}-0123456789ab.mp4"
    mine.write_bytes(b"x")
    # Names the cache never makes stay, whatever they look like: KLING_RENDER_CACHE may be shared.
    others = ["junk", f"{dead.stdout.strip()}-abc.mp4", f"{dead.stdout.strip()}-0123456789AB.mp4",
              f"{dead.stdout.strip()}-0123456789ab.mp4.keep", "99999999999-0123456789ab.mp4", ".hidden"]  # fmt: skip
    for name in others:
        (cache.tmp_dir / name).write_bytes(b"x")
    (cache.tmp_dir / f"{dead.stdout.strip()}-fedcba987654").mkdir()  # a directory, not a temp file
    assert cache.clean_temp() == 2
    left = sorted(p.name for p in cache.tmp_dir.iterdir())
    assert left == sorted([mine.name, *others, f"{dead.stdout.strip()}-fedcba987654"])


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
    cache.put("local", KEY, _tmp_clip(cache), ClipMeta(5.0, "m", "t1", media))
    entry = cache.use("local", KEY)
    assert entry is not None and entry.media == media
    # get checks presence and size only: it never hands out headers of a clip it did not verify
    assert cache.get("local", KEY) == replace(entry, media=None)
    sidecar = cache.meta_path("local", KEY)
    assert json.loads(sidecar.read_text())["media"] == media
    for damaged in (None, "24 fps", [1, 2]):  # an older sidecar without it, or a damaged one
        doc = json.loads(sidecar.read_text())
        doc.pop("media", None)
        if damaged is not None:
            doc["media"] = damaged
        sidecar.write_text(json.dumps(doc))
        again = cache.use("local", KEY)
        assert again is not None and again.media is None and again.sha256 == entry.sha256


# -- integrity: a clip is checked against its sha256 before it is used ---------------------------


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":  # same size, same mtime: only the content differs
        stat = path.stat()
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    elif how == "truncate":
        path.write_bytes(bytes(data[:-3]))
    elif how == "replace":  # another file renamed over it, of the same size
        other = path.with_name("other.bin")
        other.write_bytes(bytes(b ^ 1 for b in data))
        os.replace(other, path)


@pytest.mark.parametrize("how", ["flip", "truncate", "replace"])
def test_a_clip_that_no_longer_matches_is_quarantined_never_used(tmp_path: Path, how: str) -> None:
    cache = ClipCache(tmp_path)
    put = cache.put("local", KEY, _tmp_clip(cache, b"clip-bytes" * 100), ClipMeta(5.0, "m", "t1", {"w": 1}))
    assert cache.use("local", KEY) is not None  # verified, memo written
    _damage(put.path, how)
    assert cache.use("local", KEY) is None
    assert not put.path.exists() and not cache.meta_path("local", KEY).exists()  # a miss now
    assert not cache.memo_path("local", KEY).exists()
    [moved] = cache.quarantined
    assert moved.key == KEY and moved.moved_to.is_file() and moved.moved_to.parent == tmp_path / "quarantine" / "local"
    assert moved.moved_to.with_suffix(".json").is_file()  # the sidecar went with it, nothing deleted
    assert "quarantined" in moved.message and str(moved.moved_to) in moved.message
    log = [json.loads(line) for line in (tmp_path / "quarantine" / "log.jsonl").read_text().splitlines()]
    assert [(e["key"], e["moved_to"]) for e in log] == [(KEY, str(moved.moved_to))]
    # the next put of that key goes in cleanly, and is used
    cache.put("local", KEY, _tmp_clip(cache, b"fresh"), ClipMeta(5.0, "m", "t2"))
    assert cache.use("local", KEY) is not None and len(cache.quarantined) == 1


def test_the_memo_saves_the_rehash_only_while_the_file_is_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kling_render.store.cache as cache_mod

    cache = ClipCache(tmp_path)
    cache.put("local", KEY, _tmp_clip(cache, b"x" * 4096), ClipMeta(5.0, "m"))
    hashed: list[Path] = []
    real = cache_mod.sha256_file
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p: hashed.append(p) or real(p))
    for _ in range(3):
        assert cache.use("local", KEY) is not None
    assert hashed == []  # put hashed it and left the memo: no command re-reads an unchanged clip
    memo = cache.memo_path("local", KEY)
    memo.write_text("{not json")  # a damaged memo costs a re-hash, and is rewritten
    assert cache.use("local", KEY) is not None and len(hashed) == 1
    assert cache.use("local", KEY) is not None and len(hashed) == 1
    os.utime(cache.clip_path("local", KEY))  # touched (ctime and mtime move): hashed again, still good
    assert cache.use("local", KEY) is not None and len(hashed) == 2
    doc = json.loads(memo.read_text())
    doc["sha256"] = "0" * 64  # a memo for another digest is not trusted
    memo.write_text(json.dumps(doc))
    assert cache.use("local", KEY) is not None and len(hashed) == 3


def test_a_clip_without_a_readable_sidecar_is_quarantined_a_sidecar_without_a_clip_is_not(
    tmp_path: Path,
) -> None:
    cache = ClipCache(tmp_path)
    entry = cache.put("local", KEY, _tmp_clip(cache), ClipMeta(5.0, "m"))
    cache.meta_path("local", KEY).write_text("{")
    assert cache.use("local", KEY) is None and entry.path.exists() is False
    assert [q.key for q in cache.quarantined] == [KEY] and "no readable sidecar" in cache.quarantined[0].reason
    again = cache.put("local", KEY, _tmp_clip(cache), ClipMeta(5.0, "m"))
    again.path.unlink()  # a crash inside put: half added, nothing to move aside
    assert cache.use("local", KEY) is None and len(cache.quarantined) == 1
