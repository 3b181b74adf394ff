"""Issue 12, cache integrity: a cached clip is checked against its recorded sha256 before it is
used (stitched, reported, counted as done); a mismatch is a miss, the clip is quarantined (moved
aside under the cache, never deleted, never reaching a cut) and the events say so. The sidecar's
stream headers are trusted only for the clip whose digest matches. Temp clean-up removes only the
names the cache makes. Against the stand-in server, paid tasks counted; the commands run in this
process (``in_process``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from e2e_cli import SMALL_SHOTS, Workspace, decodes, small_workspace, ws_env
from fake_wavespeed import FakeWaveSpeed
from mediagen import make_clip

from kling_render.fsutil import sha256_file
from kling_render.records.lockfile import read_lock


@pytest.fixture
def ws(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> Workspace:
    ws = small_workspace(tmp_path / "p", ws_env(fake_wavespeed.base_url), in_process=True)
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert len(fake_wavespeed.submits()) == 3
    return ws


def submits_by_shot(fake_wavespeed: FakeWaveSpeed) -> Counter[str]:
    return Counter(r.body["prompt"].split(":", 1)[0].removeprefix("shot ") for r in fake_wavespeed.submits())


def clip_of(ws: Workspace, shot: str) -> Path:
    key = read_lock(ws.root / "project.lock")[shot].key
    return ws.cache_dir / "wavespeed" / key[:2] / f"{key}.mp4"


def flip_a_byte(path: Path) -> None:
    """Damage the content only: same size, same mtime (what a memo of size+mtime would miss)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def quarantined(ws: Workspace) -> list[Path]:
    return sorted((ws.cache_dir / "quarantine" / "wavespeed").glob("*.mp4"))


def test_a_damaged_clip_never_reaches_a_cut_and_is_rendered_again(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    cut = ws.final_cut.read_bytes()
    victim = clip_of(ws, "beta")
    flip_a_byte(victim)
    damaged = victim.read_bytes()

    stitch = ws.cli("stitch", str(ws.project))
    assert stitch.returncode == 1, stitch.stderr
    assert "beta: quarantined (cached clip" in stitch.stderr and "no cached clip for shot(s): beta" in stitch.stderr
    assert ws.final_cut.read_bytes() == cut  # the old cut stays; no cut made from the damaged clip
    [moved] = quarantined(ws)
    assert moved.read_bytes() == damaged and not victim.exists()  # moved aside whole, not deleted
    assert moved.with_suffix(".json").is_file()
    log = (ws.cache_dir / "quarantine" / "log.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["moved_to"] == str(moved)

    again = ws.render()
    assert again.returncode == 0, again.stderr
    # free first (issue 23 item 1): beta's task's output is fetched again, no new task
    assert submits_by_shot(fake_wavespeed) == Counter({"alpha": 1, "beta": 1, "gamma": 1})
    assert sha256_file(victim) == read_lock(ws.root / "project.lock")["beta"].output_sha256
    decodes(ws.final_cut)
    quiet = ws.render()  # and then nothing more
    assert quiet.returncode == 0 and "3 cached" in quiet.stderr and len(fake_wavespeed.submits()) == 3


def test_a_run_does_not_count_a_damaged_clip_as_done_and_says_why(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    flip_a_byte(clip_of(ws, "alpha"))
    done = ws.render("--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    [event] = [e for e in events if e.get("event") == "quarantined"]
    assert event["shot_id"] == "alpha" and "does not match its recorded sha256" in event["message"]
    outcome = {s["id"]: s["status"] for s in events[-1]["shots"]}
    assert outcome == {"alpha": "done", "beta": "cached", "gamma": "cached"}
    assert submits_by_shot(fake_wavespeed) == Counter({"alpha": 1, "beta": 1, "gamma": 1})  # fetched again, free
    assert len(quarantined(ws)) == 1


def test_status_and_report_do_not_show_a_damaged_clip_as_cached(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    flip_a_byte(clip_of(ws, "gamma"))
    status = ws.cli("status", str(ws.project), "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)  # stdout stays one JSON document; the warning goes to stderr
    assert {s["id"]: s["cached"] for s in doc["shots"]} == {"alpha": True, "beta": True, "gamma": False}
    assert {s["id"]: s["status"] for s in doc["shots"]} == {"alpha": "done", "beta": "done", "gamma": "pending"}
    assert len(doc["quarantined"]) == 1 and "warning: cached clip" in status.stderr
    report = ws.cli("report", str(ws.project))
    assert report.returncode == 0, report.stderr
    assert len(fake_wavespeed.submits()) == 3 and len(quarantined(ws)) == 1


def test_sidecar_headers_are_trusted_only_for_the_clip_they_describe(
    ws: Workspace, fake_wavespeed: FakeWaveSpeed, tmp_path: Path
) -> None:
    # Another valid clip (other size, no audio) put in gamma's place, its sidecar's size made to
    # match: the recorded headers (192x108 with the fake's layout) would describe the wrong stream.
    victim = clip_of(ws, "gamma")
    other = make_clip(tmp_path / "other.mp4", width=320, height=240, duration=3.0, audio=False)
    os.replace(other, victim)
    sidecar = victim.with_suffix(".json")
    doc = json.loads(sidecar.read_text())
    assert doc["media"]  # the headers the stitch would have used without probing
    doc["size"] = victim.stat().st_size
    sidecar.write_text(json.dumps(doc))

    stitch = ws.cli("stitch", str(ws.project))
    assert stitch.returncode == 1 and "gamma" in stitch.stderr, stitch.stderr
    assert len(quarantined(ws)) == 1
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert submits_by_shot(fake_wavespeed)["gamma"] == 1 and len(fake_wavespeed.submits()) == 3  # fetched again, free
    info = decodes(ws.final_cut)
    assert (info.width, info.height) == (320, 180)


def test_temp_clean_up_removes_only_names_the_cache_made(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> None:
    shared = tmp_path / "shared-cache"
    ws = small_workspace(tmp_path / "p", {**ws_env(fake_wavespeed.base_url), "KLING_RENDER_CACHE": str(shared)})
    tmp = shared / "tmp"
    tmp.mkdir(parents=True)
    dead = "999999999"  # above any pid_max: no such process
    ours_dead = [f"{dead}-0123456789ab.mp4", f"{dead}-abcdef012345.probe"]
    foreign = ["notes.txt", f"{dead}-abc.mp4", f"{dead}-0123456789AB.mp4", f"{dead}-0123456789ab.mp4.keep",
               "render-0123456789ab.mp4", ".lock", f"{os.getpid()}-0123456789ab.mp4"]  # fmt: skip
    for name in ours_dead + foreign:
        (tmp / name).write_bytes(b"x")
    (tmp / f"{dead}-fedcba987654").mkdir()
    (tmp / f"{dead}-fedcba987654" / "inside.txt").write_text("kept")
    done = ws.render()
    assert done.returncode == 0, done.stderr
    left = sorted(p.name for p in tmp.iterdir())
    assert left == sorted([*foreign, f"{dead}-fedcba987654"])
    assert len(fake_wavespeed.submits()) == len(SMALL_SHOTS)
