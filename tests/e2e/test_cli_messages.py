"""Issue 13, items 5 and 6: progress people can follow, and the command line's messages.

The messages run the commands in this process (``in_process``); the lock waited for by another
process and the JSON on stdout run the real CLI."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import small_animatics
from e2e_cli import EXAMPLE, Workspace, base_env

from kling_render.media import ffmpeg
from kling_render.records.state import StateStore
from kling_render.report.live import RichSink
from kling_render.report.progress import Event, JsonLinesSink, PlainSink

PROJECT = """\
version: 1
name: msg
provider: local
defaults: {model: kling-video-o3-std/image-to-video, duration: 3}
shots:
  - id: one
    prompt: "a mug"
    image: images/mug.png
  - id: two
    prompt: "the mug, full"
    image: images/mug-full.png
    transition: {type: fade, duration: 0.5}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
audio: {music: audio/bed.mp3, duck: true, normalize: true}
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture
def ws(tmp_path: Path, clips: Path) -> Workspace:
    root = tmp_path / "msg"
    root.mkdir()
    shutil.copytree(EXAMPLE / "images", root / "images")
    shutil.copytree(EXAMPLE / "audio", root / "audio")
    (root / "project.yaml").write_text(PROJECT)
    return Workspace(root, base_env(KLING_RENDER_CACHE=str(clips)))


# -- item 6: messages ------------------------------------------------------------------------------


def test_verbose_is_accepted_after_the_subcommand(ws: Workspace, tmp_path: Path) -> None:
    empty = Workspace(ws.root, base_env(KLING_RENDER_CACHE=str(tmp_path / "empty-cache")), in_process=True)
    quiet = empty.cli("stitch", str(ws.project))
    assert quiet.returncode == 1 and "no cached clip" in quiet.stderr and "Traceback" not in quiet.stderr
    for args in (["stitch", str(ws.project), "--verbose"], ["--verbose", "stitch", str(ws.project)]):
        loud = empty.cli(*args)
        assert loud.returncode == 1, loud.stderr
        assert "Traceback (most recent call last)" in loud.stderr and "MissingClipsError" in loud.stderr
    assert empty.cli("validate", str(ws.project), "--verbose").returncode == 0


def test_provider_is_a_choice(ws: Workspace) -> None:
    ws.in_process = True
    for command in ("plan", "render", "stitch", "status", "report"):
        done = ws.cli(command, str(ws.project), "--provider", "wavespeeed")
        assert done.returncode == 2, (command, done.stderr)
        assert "'wavespeeed' is not one of 'local', 'wavespeed', 'fal'" in done.stderr, done.stderr
    assert "[local|wavespeed|fal]" in ws.cli("plan", "--help").stdout


def test_a_directory_finds_its_project_file(ws: Workspace) -> None:
    ws.in_process = True
    done = ws.cli("validate", str(ws.root))
    assert done.returncode == 0 and "valid (2 shots)" in done.stdout, done.stderr
    assert json.loads(ws.cli("plan", str(ws.root), "--json").stdout)["project"] == "msg"
    # no project.yaml, but one YAML file that is a project: that one
    ws.project.rename(ws.root / "teaser.yaml")
    (ws.root / "rows.yaml").write_text("- {a: 1}\n")
    assert ws.cli("validate", str(ws.root)).returncode == 0
    # two candidates: say which, exit 2
    shutil.copy(ws.root / "teaser.yaml", ws.root / "other.yml")
    several = ws.cli("validate", str(ws.root))
    assert several.returncode == 2
    assert several.stderr.strip() == (
        f"error: {ws.root}: no project.yaml, and several project files (other.yml, teaser.yaml): name the one to use"
    )
    shutil.copy(ws.root / "teaser.yaml", ws.root / "project.yaml")
    shutil.copy(ws.root / "teaser.yaml", ws.root / "project.yml")
    both = ws.cli("validate", str(ws.root))
    assert both.returncode == 2 and "several project files (project.yaml, project.yml)" in both.stderr
    empty = ws.root / "empty"
    empty.mkdir()
    none = ws.cli("render", str(empty))
    assert none.returncode == 2
    assert none.stderr.strip() == f"error: {empty}: no project.yaml in this directory (give the project file's path)"


