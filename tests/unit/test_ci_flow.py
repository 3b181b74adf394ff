"""The CI workflow as a pipeline would run it: markdown plan, reviewed plan, JSON events, status gates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kling_render.cli import cli

REPO = Path(__file__).resolve().parents[2]
# The local renders here are small animatics (conftest.small_animatics): the pipeline's outcomes are
# the subject, not the pictures.
pytestmark = pytest.mark.usefixtures("small_local")

SMALL = """version: 1
name: small
provider: local
defaults: {model: kling-video-o3-std/image-to-video, duration: 3}
shots:
  - id: one
    prompt: "a mug, {{ mood }}"
    image: images/mug.png
  - id: two
    prompt: "the mug, full"
    image: images/mug-full.png
    transition: {type: fade, duration: 0.5}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
vars: {mood: calm}
"""


@pytest.fixture
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "small"
    (root / "images").mkdir(parents=True)
    for name in ("mug.png", "mug-full.png"):
        shutil.copy(REPO / "projects" / "mug-teaser" / "images" / name, root / "images" / name)
    (root / "project.yaml").write_text(SMALL)
    monkeypatch.delenv("KLING_RENDER_CACHE", raising=False)
    return root / "project.yaml"


def _run(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_markdown_plan_for_a_pull_request(small: Path, runner: CliRunner) -> None:
    code, out, _ = _run(runner, "plan", str(small), "--format", "markdown")
    assert code == 0
    assert "**To render:** 2 shot(s), **$1.0800**" in out  # 2 x 3 s x $0.18
    assert "added 2" in out and "| `one` |" in out
    assert _run(runner, "render", str(small), "--no-stitch")[0] == 0
    small.write_text(
        small.read_text().replace("the mug, full", "the mug, brimming").replace("  - id: one\n", "  - id: uno\n")
    )
    code, out, _ = _run(runner, "plan", str(small), "--format", "markdown")
    assert code == 0
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| `")}
    assert "changed (prompt)" in lines["`two`"] and "| render |" in lines["`two`"]
    assert "added" in lines["`uno`"] and "| cached |" in lines["`uno`"]  # same inputs, new id: cached
    assert "removed" in lines["`one`"]
    assert "changed 1" in out and "removed 1" in out
    assert "**To render:** 1 shot(s), **$0.5400**" in out


def test_reviewed_plan_renders_exactly_what_was_reviewed(small: Path, runner: CliRunner, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    code, out, _ = _run(runner, "plan", str(small), "--only", "two", "--out", str(plan_file), "--json")
    assert code == 0 and json.loads(plan_file.read_text()) == json.loads(out)
    code, _, err = _run(runner, "render", str(small), "--plan", str(plan_file), "--no-stitch")
    assert code == 0, err
    status = json.loads(_run(runner, "status", str(small), "--json")[1])
    assert {s["id"]: s["status"] for s in status["shots"]} == {"one": "pending", "two": "done"}
    # resuming the same reviewed plan after it ran (the lock moved by its own shots) is fine
    assert _run(runner, "render", str(small), "--plan", str(plan_file), "--no-stitch")[0] == 0
    # an edit of the project makes the reviewed plan stale: refuse, write nothing
    small.write_text(small.read_text().replace("the mug, full", "the mug, empty"))
    before = small.with_suffix(".lock").read_text()
    code, _, err = _run(runner, "render", str(small), "--plan", str(plan_file))
    assert code == 2
    assert "stale plan" in err and "project.yaml changed since the plan was made" in err and "two" in err
    assert small.with_suffix(".lock").read_text() == before


def test_reviewed_plan_is_stale_when_the_lock_moves_elsewhere(small: Path, runner: CliRunner, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    assert _run(runner, "plan", str(small), "--only", "two", "--out", str(plan_file))[0] == 0
    assert _run(runner, "render", str(small), "--only", "one", "--no-stitch")[0] == 0  # someone else renders one
    code, _, err = _run(runner, "render", str(small), "--plan", str(plan_file))
    assert code == 2 and "project.lock changed since the plan was made (one)" in err


def test_render_json_events_and_status_gate(small: Path, runner: CliRunner) -> None:
    code, _, _ = _run(runner, "status", str(small), "--check")
    assert code == 1
    code, out, err = _run(runner, "render", str(small), "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0] == {"stream": "kling-render events", "version": 1}
    kinds = [e.get("event") for e in events]
    for kind in ("submitted", "done", "stitched", "finished"):
        assert kind in kinds, kinds
    assert kinds[-1] == "finished" and events[-1]["exit_code"] == 0
    assert {e["shot_id"] for e in events if e.get("event") == "done"} == {"one", "two"}
    stitched = next(e for e in events if e.get("event") == "stitched")
    assert Path(stitched["path"]).is_file() and stitched["frames"] == 132  # 72 + 72 - 12 fade frames
    code, out, _ = _run(runner, "status", str(small), "--json", "--check")
    assert code == 0
    doc = json.loads(out)
    assert doc["counts"] == {"done": 2} and doc["final_cut"]


def test_second_render_submits_nothing(small: Path, runner: CliRunner) -> None:
    assert _run(runner, "render", str(small), "--no-stitch")[0] == 0
    code, out, _ = _run(runner, "render", str(small), "--json", "--no-stitch")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert not [e for e in events if e.get("event") in ("submitting", "submitted")]
    assert events[-1]["spent_usd"] == 0
