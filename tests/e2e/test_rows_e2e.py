"""Issue 15 item 1, ``rows:``: one cut per row, against the stand-in WaveSpeed server in its own
process, counting the tasks it created (each is paid at submit). The keys across processes
(PYTHONHASHSEED) run the real CLI; the other tests, the issue's "Done when" too, run the commands in
this process (``in_process``).

The project: one shot that does not use the row (``intro``, shared by every cut), two that do
(``hero`` uses the name, ``outro`` the tagline). Every prompt starts ``shot <id>`` and the
row-dependent ones name the row's product, so each task says which row and shot it was for.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from e2e_cli import Workspace, decodes, small_workspace, ws_env
from e2e_fake import FakeProcess

PROJECT = """\
version: 1
name: catalog
provider: wavespeed
rows: {from: data/products.csv, key: sku}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3, sound: false}
shots:
  - id: intro
    prompt: "shot intro: our studio in soft light"
    image: images/mug.png
  - id: hero
    prompt: "shot hero: the {{ row.name }} on a walnut table"
    image: images/mug.png
  - id: outro
    prompt: "shot outro: {{ row.tagline }}"
    image: images/mug-side.png
    transition: {type: fade, duration: 0.5}
output: {path: "renders/{{ row.sku }}.mp4", width: 320, height: 180, fps: 24}
"""
CSV = """\
sku,name,tagline
mug-01,Blue Mug,morning coffee
mug-02,Red Mug,"tea, with milk"
mug-03,Green Mug,cocoa by the fire
mug-04,White Mug,espresso
"""
KEYS = ("mug-01", "mug-02", "mug-03", "mug-04")
CUT_SECONDS = 3 + 3 + 3 - 0.5


def rows_workspace(
    root: Path, env: dict[str, str], csv: str = CSV, project: str = PROJECT, *, in_process: bool = False
) -> Workspace:
    ws = small_workspace(root, env, project, in_process=in_process)
    (ws.root / "data").mkdir()
    (ws.root / "data" / "products.csv").write_text(csv, encoding="utf-8")
    return ws


@pytest.fixture
def ws(tmp_path: Path, fake_process: FakeProcess) -> Workspace:
    return rows_workspace(tmp_path / "catalog", ws_env(fake_process.base_url), in_process=True)


def created(fake_process: FakeProcess) -> Counter[str]:
    """Tasks the stand-in created, by what their prompt names: ``intro``, ``hero: the Blue Mug``..."""
    counts: Counter[str] = Counter()
    for task in fake_process.stats()["tasks"].values():
        prompt = str(task["body"].get("prompt", ""))
        match = re.match(r"shot (\w+)(?:: (?:the )?(.*?)(?: on a walnut table)?$)?", prompt)
        assert match is not None, prompt
        shot, what = match.groups()
        counts[shot if shot == "intro" else f"{shot}: {what}"] += 1
    return counts


def cut(ws: Workspace, key: str) -> Path:
    return ws.root / "renders" / f"{key}.mp4"


def edit_csv(ws: Workspace, old: str, new: str) -> None:
    path = ws.root / "data" / "products.csv"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_four_rows_pay_nine_tasks_make_four_cuts_and_an_edited_row_pays_one(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    """The issue's "Done when": 4 rows x (1 shared + 2 row shots) = 9 paid tasks, 4 cuts at
    renders/<key>.mp4; editing one row's name re-pays exactly that row's hero."""
    plan = ws.plan()
    assert plan["rows"]["clips"] == 9
    assert plan["rows"]["shared"]["cost_usd"] == pytest.approx(0.252)  # intro: 3 s x $0.084, once
    assert [r["cost_usd"] for r in plan["rows"]["rows"]] == [pytest.approx(0.504)] * 4
    assert plan["total_cost_usd"] == pytest.approx(9 * 0.252)
    assert plan["to_render_cost_usd"] == pytest.approx(9 * 0.252)
    assert {s["id"] for s in plan["shots"]} == {f"{k}/{s}" for k in KEYS for s in ("intro", "hero", "outro")}

    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert len(fake_process.submits()) == 9 and sum(created(fake_process).values()) == 9
    assert created(fake_process)["intro"] == 1  # the shared shot is generated once for the four cuts
    assert created(fake_process)["hero: Red Mug"] == 1 and created(fake_process)["outro: tea, with milk"] == 1
    for key in KEYS:
        info = decodes(cut(ws, key))
        assert info.duration == pytest.approx(CUT_SECONDS, abs=0.05)
        assert f"cut {key}: {cut(ws, key)}" in done.stderr
    assert sorted(p.name for p in (ws.root / "renders").iterdir()) == [f"{k}.mp4" for k in KEYS]
    lock = json.loads(ws.project.with_suffix(".lock").read_text())
    assert set(lock["shots"]) == {f"{k}/{s}" for k in KEYS for s in ("intro", "hero", "outro")}
    assert set(lock["cut"]["rows"]) == set(KEYS)
    assert lock["shots"]["mug-01/intro"]["key"] == lock["shots"]["mug-04/intro"]["key"]
    state = json.loads(ws.state_path.read_text())["shots"]
    assert set(state) == set(lock["shots"])

    again = ws.render()  # nothing changed: nothing is paid, no cut is re-encoded
    assert again.returncode == 0, again.stderr
    assert len(fake_process.submits()) == 9
    assert again.stderr.count("(up to date)") == 4

    before_text = ws.project.with_suffix(".lock").read_text()
    before = json.loads(before_text)["shots"]
    edit_csv(ws, "Green Mug", "Jade Mug")
    plan = ws.plan()
    changed = [s["id"] for s in plan["shots"] if s["change"] == "changed"]
    assert changed == ["mug-03/hero"]
    assert plan["to_render_cost_usd"] == pytest.approx(0.252)
    edited = ws.render()
    assert edited.returncode == 0, edited.stderr
    assert len(fake_process.submits()) == 10  # exactly one more paid task
    assert created(fake_process)["hero: Jade Mug"] == 1
    after = json.loads(ws.project.with_suffix(".lock").read_text())["shots"]
    assert [sid for sid in after if after[sid] != before[sid]] == ["mug-03/hero"]
    assert after["mug-03/hero"]["prompt"] == "shot hero: the Jade Mug on a walnut table"
    # In a pull request the lock's diff is that row's shot and nothing else: the lines that changed
    # all lie inside its entry ("mug-03/hero": {...}).
    lines = ws.project.with_suffix(".lock").read_text().splitlines()
    start = lines.index('    "mug-03/hero": {')
    end = lines.index("    },", start)
    matcher = difflib.SequenceMatcher(a=before_text.splitlines(), b=lines, autojunk=False)
    edits = [(j1, j2) for tag, _, _, j1, j2 in matcher.get_opcodes() if tag != "equal"]
    assert edits and all(start < j1 and j2 <= end for j1, j2 in edits), edits
    # (The stand-in answers every 3 s task with the same bytes, so even mug-03's cut is unchanged.)
    ws.assert_no_secret()


def test_rows_reordered_and_a_row_added_pay_only_the_new_row(ws: Workspace, fake_process: FakeProcess) -> None:
    """Identity is the row's key, never its position: shuffling the table changes nothing."""
    assert ws.render().returncode == 0
    assert len(fake_process.submits()) == 9
    lines = CSV.splitlines()
    shuffled = "\n".join([lines[0], "mug-05,Black Mug,late night", lines[4], lines[2], lines[1], lines[3]]) + "\n"
    (ws.root / "data" / "products.csv").write_text(shuffled)
    plan = ws.plan()
    assert Counter(s["change"] for s in plan["shots"]) == Counter(unchanged=12, added=3)
    assert plan["to_render_cost_usd"] == pytest.approx(2 * 0.252)  # its intro is the shared clip
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert len(fake_process.submits()) == 11
    assert created(fake_process)["hero: Black Mug"] == 1 and created(fake_process)["intro"] == 1
    assert cut(ws, "mug-05").is_file()

    (ws.root / "data" / "products.csv").write_text(CSV.replace('mug-02,Red Mug,"tea, with milk"\n', ""))
    plan = ws.plan()
    assert sorted(plan["removed"]) == [
        "mug-02/hero",
        "mug-02/intro",
        "mug-02/outro",
        "mug-05/hero",
        "mug-05/intro",
        "mug-05/outro",
    ]
    assert ws.render().returncode == 0 and len(fake_process.submits()) == 11
    lock = json.loads(ws.project.with_suffix(".lock").read_text())
    assert not [sid for sid in lock["shots"] if sid.startswith(("mug-02/", "mug-05/"))]
    assert set(lock["cut"]["rows"]) == {"mug-01", "mug-03", "mug-04"}


