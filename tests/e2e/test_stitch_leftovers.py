"""What a stitch leaves when it is edited or killed, through the real CLI: a hand-edited stitch
manifest means "stitch again" (issue 23 item 27), a killed stitch's temporary cut is removed by the
next one even when that one finds the cut up to date (item 29), and a local render keeps no second
copy of its clips (item 17)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import EXAMPLE, Workspace, base_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_render.records import manifest

PROJECT = """\
version: 1
name: left
provider: local
defaults: {model: kling-video-o3-std/image-to-video, duration: 3}
shots:
  - {id: one, prompt: "a mug", image: images/mug.png}
  - {id: two, prompt: "a mug, later", image: images/mug.png, duration: 4, transition: {type: fade, duration: 0.5}}
output: {path: renders/final.mp4, width: 160, height: 90, fps: 24}
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture
def ws(tmp_path: Path, clips: Path) -> Workspace:
    root = tmp_path / "left"
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(PROJECT)
    ws = Workspace(root, base_env(KLING_RENDER_CACHE=str(clips)))
    done = ws.render()
    assert done.returncode == 0, done.stderr
    return ws


def manifest_of(ws: Workspace) -> Path:
    found = list((ws.root / ".kling-render").rglob("stitch.json"))
    assert len(found) == 1
    return found[0]


# -- item 27: a hand-edited manifest -----------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def edits(doc: dict[str, Any]) -> dict[str, str]:
    """Hand edits of a real manifest, as text (some are not JSON any more)."""
    text = json.dumps(doc)
    cut = doc["cut"]
    return {
        "huge frames": text.replace(f'"frames": {cut["frames"]}', '"frames": ' + "9" * 5000),
        "big frames": text.replace(f'"frames": {cut["frames"]}', '"frames": ' + "9" * 400),
        "infinite duration": text.replace(f'"duration": {cut["duration"]}', '"duration": 1e999'),
        "nan duration": text.replace(f'"duration": {cut["duration"]}', '"duration": NaN'),
        "deep nesting": text.replace('"clips": [', f'"clips": [{DEEP}, ', 1),
        "fps as text": text.replace(f'"fps": {cut["fps"]}', '"fps": "24"'),
        "zero fps": text.replace(f'"fps": {cut["fps"]}', '"fps": 0'),
        "cut is a list": json.dumps({**doc, "cut": [1, 2]}),
        "inputs is a string": json.dumps({**doc, "inputs": "x"}),
        "clips are numbers": json.dumps({**doc, "inputs": {**doc["inputs"], "clips": [1, 2]}}),
        "ffmpeg is a list": json.dumps({**doc, "inputs": {**doc["inputs"], "ffmpeg": ["a"]}}),
        "version true": json.dumps({**doc, "version": True}),
        "not json": text[: len(text) // 2],
        "null": "null",
    }


def test_a_hand_edited_manifest_means_stitch_again_for_every_command(ws: Workspace) -> None:
    path = manifest_of(ws)
    doc = json.loads(path.read_text())
    for name, text in edits(doc).items():
        path.write_text(text)
        report = ws.cli("report", str(ws.project))
        assert report.returncode == 0 and "Traceback" not in report.stderr, (name, report.stderr)
        status = ws.cli("status", str(ws.project), "--json")
        assert status.returncode == 0, (name, status.stderr)
        command = ("stitch",) if name.endswith(("frames", "duration", "nesting")) else ("render",)
        done = ws.cli(*command, str(ws.project))
        assert done.returncode == 0, (name, done.stderr)
        assert "internal error" not in done.stderr and "up to date" not in done.stderr, (name, done.stderr)
        assert manifest.read(path) is not None, name  # written anew by the stitch
    assert "up to date" in ws.cli("stitch", str(ws.project)).stderr


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_change_to_any_value_reads_as_a_manifest_or_none_and_compares(tmp_path: Path, data: st.DataObject) -> None:
    """Whatever one value of a real-shaped manifest becomes, read() gives a Manifest or None, and
    compare() of what it gives never raises."""
    inputs = manifest.inputs_doc(
        clips=[manifest.ClipInput("a", "0" * 64, 0.25, None, "fade", 0.5)],
        output={"path": "renders/x.mp4", "width": 320, "height": 180, "fps": 24, "fit": "contain"},
        audio={"music": "a.mp3", "music_sha256": None, "music_volume": 0.3, "duck": True, "normalize": False},
        provider="local", ffmpeg_version="9", ffmpeg_identity="x", version="0.1.0",
    )  # fmt: skip
    doc: Any = {"version": 1, "inputs": inputs, "cut": manifest.CutRecord("1" * 64, 10, 24, 24, 1.0, False).to_json(),
                "stitched_at": "t"}  # fmt: skip
    node = doc
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        if not isinstance(node[key], dict | list) or not node[key]:
            break
        node = node[key]
    if isinstance(node, dict) and node:
        node[data.draw(st.sampled_from(sorted(node)))] = data.draw(JSON)
    elif isinstance(node, list) and node:
        node[0] = data.draw(JSON)
    path = tmp_path / "stitch.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    found = manifest.read(path)
    if found is not None:
        manifest.compare(found.inputs, inputs)
        assert isinstance(found.cut.frames, int)


# -- item 29: a killed stitch's temporary cut ----------------------------------------------------------


def test_a_killed_stitch_leaves_nothing_the_next_one_does_not_remove(ws: Workspace) -> None:
    """kill -9 of `stitch --force` while it writes its temporary cut beside the final one; the next
    stitch finds the cut up to date (it writes nothing) and still removes the leftovers that are
    provably the dead stitch's: its temporary cut and its work directory."""
    renders = ws.root / "renders"
    cmd = [sys.executable, "-m", "kling_render", "stitch", str(ws.project), "--force", "--json"]
    proc = subprocess.Popen(cmd, env=ws.env, cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        temps: list[Path] = []
        while time.monotonic() < deadline and not temps:
            temps = [p for p in renders.iterdir() if p.name.startswith(".final.mp4.")]
            time.sleep(0.01)
        assert temps, "the stitch never started its temporary cut"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [p for p in renders.iterdir() if p.name.startswith(".final.mp4.")], "killed too late to test"
    work = list(Path(tempfile.gettempdir()).glob(f"kling-stitch-{proc.pid}-*"))
    assert work, "the killed stitch had no work directory"
    done = ws.cli("stitch", str(ws.project))
    assert done.returncode == 0 and "up to date" in done.stderr, done.stderr
    assert sorted(p.name for p in renders.iterdir()) == ["final.mp4"]
    assert not any(p.exists() for p in work)


def test_a_temporary_cut_of_a_live_process_is_left_alone(ws: Workspace) -> None:
    """Only what a dead process left goes: another stitch's temporary cut (here: ours, alive) stays."""
    renders = ws.root / "renders"
    live = renders / f".final.mp4.{os.getpid()}.abcd1234.mp4.tmp"
    live.write_bytes(b"being written")
    done = ws.cli("stitch", str(ws.project))
    assert done.returncode == 0, done.stderr
    assert live.exists()
    live.unlink()


# -- item 17: no second copy of local clips ------------------------------------------------------------


def test_a_local_render_keeps_one_copy_of_each_clip(ws: Workspace, clips: Path) -> None:
    work = clips / "local-work"
    assert not list(work.glob("*.mp4")), "the work directory kept copies of the cached clips"
    assert len(list((clips / "local").glob("*/*.mp4"))) == 2