def test_stitch_json_and_wait_lock(ws: Workspace) -> None:
    ws.in_process = True
    with small_animatics():  # the clips made here (in this process) are small: the lock is the subject
        assert ws.render("--no-stitch").returncode == 0
    ws.in_process = False
    store = StateStore.for_project(ws.project, "local").open()  # another run holds the project
    try:
        busy = ws.cli("stitch", str(ws.project), "--wait-lock", "0.3", "--json")
        assert busy.returncode == 1 and busy.stdout == ""
        assert "another kling-render run of this project holds" in busy.stderr and "after waiting 0.3s" in busy.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "kling_render", "stitch", str(ws.project), "--wait-lock", "60", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ws.env, cwd=ws.root,
        )  # fmt: skip
        time.sleep(1.0)
        assert waiting.poll() is None  # still waiting for the lock
    finally:
        store.close()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    doc = json.loads(out)  # one JSON document on stdout, nothing else there
    assert doc["final_cut"] == str(ws.final_cut) and doc["up_to_date"] is False and doc["frames"] == 132
    assert doc["provider"] == "local" and doc["fps"] == 24 and len(doc["sha256"]) == 64


# -- item 5: progress ------------------------------------------------------------------------------


def test_ffmpeg_runner_reports_progress(tmp_path: Path) -> None:
    seen: list[ffmpeg.Progress] = []
    out = tmp_path / "p.mp4"
    ffmpeg.run(
        ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=24:duration=4", "-c:v", "libx264", "-preset", "ultrafast",
         "-y", f"file:{out}"],
        "encoding a test clip",
        progress=seen.append,
    )  # fmt: skip
    assert seen and seen[-1].done and not any(p.done for p in seen[:-1])
    assert seen[-1].out_seconds == pytest.approx(4.0, abs=0.1) and seen[-1].frame == 96
    times = [p.out_seconds for p in seen]
    assert times == sorted(times)
    assert out.is_file()


