"""What the stitch believes about a clip comes from the clip's own bytes (issue 23 items 4 and 19,
issue 20 item 6), through the real CLI: an edited cache sidecar, an edited probe memo or an edited
remote record changes nothing in the cut; a remote blob of random bytes under a matching digest is
refused; segments go through the remote so a second machine encodes none."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import EXAMPLE, Workspace, base_env

from kling_render.media.probe import probe

PROJECT = """\
version: 1
name: trust
provider: local
defaults: {model: kling-video-o3-std/image-to-video, duration: 3}
shots:
  - {id: one, prompt: "a mug on a table", image: images/mug.png}
  - {id: two, prompt: "the mug again", image: images/mug.png, duration: 4}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def workspace(root: Path, cache: Path, **env: str) -> Workspace:
    root.mkdir(parents=True)
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(PROJECT)
    return Workspace(root, base_env(KLING_RENDER_CACHE=str(cache), **env))


def stitched(ws: Workspace, command: str, *args: str) -> dict[str, Any]:
    """The stitch's figures: the ``stitched`` event of ``render --json``, the summary of ``stitch --json``."""
    done = ws.cli(command, str(ws.project), "--json", *args)
    assert done.returncode == 0, done.stderr
    if command == "stitch":
        summary: dict[str, Any] = json.loads(done.stdout)
        return summary
    events = [json.loads(line) for line in done.stdout.splitlines()[1:]]
    found: dict[str, Any] = next(e for e in events if e["event"] == "stitched")
    return found


def shrink(doc: dict[str, Any]) -> None:
    """The lie of issue 23 item 4: the clip (1280x720) claimed to be the output's size, 320x180."""
    doc["width"], doc["height"] = 320, 180


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One render with a remote per module: the project, its cache and the remote, copied per test."""
    base = tmp_path_factory.mktemp("made")
    ws = workspace(base / "a", base / "cache-a", KLING_RENDER_REMOTE=f"file://{base / 'shared'}")
    first = stitched(ws, "render")
    assert first["stream_copy"] is False  # 1280x720 clips in a 320x180 cut: re-encoded
    return base, first


@pytest.fixture
def rendered(made: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Workspace, dict[str, Any]]:
    base, first = made
    for name in ("a", "cache-a", "shared"):
        shutil.copytree(base / name, tmp_path / name, symlinks=True)
    env = base_env(KLING_RENDER_CACHE=str(tmp_path / "cache-a"), KLING_RENDER_REMOTE=f"file://{tmp_path / 'shared'}")
    return Workspace(tmp_path / "a", env), first


def test_an_edited_sidecar_or_memo_changes_nothing(rendered: tuple[Workspace, dict[str, Any]], tmp_path: Path) -> None:
    ws, first = rendered
    cache = tmp_path / "cache-a"
    sidecars = list((cache / "local").glob("*/*.json"))
    assert len(sidecars) == 2
    for sidecar in sidecars:
        doc = json.loads(sidecar.read_text())
        shrink(doc["media"])
        sidecar.write_text(json.dumps(doc))
    memos = list((cache / "probes").glob("*/*.json"))
    assert len(memos) == 2  # the download check's findings, by digest
    for memo in memos:
        doc = json.loads(memo.read_text())
        shrink(doc["checked"]["info"])  # the MAC no longer matches: ignored, checked again
        memo.write_text(json.dumps(doc))
    again = stitched(ws, "stitch", "--force")  # issue 23 item 16: --force encodes everything anew
    assert again["stream_copy"] is False and again["sha256"] == first["sha256"]
    assert (again["segments_encoded"], again["segments_pulled"], again["audio_encoded"]) == (2, 0, True)
    info = probe(ws.final_cut)
    assert (info.width, info.height) == (320, 180)
    for memo in memos:  # rewritten from the bytes themselves
        assert json.loads(memo.read_text())["checked"]["info"]["width"] == 1280


def test_an_edited_remote_record_changes_nothing_and_the_segments_come_from_the_remote(
    rendered: tuple[Workspace, dict[str, Any]], tmp_path: Path
) -> None:
    _, first = rendered
    shared = tmp_path / "shared"
    records = list((shared / "clips" / "local").glob("*.json"))
    assert len(records) == 2
    for record in records:
        doc = json.loads(record.read_text())
        shrink(doc["media"])
        record.write_text(json.dumps(doc))
    assert len(list((shared / "segments").glob("*.json"))) == 3  # two segments and the audio pass
    b = workspace(tmp_path / "b", tmp_path / "cache-b", KLING_RENDER_REMOTE=f"file://{shared}")
    cut = stitched(b, "stitch")
    assert cut["sha256"] == first["sha256"] and cut["stream_copy"] is False
    assert (cut["segments_encoded"], cut["segments_pulled"], cut["audio_encoded"]) == (0, 2, False)


def test_a_remote_blob_of_random_bytes_under_its_own_digest_is_refused(
    rendered: tuple[Workspace, dict[str, Any]], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    record = sorted((shared / "clips" / "local").glob("*.json"))[0]
    doc = json.loads(record.read_text())
    noise = os.urandom(doc["size"])
    digest = hashlib.sha256(noise).hexdigest()
    blob = shared / "blobs" / "sha256" / digest[:2] / f"{digest}.mp4"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(noise)
    doc["sha256"] = digest
    record.write_text(json.dumps(doc))
    c = workspace(tmp_path / "c", tmp_path / "cache-c", KLING_RENDER_REMOTE=f"file://{shared}")
    done = c.cli("stitch", str(c.project))
    assert done.returncode == 1, done.stderr
    assert "is not a valid clip" in done.stderr and "Traceback" not in done.stderr
    assert not any((tmp_path / "cache-c" / "local").glob("*/*.mp4")) or all(
        sha(p) != digest for p in (tmp_path / "cache-c" / "local").glob("*/*.mp4")
    )
    assert not c.final_cut.exists()
