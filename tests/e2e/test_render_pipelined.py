"""The pipelined stitch (issue 20 item 4) through the CLI's commands (run in this process,
``in_process``) and the WaveSpeed stand-in (its own process): segments are encoded while the
provider works on the later shots, the stitch after the run encodes only what is missing, the cut
is the one `stitch --force` makes from the same cache, and a segment encode that fails changes
nothing about what is paid."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import EXAMPLE, Workspace, ws_env
from e2e_fake import FakeProcess

from kling_render.fsutil import sha256_file

pytestmark = pytest.mark.stand_in(latency=0.3, args=("--distinct",))  # every task its own clip

SHOTS = ("a", "b", "c", "d", "e")
FADES = ("b", "d")  # b and d fade in: a's and c's segments read the next clip's head; e is a plain cut


def project() -> str:
    lines = [
        "version: 1",
        "name: pipelined",
        "provider: wavespeed",
        "defaults: {model: kling-v3.0-std/image-to-video, image: images/mug.png, duration: 3, sound: false}",
        "output: {path: renders/final.mp4, width: 192, height: 108, fps: 24}",
        "shots:",
    ]
    for shot in SHOTS:
        fade = ", transition: {type: fade, duration: 0.5}" if shot in FADES else ""
        lines.append(f'  - {{id: {shot}, prompt: "shot {shot}: a mug, take {shot}"{fade}}}')
    return "\n".join(lines) + "\n"


def workspace(root: Path, fake: FakeProcess) -> Workspace:
    root.mkdir(parents=True)
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(project())
    return Workspace(root, ws_env(fake.base_url), in_process=True)


def events(done: Any) -> list[dict[str, Any]]:
    found = []
    for line in done.stdout.splitlines():
        doc = json.loads(line)
        if "event" in doc:
            found.append(doc)
    return found


def test_segments_are_encoded_while_the_last_clip_is_made_and_the_stitch_encodes_only_it(
    tmp_path: Path, fake_process: FakeProcess
) -> None:
    fake = fake_process  # the stand-in as its own process: the CLI runs as one too
    ws = workspace(tmp_path / "ws", fake)
    fake.fault("slow", "/api/v3/kwaivgi/", count=1, latency=8.0, body_contains="shot e:")
    done = ws.render("--json", "--concurrency", "1", timeout=300)
    assert done.returncode == 0, done.stderr
    found = events(done)
    assert fake.submits_by_shot() == Counter(dict.fromkeys(SHOTS, 1))  # one paid task per shot

    last = next(n for n, e in enumerate(found) if e["event"] == "done" and e["shot_id"] == "e")
    early = [e for e in found[:last] if e["event"] == "segment"]
    # Every segment but e's own was encoded before e's clip landed (d's is a plain cut: it reads d only).
    assert sorted(e["segment_of"] for e in early) == ["a", "b", "c", "d"]
    assert {e["how"] for e in early} == {"encoded"}
    assert not [e for e in found[last:] if e["event"] == "segment"]
    stitched = next(e for e in found if e["event"] == "stitched")
    assert (stitched["segments"], stitched["segments_encoded"]) == (5, 1)  # e's, and only it
    assert stitched["sha256"] == sha256_file(ws.final_cut)

    forced = ws.cli("stitch", str(ws.project), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    doc = json.loads(forced.stdout)
    assert doc["segments_encoded"] == 5
    assert doc["sha256"] == stitched["sha256"]  # pipelined or not, the same bytes
    assert fake.submits_by_shot() == Counter(dict.fromkeys(SHOTS, 1))

    # A cut that is up to date has nothing made ahead, even with its segments swept away.
    shutil.rmtree(ws.cache_dir / "segments")
    again = events(ws.render("--json"))
    assert [e for e in again if e["event"] == "segment"] == []
    assert next(e for e in again if e["event"] == "stitched")["up_to_date"] is True


def test_a_segment_encode_that_fails_during_the_run_pays_nothing_more(
    tmp_path: Path, fake_process: FakeProcess
) -> None:
    """A clip whose bitstream is rotten passes the download check (structural); its segment encode,
    run ahead, fails and is dropped; every shot is done with one paid task each, and the stitch
    after the run judges the clip exactly as without the pipeline (named and quarantined)."""
    fake = fake_process
    ws = workspace(tmp_path / "ws", fake)
    fake.fault("corrupt", "/outputs/", count=1)  # a's clip: the first downloaded
    done = ws.render("--json", "--concurrency", "1", timeout=300)
    found = events(done)
    assert fake.submits_by_shot() == Counter(dict.fromkeys(SHOTS, 1))
    dropped = [e for e in found if e["event"] == "segment" and e["how"] == "failed"]
    assert [e["segment_of"] for e in dropped] == ["a"] and "ffmpeg failed" in dropped[0]["message"]
    made = [e["segment_of"] for e in found if e["event"] == "segment" and e["how"] == "encoded"]
    assert sorted(made) == ["b", "c", "d"]  # the others went on (e's was left to the stitch)
    assert sorted(e["shot_id"] for e in found if e["event"] == "done") == list(SHOTS)
    finish = next(e for e in found if e["event"] == "finish")
    assert finish["message"].startswith("5 done")
    assert [e["shot_id"] for e in found if e["event"] == "quarantined"] == ["a"]  # by the stitch
    assert done.returncode == 1 and "a: its clip is damaged" in done.stderr
    assert not ws.final_cut.exists()
    ledger = json.loads(ws.state_path.read_text())
    assert {sid: s["status"] for sid, s in ledger["shots"].items()} == dict.fromkeys(SHOTS, "done")