def test_render_json_reports_stitch_progress_and_running_figures(ws: Workspace) -> None:
    done = ws.render("--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()][1:]
    assert all("ts" in e for e in lines[:-1])  # every event is stamped (the last line is the summary)
    progress = [e for e in lines if e["event"] == "stitch-progress"]
    assert progress, [e["event"] for e in lines]
    for step in {e["step"] for e in progress}:
        fractions = [e["fraction"] for e in progress if e["step"] == step]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # a re-encode reports its segments and audio as "encoding", then the stream-copy "joining"
    assert {"encoding", "joining"} <= {e["step"] for e in progress} <= {"measuring loudness", "encoding", "joining"}
    finished = [e["finished"] for e in lines if e.get("shot_id")]
    assert finished == sorted(finished) and finished[-1] == 2
    kinds = [e["event"] for e in lines]
    assert kinds.index("stitching") < kinds.index("stitch-progress") < kinds.index("stitched")


def test_plain_log_has_times_counts_spend_eta_and_heartbeats() -> None:
    out = io.StringIO()
    sink = PlainSink(out, heartbeat=0.1)
    sink.emit(Event("start", total=3))
    sink.emit(Event("skipped-cached", shot_id="a", index=1, total=3))
    sink.emit(Event("submitted", shot_id="b", index=2, total=3, task_id="t-b", cost_usd=0.5))
    time.sleep(0.05)
    sink.emit(Event("done", shot_id="b", index=2, total=3, cost_usd=0.5))
    sink.emit(Event("submitted", shot_id="c", index=3, total=3, task_id="t-c", cost_usd=0.25))
    sink.emit(Event("polling", shot_id="c", index=3, total=3, task_id="t-c", status="processing"))
    time.sleep(0.35)  # a long poll: nothing happens, the log must still move
    sink.emit(Event("stitching", message="3 clips -> final.mp4"))
    sink.emit(Event("stitch-progress", message="encoding", extra={"step": "encoding", "fraction": 0.1}))
    time.sleep(0.1)
    sink.emit(Event("stitch-progress", message="encoding", extra={"step": "encoding", "fraction": 0.4}))
    time.sleep(0.35)
    sink.close()
    lines = out.getvalue().splitlines()
    stamp = r"\d\d:\d\d:\d\d "
    assert all(re.match(stamp, line) for line in lines), lines
    said = [line for line in lines if " still " not in line]  # what the events said, in order
    assert re.fullmatch(stamp + r"\[1/3\] a: skipped-cached", said[0])
    assert re.fullmatch(stamp + r"\[1/3\] b: submitted \(task t-b\)", said[1])
    assert re.fullmatch(stamp + r"\[2/3\] b: done \(\$0\.5000\) · spent \$0\.5000 · eta \d+s", said[2]), said
    beats = [line for line in lines if "still working" in line]
    assert beats and re.fullmatch(
        stamp + r"still working: 1 in flight \(c: processing for \d+s\) · 2/3 finished · spent \$0\.7500 · eta \d+s",
        beats[0],
    ), beats
    stitching = [line for line in lines if "still stitching" in line]
    assert stitching and re.fullmatch(stamp + r"still stitching: encoding 40% · eta \d+s", stitching[-1]), lines
    assert not any("stitch-progress" in line for line in lines)  # progress shows in heartbeats only


def test_json_heartbeat_and_stitch_progress_are_throttled() -> None:
    out = io.StringIO()
    sink = JsonLinesSink(out, heartbeat=0.1)
    for i in range(101):
        sink.emit(Event("stitch-progress", extra={"step": "encoding", "fraction": i / 100}))
    time.sleep(0.3)
    sink.close()
    docs = [json.loads(line) for line in out.getvalue().splitlines()[1:]]
    fractions = [d["fraction"] for d in docs if d["event"] == "stitch-progress"]
    assert 15 <= len(fractions) <= 25 and fractions[0] == 0.0 and fractions[-1] == 1.0
    beats = [d for d in docs if d["event"] == "heartbeat"]
    assert beats and beats[0]["message"].startswith("still stitching: encoding 100%")


def test_rich_sink_draws_stitch_progress_without_a_terminal() -> None:
    out = io.StringIO()
    sink = RichSink(out)
    sink.emit(Event("start", total=1))
    sink.emit(Event("submitted", shot_id="a", index=1, total=1, task_id="t1", cost_usd=0.5))
    sink.emit(Event("done", shot_id="a", index=1, total=1, cost_usd=0.5))
    sink.emit(Event("stitching", message="1 clip -> f.mp4"))
    for fraction in (0.1, 0.5, 1.0):
        sink.emit(Event("stitch-progress", extra={"step": "encoding", "fraction": fraction}))
    sink.emit(Event("stitched", message="f.mp4 (5.00 s, 120 frames, re-encoded)"))
    sink.close()
    text = out.getvalue()
    # the bars are transient (issue 23 item 14): what stays is the lines, with times and counts
    assert "spent $0.5000" in text and "stitched: f.mp4" in text and "━" not in text


def test_progress_callback_errors_do_not_leave_ffmpeg_running(tmp_path: Path) -> None:
    """An exception in the callback (e.g. Ctrl-C while drawing) kills ffmpeg and propagates."""
    started = threading.active_count()

    def boom(progress: ffmpeg.Progress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ffmpeg.run(
            ["-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=24:duration=30", "-f", "null", "-"],
            "a long run",
            progress=boom,
        )
    assert threading.active_count() <= started
