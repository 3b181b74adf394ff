"""Issue 13, items 2-4 through the CLI: the stitch is skipped when nothing changed, the plan says
what an edit will do, and the report says whether the cut on disk is the project's.

The project is rendered once per module (local provider, music, a fade) and each test works on a
copy of it; the commands run in this process (``in_process``), except in the first test, which
runs the real CLI."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import small_animatics
from e2e_cli import EXAMPLE, Workspace, base_env

# Local clips rendered by a test (an edited shot) are small too: the cut's rules are the subject.
pytestmark = pytest.mark.usefixtures("small_local")

PROJECT = """\
version: 1
name: inc
provider: local
budget: {max_usd: 5}
defaults: {model: kling-video-o3-std/image-to-video, duration: 3}
shots:
  - id: one
    prompt: "a mug on a table"
    image: images/mug.png
  - id: two
    prompt: "the mug, full"
    image: images/mug.png
    end_image: images/mug-full.png
    sound: true
    transition: {type: fade, duration: 0.5}
    trim: {start: 0.25}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
audio: {music: audio/bed.mp3, music_volume: 0.4, duck: true, normalize: true}
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def identity(path: Path) -> tuple[int, int, str]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, sha(path)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The project rendered once, its clips in a cache outside it (shared by every copy)."""
    clips = tmp_path_factory.mktemp("clips")
    root = tmp_path_factory.mktemp("rendered") / "inc"
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    shutil.copytree(EXAMPLE / "audio", root / "audio")
    (root / "project.yaml").write_text(PROJECT)
    ws = Workspace(root, base_env(KLING_RENDER_CACHE=str(clips)), in_process=True)
    with small_animatics():  # the clips' pictures are no subject here
        done = ws.render()
    assert done.returncode == 0, done.stderr
    assert "final cut: " in done.stderr
    return ws


@pytest.fixture
def ws(tmp_path: Path, rendered: Workspace) -> Workspace:
    """A copy of the rendered project (files, state, lock, cut and stitch record; times kept)."""
    root = tmp_path / "inc"
    shutil.copytree(rendered.root, root)
    return Workspace(root, dict(rendered.env), in_process=True)


def lock(ws: Workspace) -> dict[str, object]:
    doc: dict[str, object] = json.loads(ws.project.with_suffix(".lock").read_text())
    return doc


def events(stdout: str) -> list[dict[str, object]]:
    """The events of ``render --json`` (after its version header line)."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines[0]["version"] == 1
    return lines[1:]


# -- item 2: incremental stitch ----------------------------------------------------------------------


def test_nothing_changed_leaves_the_cut_untouched(ws: Workspace) -> None:
    ws.in_process = False  # the real CLI: exit codes, and stdout that is only JSON events
    before = identity(ws.final_cut)
    again = ws.render()
    assert again.returncode == 0, again.stderr
    assert f"final cut up to date: {ws.final_cut}" in again.stderr
    assert identity(ws.final_cut) == before  # same inode, same mtime: not even rewritten
    stitch = ws.cli("stitch", str(ws.project))
    assert stitch.returncode == 0 and "final cut up to date" in stitch.stderr
    as_json = ws.cli("stitch", str(ws.project), "--json")
    doc = json.loads(as_json.stdout)
    assert doc["up_to_date"] is True and doc["sha256"] == before[2] and doc["frames"] == 126  # 3 + 2.75 - 0.5 s
    lines = events(ws.render("--json").stdout)
    stitched = [e for e in lines if e["event"] == "stitched"]
    assert len(stitched) == 1 and stitched[0]["up_to_date"] is True and stitched[0]["frames"] == 126
    assert lines[-1]["final_cut_up_to_date"] is True
    assert identity(ws.final_cut) == before