def test_a_failed_row_does_not_block_the_other_cuts_and_resumes_alone(ws: Workspace, fake_process: FakeProcess) -> None:
    """Moderation fails mug-03's hero for good: the three other cuts are made, the exit code says
    something failed; the next run pays nothing more for the same inputs, and editing that row
    pays exactly its one shot and makes its cut."""
    fake_process.fault("fail", "/api/v3/kwaivgi/", body_contains="Green Mug", code=1401, error="flagged by moderation")
    done = ws.render()
    assert done.returncode == 1
    assert len(fake_process.submits()) == 9  # the failed task was paid (and refunded), never re-sent
    assert [k for k in KEYS if cut(ws, k).is_file()] == ["mug-01", "mug-02", "mug-04"]
    assert "row mug-03: not stitched, no clip yet for mug-03/hero" in done.stderr
    status = ws.status()
    by_row = {r["key"]: r for r in status["rows"]}
    assert by_row["mug-03"]["counts"] == {"done": 2, "failed": 1}
    assert by_row["mug-03"]["final_cut"] is None and by_row["mug-01"]["cut_up_to_date"] is True
    table = ws.cli("status", str(ws.project))
    assert re.search(r"mug-03\s+2/3\s+1\s+0", table.stdout), table.stdout

    again = ws.render()  # the same inputs fail the same way: not paid again
    assert again.returncode == 1 and len(fake_process.submits()) == 9
    assert again.stderr.count("(up to date)") == 3

    retried = ws.render("--row", "mug-03", "--retry-failed")  # asked for: exactly one more task
    assert retried.returncode == 0, retried.stderr
    assert len(fake_process.submits()) == 10 and created(fake_process)["hero: Green Mug"] == 2
    assert "cut mug-03: " in retried.stderr and "cut mug-01" not in retried.stderr  # only that row
    decodes(cut(ws, "mug-03"))

    edit_csv(ws, "Green Mug", "Jade Mug")  # and an edit of that row pays its one shot, nothing else
    fixed = ws.render()
    assert fixed.returncode == 0, fixed.stderr
    assert len(fake_process.submits()) == 11 and created(fake_process)["hero: Jade Mug"] == 1
    assert all(f"cut {k}" in fixed.stderr for k in KEYS)


