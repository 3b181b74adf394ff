"""Generated inputs against the WaveSpeed stand-in (issue 21's "Done when"), counting paid tasks
throughout: an image model declared under `models:` makes a still that feeds two shots, a
continuity chain a -> b -> c, and a shot with two takes. The commands run in this process
(``in_process``); the stand-in is its own process and counts every task."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from e2e_cli import Workspace, ws_env
from e2e_fake import FakeProcess

IMAGE_MODEL = "acme/pix-1"  # served by the stand-in as an image model (--image-model)
pytestmark = pytest.mark.stand_in(latency=0.3, args=("--image-model", IMAGE_MODEL, "--distinct"))

PROJECT = """\
version: 1
name: story
provider: wavespeed
models:
  acme/pix-1:
    title: Acme Pix 1, text-to-image
    endpoint: acme/pix-1
    output: image
    fields:
      prompt: {type: text}
      size: {type: string, default: "640*360"}
    required: [prompt]
    price: {per_image: "0.03", date: "2026-12-07", source: "the stand-in"}
stills:
  - id: hero
    model: acme/pix-1
    prompt: "shot hero: a ceramic mug, studio packshot"
defaults: {model: kling-v3.0-std/image-to-video, duration: 3, sound: false}
shots:
  - id: a
    prompt: "shot a: slow push-in"
    image: {still: hero}
    takes: 2
  - id: b
    prompt: "shot b: coffee pours"
    image: {from: a, frame: last}
  - id: c
    prompt: "shot c: the camera pulls back"
    image: {from: b, frame: last}
  - id: d
    prompt: "shot d: the mug turns"
    image: {still: hero}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""


@pytest.fixture
def ws(tmp_path: Path, fake_process: FakeProcess) -> Workspace:
    root = tmp_path / "story"
    root.mkdir()
    (root / "project.yaml").write_text(PROJECT, encoding="utf-8")
    return Workspace(root, ws_env(fake_process.base_url), in_process=True)


def paid(fake_process: FakeProcess) -> Counter[str]:
    """Tasks created per step, from the prompts (``shot <id>: ...``); a take adds ``#<take>``."""
    counts: Counter[str] = Counter()
    for task in fake_process.stats()["tasks"].values():
        prompt = str(task["body"].get("prompt", ""))
        match = re.match(r"shot (\w+):", prompt)
        counts[match.group(1) if match else "?"] += 1
    return counts


def render(ws: Workspace, *args: str) -> None:
    done = ws.render(*args)
    assert done.returncode == 0, done.stderr


def test_a_still_a_chain_and_takes_pay_each_step_once_and_edits_pay_what_they_change(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    render(ws)
    # the still, a and a#2, b, c, d: one task each
    assert paid(fake_process) == Counter(hero=1, a=2, b=1, c=1, d=1)
    lock = json.loads(ws.project.with_suffix(".lock").read_text())
    assert {"still:hero", "a", "a#2", "b", "c", "d"} <= set(lock["shots"])
    assert ws.final_cut.is_file()
    render(ws)  # nothing changed: nothing is paid
    assert sum(paid(fake_process).values()) == 6

    # Editing the still's prompt re-pays the still, the shots it feeds and their continuity children.
    ws.edit("shot hero: a ceramic mug, studio packshot", "shot hero: a blue ceramic mug, studio packshot")
    render(ws)
    assert paid(fake_process) == Counter(hero=2, a=4, b=2, c=2, d=2)

    # Trimming a's head keeps its last frame: b starts from it still, nothing is paid.
    ws.edit("    takes: 2\n", "    takes: 2\n    trim: {start: 0.5}\n")
    render(ws)
    assert sum(paid(fake_process).values()) == 12
    # Trimming a's tail moves its last frame: b and c are re-paid (c starts from b's new clip), nothing else.
    ws.edit("trim: {start: 0.5}", "trim: {start: 0.5, end: 2.5}")
    render(ws)
    assert paid(fake_process) == Counter(hero=2, a=4, b=3, c=3, d=2)

    # Picking a's second take re-pays only a's continuity children.
    ws.edit("    takes: 2\n", "    takes: 2\n    pick: 2\n")
    render(ws)
    assert paid(fake_process) == Counter(hero=2, a=4, b=4, c=4, d=2)
    render(ws)
    assert sum(paid(fake_process).values()) == 16


def test_until_stills_pays_for_the_stills_alone_then_a_plain_render_pays_for_the_video(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    gate = ws.render("--until", "stills")
    assert gate.returncode == 0, gate.stderr
    assert paid(fake_process) == Counter(hero=1)
    assert "report:" in gate.stderr and (ws.root / "renders" / "project-report.html").is_file()
    assert not (ws.root / "renders" / "final.mp4").exists()
    # status names every step as the plan does: the still (paid, done) and each take (pending)
    doc = ws.status()
    assert [(s["id"], s["status"], s["cost_usd"]) for s in doc["stills"]] == [("still:hero", "done", 0.03)]
    assert {s["id"]: s["status"] for s in doc["shots"]} == dict.fromkeys(["a", "a#2", "b", "c", "d"], "pending")
    assert ws.cli("status", str(ws.project), "--check").returncode == 1
    render(ws)
    assert paid(fake_process) == Counter(hero=1, a=2, b=1, c=1, d=1)
    doc = ws.status()
    assert {s["id"]: (s["status"], s["attempts"]) for s in [*doc["stills"], *doc["shots"]]} == {
        step: ("done", 1) for step in ("still:hero", "a", "a#2", "b", "c", "d")
    }
    assert doc["counts"] == {"done": 6}
    assert ws.cli("status", str(ws.project), "--check").returncode == 0


def test_the_plan_prices_the_stills_stage_and_the_video_stage(ws: Workspace, fake_process: FakeProcess) -> None:
    doc = ws.plan()
    stages = doc["stages"]
    assert stages["stills"]["to_render_cost_usd"] == pytest.approx(0.03)
    # a, a#2, b, c, d: five 3 s v3.0 std clips at $0.084/s, b and c counted though waiting for a's clip
    assert stages["video"]["to_render_cost_usd"] == pytest.approx(5 * 0.252)
    waiting = {s["id"]: s for s in doc["shots"] if s.get("waits_for")}
    assert set(waiting) == {"a", "a#2", "b", "c", "d"}
    assert fake_process.stats()["tasks"] == {}  # planning pays nothing
    shutil.rmtree(ws.root / ".kling-render", ignore_errors=True)


def test_a_machine_that_only_stitches_records_every_step_as_the_render_did(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    """The finish machine of CI's shards records clips it did not make: every take (the picked
    one and the others), the still, and the continuity shots keyed by their upstream's digest,
    exactly as the render that made them recorded them."""
    ws.edit("    takes: 2\n", "    takes: 2\n    pick: 2\n")
    render(ws)
    lock_path = ws.project.with_suffix(".lock")
    made = json.loads(lock_path.read_text())["shots"]
    lock_path.unlink()
    done = ws.cli("stitch", str(ws.project), "--force")
    assert done.returncode == 0, done.stderr
    again = json.loads(lock_path.read_text())["shots"]
    assert set(again) == set(made) == {"still:hero", "a", "a#2", "b", "c", "d"}
    for name, entry in made.items():
        for field in ("key", "output_sha256", "task_id", "fields", "prompt", "cost_usd"):
            assert again[name].get(field) == entry.get(field), (name, field)
    assert sum(paid(fake_process).values()) == 6