def test_force_and_a_damaged_cut_stitch_again(ws: Workspace) -> None:
    reference = sha(ws.final_cut)
    inode = ws.final_cut.stat().st_ino
    forced = ws.cli("stitch", str(ws.project), "--force")
    assert forced.returncode == 0 and "final cut: " in forced.stderr and "up to date" not in forced.stderr
    assert ws.final_cut.stat().st_ino != inode and sha(ws.final_cut) == reference  # renamed in, same bytes
    # A cut damaged where it lies (as a crash could leave it, since it is not fsynced): same size
    data = bytearray(ws.final_cut.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ws.final_cut.write_bytes(bytes(data))
    repaired = ws.render()
    assert repaired.returncode == 0 and "up to date" not in repaired.stderr
    assert sha(ws.final_cut) == reference
    ws.final_cut.write_bytes(ws.final_cut.read_bytes()[:1000])  # truncated
    assert "up to date" not in ws.render().stderr and sha(ws.final_cut) == reference
    (ws.root / ".kling-render" / "project.yaml" / "stitch.json").unlink()  # no record: no skip
    assert "up to date" not in ws.render().stderr and sha(ws.final_cut) == reference
    assert "final cut up to date" in ws.render().stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("trim: {start: 0.25}", "trim: {start: 0.5}"),
        ("{type: fade, duration: 0.5}", "{type: wipeleft, duration: 0.5}"),
        ("fps: 24}", "fps: 25}"),
        ("music_volume: 0.4", "music_volume: 0.5"),
    ],
)
def test_a_cut_setting_edit_stitches_again(ws: Workspace, old: str, new: str) -> None:
    before = sha(ws.final_cut)
    ws.edit(old, new)
    done = ws.render()
    assert done.returncode == 0 and "up to date" not in done.stderr, done.stderr
    assert sha(ws.final_cut) != before
    assert "final cut up to date" in ws.render().stderr