def test_row_selection_renders_and_pays_only_those_rows(ws: Workspace, fake_process: FakeProcess) -> None:
    done = ws.render("--row", "mug-02")
    assert done.returncode == 0, done.stderr
    assert sum(created(fake_process).values()) == 3  # the shared intro and mug-02's two
    assert created(fake_process)["hero: Red Mug"] == 1
    assert [k for k in KEYS if cut(ws, k).exists()] == ["mug-02"]
    lock = json.loads(ws.project.with_suffix(".lock").read_text())
    assert sorted(lock["shots"]) == ["mug-02/hero", "mug-02/intro", "mug-02/outro"]

    plan = ws.plan("--row", "MUG-01,mug-04")  # keys are matched without regard to case
    assert [r["key"] for r in plan["rows"]["rows"]] == ["mug-01", "mug-04"]
    assert plan["to_render_cost_usd"] == pytest.approx(4 * 0.252)  # the shared intro is cached
    wrong = ws.cli("plan", str(ws.project), "--row", "mug-2")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "error: --row: no row 'mug-2' in data/products.csv (did you mean 'mug-02'?)"
    for command in ("render", "stitch", "status", "report"):
        refused = ws.cli(command, str(ws.project), "--row", "nope")
        assert refused.returncode == 2 and "--row: no row 'nope'" in refused.stderr, command
    assert sum(created(fake_process).values()) == 3

    only = ws.render("--row", "mug-01", "--only", "hero")  # one shot of one row
    assert only.returncode == 0, only.stderr
    assert sum(created(fake_process).values()) == 4 and created(fake_process)["hero: Blue Mug"] == 1
    assert not cut(ws, "mug-01").exists()  # its outro has no clip yet: no cut
    assert "row mug-01: not stitched, no clip yet for mug-01/outro" in only.stderr

    full = ws.render()
    assert full.returncode == 0, full.stderr
    assert sum(created(fake_process).values()) == 9
    stitched = ws.cli("stitch", str(ws.project), "--row", "mug-04", "--json")
    assert stitched.returncode == 0, stitched.stderr
    assert [c["row"] for c in json.loads(stitched.stdout)["cuts"]] == ["mug-04"]


