"""The README's rows example (projects/mug-catalog) renders offline with the local provider: three
cuts at renders/<sku>.mp4 from seven clips (the intro is one clip shared by the three rows), and
an edit of one row re-generates that row's shot only. The first plan is the real CLI; the rest runs
in this process (``in_process``) with small animatics (conftest.small_animatics)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from e2e_cli import REPO, Workspace, base_env, decodes

CATALOG = REPO / "projects" / "mug-catalog"
KEYS = ("mug-blue", "mug-red", "mug-green")


@pytest.mark.usefixtures("small_local")
def test_the_catalog_example_renders_offline(tmp_path: Path) -> None:
    root = tmp_path / "mug-catalog"
    shutil.copytree(CATALOG, root, ignore=shutil.ignore_patterns("renders", ".kling-render", "*.lock"))
    ws = Workspace(root, base_env())
    plan = ws.plan()
    assert plan["rows"]["clips"] == 7 and [r["key"] for r in plan["rows"]["rows"]] == list(KEYS)
    ws.in_process = True
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert "2 cached, 7 done" in done.stderr  # the shared intro: made once, used by the other two rows
    for key in KEYS:
        assert decodes(root / "renders" / f"{key}.mp4").duration == pytest.approx(3 + 3 + 3 - 0.5 - 0.5, abs=0.05)

    csv = root / "data" / "products.csv"
    csv.write_text(csv.read_text().replace("tea time", "tea for two"))
    changed = [s["id"] for s in ws.plan()["shots"] if s["change"] != "unchanged"]
    assert changed == ["mug-red/outro"]
    again = ws.render()
    assert again.returncode == 0, again.stderr
    assert "8 cached, 1 done" in again.stderr
    # The other rows' cuts are not re-encoded (the local animatic does not draw the prompt, so
    # mug-red's new clip has the old bytes and its cut may be up to date too).
    assert "cut mug-blue (up to date)" in again.stderr and "cut mug-green (up to date)" in again.stderr
    lock = json.loads((root / "project.lock").read_text())
    assert lock["shots"]["mug-red/outro"]["prompt"] == "steam rises from the red ceramic mug: tea for two"