def test_new_music_bytes_under_the_same_name_stitch_again(ws: Workspace) -> None:
    before = sha(ws.final_cut)
    music = ws.root / "audio" / "bed.mp3"
    music.write_bytes(music.read_bytes()[: music.stat().st_size * 2 // 3])  # a shorter bed, same path
    done = ws.render()
    assert done.returncode == 0 and "up to date" not in done.stderr, done.stderr
    assert sha(ws.final_cut) != before


# -- item 3: a plan that tells the truth --------------------------------------------------------------


def test_plan_says_re_stitch_for_cut_only_edits(ws: Workspace) -> None:
    assert {s["change"] for s in ws.plan()["shots"]} == {"unchanged"}
    ws.edit("trim: {start: 0.25}", "trim: {start: 0.5}")
    ws.edit("fps: 24}", "fps: 30}")
    plan = ws.plan()
    assert [(s["id"], s["change"], s["changed_fields"]) for s in plan["shots"]] == [
        ("one", "unchanged", []),
        ("two", "re-stitch", ["trim"]),
    ]
    assert plan["restitch"] == ["output"] and plan["counts"]["re-stitch"] == 1
    table = ws.cli("plan", str(ws.project)).stdout
    assert re.search(r"^two .* re-stitch: trim$", table, re.M), table
    assert "final cut: re-stitch (output changed since the last cut)" in table
    markdown = ws.cli("plan", str(ws.project), "--format", "markdown").stdout
    assert "| re-stitch: trim |" in markdown and "**Final cut:** re-stitch (output" in markdown
    assert ws.render().returncode == 0
    plan = ws.plan()
    assert {s["change"] for s in plan["shots"]} == {"unchanged"} and plan["restitch"] == []


def test_prompt_change_shows_old_and_new_text(ws: Workspace) -> None:
    entries = lock(ws)["shots"]
    assert isinstance(entries, dict) and entries["one"]["prompt"] == "a mug on a table"
    ws.edit("a mug on a table", "a mug on a walnut desk")
    plan = ws.plan()
    assert plan["shots"][0]["prompt_change"] == {"old": "a mug on a table", "new": "a mug on a walnut desk"}
    assert "prompt_change" not in plan["shots"][1]
    table = ws.cli("plan", str(ws.project)).stdout
    assert "one: prompt changed\n  - a mug on a table\n  + a mug on a walnut desk" in table
    markdown = ws.cli("plan", str(ws.project), "--format", "markdown").stdout
    assert "`one` prompt:\n```diff\n- a mug on a table\n+ a mug on a walnut desk\n```" in markdown


def test_plan_over_budget_says_so_everywhere(ws: Workspace) -> None:
    ws.edit("provider: local", "provider: wavespeed")  # plan needs no key; wavespeed clips are not cached
    plan = ws.plan()
    assert plan["to_render_cost_usd"] == pytest.approx(0.54 + 0.72)  # 3 s x 0.18, x 4/3 with sound
    assert plan["budget_usd"] == 5 and plan["over_budget"] is False
    over = ws.plan("--max-cost", "1")
    assert over["budget_usd"] == 1 and over["over_budget"] is True
    table = ws.cli("plan", str(ws.project), "--max-cost", "1").stdout
    assert "OVER BUDGET: to render $1.2600 > budget $1.0000; render would refuse to start (exit 3)" in table
    markdown = ws.cli("plan", str(ws.project), "--max-cost", "1", "--format", "markdown").stdout
    assert "> **OVER BUDGET: to render $1.2600 > budget $1.0000" in markdown
    fits = ws.cli("plan", str(ws.project)).stdout
    assert "budget $5.0000: to render $1.2600 fits" in fits and "OVER" not in fits
    refused = ws.render("--max-cost", "1", "--provider", "wavespeed", env=base_env(WAVESPEED_API_KEY="x"))
    assert refused.returncode == 3  # what the plan said
    local = ws.plan("--provider", "local", "--max-cost", "0.01")
    assert local["over_budget"] is False  # animatics are free: the budget does not apply


def test_markdown_change_column_agrees_with_the_counts(ws: Workspace) -> None:
    text = ws.project.read_text()
    text = text.replace("a mug on a table", "a mug on a shelf")  # one: changed
    text = text.replace("trim: {start: 0.25}", "trim: {start: 0.5}")  # two: re-stitched
    text = text.replace("output:", "  - id: three\n    prompt: a third\n    image: images/mug.png\noutput:")
    ws.project.write_text(text)
    markdown = ws.cli("plan", str(ws.project), "--format", "markdown").stdout
    column = [row.split("|")[7].strip() for row in markdown.splitlines() if row.startswith("| `")]
    words = [cell.split(" ")[0].rstrip(":") for cell in column]
    counts_line = next(line for line in markdown.splitlines() if line.startswith("**vs lock:**"))
    counts = {k: int(n) for k, n in re.findall(r"([a-z-]+) (\d+)", counts_line)}
    assert counts == {w: words.count(w) for w in set(words)}, (counts_line, column)
    assert counts == {"changed": 1, "re-stitch": 1, "added": 1}


def test_full_render_drops_removed_shots_from_the_lock(ws: Workspace) -> None:
    text = ws.project.read_text()
    start = text.index("  - id: two")
    end = text.index("output:")
    ws.project.write_text(text[:start] + text[end:])  # shot two removed
    assert ws.plan()["removed"] == ["two"]
    partial = ws.render("--only", "one")
    assert partial.returncode == 0, partial.stderr
    assert set(lock(ws)["shots"]) == {"one", "two"}  # type: ignore[arg-type]
    full = ws.render("--json")
    assert full.returncode == 0
    pruned = [e for e in events(full.stdout) if e["event"] == "lock-pruned"]
    assert pruned and pruned[0]["removed"] == ["two"]
    assert set(lock(ws)["shots"]) == {"one"}  # type: ignore[arg-type]
    assert ws.plan()["removed"] == []


# -- item 4: a report that can be trusted -------------------------------------------------------------


def report_text(ws: Workspace, *args: str) -> str:
    done = ws.cli("report", str(ws.project), *args)
    assert done.returncode == 0, done.stderr
    return (ws.root / "renders" / "project-report.html").read_text()


def test_report_flags_a_stale_cut_and_gives_its_real_length(ws: Workspace) -> None:
    page = report_text(ws)
    assert 'data-cut="current"' in page and "5.25 s · 126 frames @ 24 fps" in page
    assert "generated" in page and "6 s of clips" in page  # what was generated is not the cut's length
    ws.edit("trim: {start: 0.25}", "trim: {start: 1}")
    page = report_text(ws)
    assert 'data-cut="stale"' in page and "trim changed: two" in page
    assert "5.25 s · 126 frames" in page  # still the length of the file on disk
    assert ws.cli("stitch", str(ws.project)).returncode == 0
    page = report_text(ws)
    assert 'data-cut="current"' in page and "4.50 s · 108 frames @ 24 fps" in page


def test_report_flags_a_cut_from_another_provider(ws: Workspace) -> None:
    ws.edit("provider: local", "provider: wavespeed")  # the cut on disk is the local preview
    page = report_text(ws)
    assert 'data-cut="stale"' in page and "it was made from local clips, not wavespeed" in page
    assert 'data-cut="current"' in report_text(ws, "--provider", "local")


def test_report_of_an_unrecorded_cut_probes_its_length(ws: Workspace) -> None:
    (ws.root / ".kling-render" / "project.yaml" / "stitch.json").unlink()
    page = report_text(ws)
    assert 'data-cut="unverified"' in page and "5.25 s · 126 frames @ 24 fps (probed)" in page


def test_report_labels_url_images_as_placeholders(ws: Workspace) -> None:
    ws.edit("    image: images/mug.png\n  - id: two", "    image: https://example.com/mug.png\n  - id: two")
    done = ws.render()
    assert done.returncode == 0, done.stderr  # offline: the URL is never fetched
    page = report_text(ws)
    card = page[page.index('data-shot="one"') : page.index('data-shot="two"')]
    assert "placeholder: image is a URL" in card
    assert "placeholder" not in page[page.index('data-shot="two"') :]