@pytest.mark.parametrize("lost", ["submitted", "unknown"])
def test_a_shared_shot_in_flight_in_a_later_row_is_never_paid_twice(
    ws: Workspace, fake_process: FakeProcess, lost: str
) -> None:
    """mug-04 renders alone first (its intro's task is recorded under mug-04/intro). As if the
    process had died right after that submit, its record says ``submitted`` (or ``unknown``: the
    answer was lost) and the clip is not cached: a full render must poll (or find in the task
    list) that one task, never let mug-01 (first in the table) submit a second one for the key."""
    assert ws.render("--row", "mug-04").returncode == 0
    assert sum(created(fake_process).values()) == 3
    state = json.loads(ws.state_path.read_text())
    record = state["shots"]["mug-04/intro"]
    key = record["key"]
    record["status"] = lost
    [entry] = state["ledger"][key]  # the key's one task, as the ledger recorded it before the POST
    entry["outcome"] = lost if lost == "submitted" else "submitting"
    if lost == "unknown":
        entry["task_id"] = record["task_id"] = None
    ws.state_path.write_text(json.dumps(state))
    for clip in ws.clips():
        if clip.stem == key:
            clip.unlink()
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert created(fake_process)["intro"] == 1  # polled and downloaded again, never a second task
    assert sum(created(fake_process).values()) == 9


def test_yaml_and_json_tables_give_the_csv_keys_and_text_as_written(tmp_path: Path, fake_process: FakeProcess) -> None:
    csv_ws = rows_workspace(tmp_path / "csv", ws_env(fake_process.base_url), in_process=True)
    keys = {s["id"]: s["key"] for s in csv_ws.plan()["shots"]}
    yaml_rows = "\n".join(
        f"- {{sku: {k}, name: {n}, tagline: {json.dumps(t)}}}"
        for k, n, t in [
            ("mug-01", "Blue Mug", "morning coffee"),
            ("mug-02", "Red Mug", "tea, with milk"),
            ("mug-03", "Green Mug", "cocoa by the fire"),
            ("mug-04", "White Mug", "espresso"),
        ]
    )
    json_rows = json.dumps(
        [
            {"sku": k, "name": n, "tagline": t}
            for k, n, t in [
                ("mug-01", "Blue Mug", "morning coffee"),
                ("mug-02", "Red Mug", "tea, with milk"),
                ("mug-03", "Green Mug", "cocoa by the fire"),
                ("mug-04", "White Mug", "espresso"),
            ]
        ],
        indent=2,
    )
    for suffix, text in (("yaml", yaml_rows), ("json", json_rows)):
        ws = rows_workspace(
            tmp_path / suffix,
            ws_env(fake_process.base_url),
            project=PROJECT.replace("products.csv", f"products.{suffix}"),
            in_process=True,
        )
        (ws.root / "data" / f"products.{suffix}").write_text(text)
        assert {s["id"]: s["key"] for s in ws.plan()["shots"]} == keys, suffix

    # Values are the text written: YAML 1.1 would read NO as false and 1.50 as 1.5.
    ws = rows_workspace(
        tmp_path / "typed",
        ws_env(fake_process.base_url),
        project=PROJECT.replace("products.csv", "p.yaml"),
        in_process=True,
    )
    (ws.root / "data" / "p.yaml").write_text(
        "- {sku: no-1, name: NO, tagline: 1.50}\n- {sku: 2, name: yes, tagline: ~}\n"
    )
    shots = {s["id"]: s for s in ws.plan()["shots"]}
    assert len(shots) == 6
    done = ws.render("--no-stitch")
    assert done.returncode == 0, done.stderr
    prompts = sorted(str(t["body"]["prompt"]) for t in fake_process.stats()["tasks"].values())
    assert "shot hero: the NO on a walnut table" in prompts and "shot outro: 1.50" in prompts
    assert "shot hero: the yes on a walnut table" in prompts and "shot outro: " in prompts


