"""Issue 15 item 1: a rows: project's plan for people (table and Markdown) and machines (JSON)
shows the cost per row, the shared shots priced once, and the total; cell text from the table
(formula-ish, Markdown, multi-line) stays text: it never breaks the pull-request comment."""

from __future__ import annotations

import json
import re
from pathlib import Path

from e2e_cli import Workspace, ws_env
from fake_wavespeed import FakeWaveSpeed
from test_rows_validate import PROJECT, workspace

CSV3 = "sku,name,tagline\nmug-01,Blue Mug,coffee\nmug-02,Red Mug,tea\nmug-03,Green Mug,cocoa\n"
CLIP = 0.252  # kling-v3.0-std/image-to-video, 3 s, no sound


def plan_text(ws: Workspace, *args: str) -> str:
    done = ws.cli("plan", str(ws.project), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cost_per_row_the_shared_shot_once_and_the_total_in_every_format(tmp_path: Path) -> None:
    ws = workspace(tmp_path, CSV3)
    doc = json.loads(plan_text(ws, "--json"))
    assert doc["rows"]["clips"] == 7  # 1 shared intro + 3 rows x 2 own shots
    assert doc["rows"]["shared"]["cost_usd"] == round(CLIP, 4)
    assert [(r["key"], r["cost_usd"]) for r in doc["rows"]["rows"]] == [
        ("mug-01", round(2 * CLIP, 4)),
        ("mug-02", round(2 * CLIP, 4)),
        ("mug-03", round(2 * CLIP, 4)),
    ]
    assert doc["total_cost_usd"] == round(7 * CLIP, 4)

    table = plan_text(ws)
    assert "3 row(s) × 3 shots from data/products.csv (key: sku); 7 distinct clip(s)" in table
    intro = r"^intro\s+kling-v3\.0-std/image-to-video\s+3s\s+no\s+\$0\.2520\s+render\s+3: (.*)$"
    shared = re.findall(intro, table, re.M)
    assert shared == ["mug-01, mug-02, mug-03"]  # priced once, on one line
    for n, key in enumerate(["mug-01", "mug-02", "mug-03"], start=2):
        assert re.search(rf"^{key}\s+{n}\s+2\s+\$0\.5040\s+\$0\.5040\s+added 3\s+renders/{key}\.mp4$", table, re.M)
    assert "total $1.7640 = rows $1.5120 + shared $0.2520; to render 7 clip(s) $1.7640; cached 0" in table

    md = plan_text(ws, "--format", "markdown")
    assert "**Project cost:** $1.7640 = rows $1.5120 + shared $0.2520" in md
    for key in ["mug-01", "mug-02", "mug-03"]:
        assert f"| `{key}` | 2 | $0.5040 | $0.5040 | added 3 | `renders/{key}.mp4` |" in md
    assert md.count("| `intro` | kling-v3.0-std/image-to-video | 3s | no | $0.2520 | render |") == 1

    chosen = json.loads(plan_text(ws, "--row", "mug-02", "--json"))  # one row: the shared shot is its own cost
    assert [r["key"] for r in chosen["rows"]["rows"]] == ["mug-02"]
    assert chosen["total_cost_usd"] == round(3 * CLIP, 4)


def _fenced(md: str) -> list[list[str]]:
    """The lines inside each fenced block of ``md`` (a fence closes only with its own length)."""
    blocks: list[list[str]] = []
    fence = None
    for line in md.splitlines():
        if fence is None:
            match = re.match(r"(`{3,})diff$", line)
            if match:
                fence = match.group(1)
                blocks.append([])
        elif re.fullmatch(rf"{fence}`*", line):
            fence = None
        else:
            blocks[-1].append(line)
    assert fence is None
    return blocks


def test_formula_and_markdown_cells_stay_text(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> None:
    """Cells a spreadsheet would run (=, +, -, @) or Markdown would read (|, backticks, a fence, an
    HTML tag over several lines) are sent as written and shown inside their own cell or block."""
    hostile = '"=HYPERLINK(""http://x"",""y"")"'
    csv = f"sku,name,tagline\nmug-01,{hostile},@SUM(A1)\nmug-02,+cmd|' /C calc'!A0,-2+3\n"
    project = PROJECT.replace('"renders/{{ row.sku }}.mp4"', '"renders/{{ row.tagline }}-{{ row.sku }}.mp4"')
    ws = workspace(tmp_path, csv, project=project.replace("rows:", "provider: wavespeed\nrows:"))
    ws.env.update(ws_env(fake_wavespeed.base_url))  # the stand-in's tiny clips: a lock to differ from
    assert ws.render("--no-stitch").returncode == 0
    prompts = {sid: s["prompt"] for sid, s in json.loads(ws.project.with_suffix(".lock").read_text())["shots"].items()}
    assert prompts["mug-01/hero"] == 'shot hero: the =HYPERLINK("http://x","y")'
    assert prompts["mug-02/hero"] == "shot hero: the +cmd|' /C calc'!A0"
    assert prompts["mug-01/outro"] == "shot outro: @SUM(A1)"

    edited = csv.replace("+cmd|' /C calc'!A0", '"a ```\n</details>\n# `title` | x"').replace("-2+3", "a|b`c")
    (ws.root / "data" / "products.csv").write_text(edited)
    md = plan_text(ws, "--format", "markdown")
    assert [b for b in _fenced(md)] == [
        ["- shot hero: the +cmd|' /C calc'!A0", "+ shot hero: the a ```", "+ </details>", "+ # `title` | x"],
        ["- shot outro: -2+3", "+ shot outro: a|b`c"],
    ]
    assert md.count("</details>") == 2  # the table's own, and the one inside the diff block
    # A cut path made from a cell keeps its | and backticks inside its table cell.
    cut = next(line for line in md.splitlines() if line.startswith("| `mug-02` |"))
    assert cut.endswith("| ``renders/a\\|b`c-mug-02.mp4`` |"), cut
    assert len(re.findall(r"(?<!\\)\|", cut)) == 7  # the row's six cells, bounded by seven pipes

    table = plan_text(ws)
    assert "mug-02/hero: prompt changed\n  - shot hero: the +cmd|' /C calc'!A0\n  + shot hero: the a ```\n" in table
    assert "  + </details>\n  + # `title` | x\n" in table