def test_a_value_is_text_never_a_template(tmp_path: Path, fake_process: FakeProcess) -> None:
    ws = rows_workspace(
        tmp_path / "t",
        ws_env(fake_process.base_url),
        csv="sku,name,tagline\nm1,{{ 7 * 7 }},{% raw %}\n",
        in_process=True,
    )
    assert ws.render("--no-stitch").returncode == 0
    prompts = sorted(str(t["body"]["prompt"]) for t in fake_process.stats()["tasks"].values())
    assert prompts == [
        "shot hero: the {{ 7 * 7 }} on a walnut table",
        "shot intro: our studio in soft light",
        "shot outro: {% raw %}",
    ]


def test_keys_and_ids_are_the_same_in_every_process(ws: Workspace) -> None:
    ws.in_process = False  # PYTHONHASHSEED applies to a new process
    docs = []
    for seed in ("0", "1", "4242"):
        done = ws.cli("plan", str(ws.project), "--json", env={**ws.env, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        docs.append(([(s["id"], s["key"]) for s in doc["shots"]], doc["rows"]))
    assert docs[0] == docs[1] == docs[2]


def test_status_and_report_group_by_row(ws: Workspace, fake_process: FakeProcess) -> None:
    assert ws.render().returncode == 0
    status = ws.status()
    assert [r["key"] for r in status["rows"]] == list(KEYS)
    for row in status["rows"]:
        assert [s["shot"] for s in row["shots"]] == ["intro", "hero", "outro"]
        assert [s["shared"] for s in row["shots"]] == [True, False, False]
        assert row["counts"] == {"done": 3} and row["cut_up_to_date"] is True
    assert sum(r["spent_usd"] for r in status["rows"]) == pytest.approx(9 * 0.252)
    assert ws.cli("status", str(ws.project), "--check").returncode == 0

    done = ws.cli("report", str(ws.project))
    assert done.returncode == 0, done.stderr
    index = ws.root / "renders" / "project-report.html"
    pages = ws.root / "renders" / "project-report"
    assert sorted(p.name for p in pages.iterdir()) == [f"{k}.html" for k in KEYS]
    html = index.read_text()
    for key in KEYS:
        assert f'href="project-report/{key}.html"' in html
    page = (pages / "mug-02.html").read_text()
    assert "catalog · mug-02" in page and "the Red Mug on a walnut table" in page
    assert "Blue Mug" not in page
    assert 'data-shot="hero"' in page

    os.utime(index, ns=(1, 1))
    one = ws.cli("report", str(ws.project), "--row", "mug-01")
    assert one.returncode == 0 and index.stat().st_mtime_ns == 1  # --row leaves the index alone


def test_a_project_without_rows_refuses_row(tmp_path: Path, fake_process: FakeProcess) -> None:
    ws = small_workspace(tmp_path / "small", ws_env(fake_process.base_url), in_process=True)
    done = ws.cli("plan", str(ws.project), "--row", "a")
    assert done.returncode == 2 and "--row: " in done.stderr and "has no rows: table" in done.stderr


def test_a_damaged_shared_clip_is_reported_by_every_row_stitch_and_never_cut(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    """`stitch` of a rows: project checks each clip before it records the lock; a clip damaged on
    disk is quarantined there, and every row that uses it says so (not just "no clip yet")."""
    done = ws.render()
    assert done.returncode == 0, done.stderr
    cuts = {key: cut(ws, key).read_bytes() for key in KEYS}
    key = json.loads(ws.project.with_suffix(".lock").read_text())["shots"]["mug-01/intro"]["key"]
    victim = ws.cache_dir / "wavespeed" / key[:2] / f"{key}.mp4"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    stitched = ws.cli("stitch", str(ws.project), "--force")
    assert stitched.returncode == 1, stitched.stderr
    for row in KEYS:
        assert f"{row}/intro: quarantined (cached clip" in stitched.stderr, stitched.stderr
        assert cut(ws, row).read_bytes() == cuts[row]  # the previous cuts stay; none made from the bad clip
    assert not victim.exists()
    again = ws.render()  # the shared clip's task gives its output again, free, for all four rows
    assert again.returncode == 0, again.stderr
    assert created(fake_process)["intro"] == 1 and sum(created(fake_process).values()) == 9
