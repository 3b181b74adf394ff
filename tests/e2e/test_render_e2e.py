"""Issue 3 end to end: the ``kling-render`` CLI as a user runs it.

Offline with ``--provider local`` (no key, no network), and against the fake WaveSpeed server
running as its own process on 127.0.0.1 (``tests/e2e_fake.py``): submits counted from what the
server received, resume and cache rules, plan before the run, budget, injected faults, and the
API key kept out of every file and every line the CLI prints.

The real CLI in a subprocess: the key never printed (files, stdout, stderr of the process) and a
missing key. The resume/edit/budget story, the injected faults and the offline renders run the
commands in this process (``in_process``): what a run decides and pays is the subject there, not
the interpreter.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import small_animatics
from e2e_cli import (
    EXAMPLE,
    SECRET,
    SMALL_COST,
    SMALL_CUT_SECONDS,
    SMALL_PROJECT,
    SMALL_SHOTS,
    Workspace,
    base_env,
    decodes,
    small_workspace,
    ws_env,
)
from e2e_fake import FakeProcess

from kling_render.app import cut as app_cut
from kling_render.fsutil import sha256_file
from kling_render.media.probe import probe
from kling_render.project.loader import load_project

pytestmark = pytest.mark.stand_in(latency=0.3)

FRAME = 1 / 24


@pytest.fixture
def ws(tmp_path: Path, fake_process: FakeProcess) -> Workspace:
    return small_workspace(tmp_path / "small", ws_env(fake_process.base_url), in_process=True)


def stderr_spent(done: object) -> str:
    """The ``spent $X`` figure of the CLI's summary line."""
    text = getattr(done, "stderr", "")
    line = [ln for ln in text.splitlines() if ln.startswith("small: ")][-1]
    return line.rsplit("spent ", 1)[1]


def render_report(done: object) -> dict[str, object]:
    """The ``finished`` line of ``render --json`` (every stdout line must be JSON)."""
    lines = [json.loads(line) for line in getattr(done, "stdout", "").splitlines()]
    finished: dict[str, object] = lines[-1]
    assert finished["event"] == "finished"
    return finished


# -- offline: the local provider -------------------------------------------------------------


@pytest.mark.slow
def test_full_example_renders_offline_with_no_key(tmp_path: Path) -> None:
    """The shipped example, all five models and music, through the local provider (~25-40 s)."""
    root = tmp_path / "mug-teaser"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".kling-render", "renders", "*.lock"))
    ws = Workspace(root, base_env())
    started = time.monotonic()
    done = ws.cli("render", str(ws.project), "--provider", "local")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "5 done; spent $0.0000" in done.stderr
    clips = ws.clips("local")
    assert len(clips) == 5
    for clip in clips:
        decodes(clip)
    # kept: intro 5, pour 3.5 (trim 0.25-3.75), hero 5, story 5, outro 5 = 23.5 s;
    # transitions 0.5 + 0.5 + 0.75 = 1.75 s
    info = decodes(ws.final_cut)
    assert info.duration == pytest.approx(23.5 - 1.75, abs=2 * FRAME)
    assert info.has_audio and (info.width, info.height) == (1280, 720)
    status = ws.status()
    assert status["provider"] == "local" and set(status["counts"]) == {"done"}
    assert ws.statuses() == dict.fromkeys(["intro", "pour", "hero", "story", "outro"], "done")
    print(f"full example rendered offline in {elapsed:.1f}s")


SMALL_PROJECT_LOCAL = SMALL_PROJECT.replace("provider: wavespeed\n", "")


@pytest.fixture(scope="module")
def local_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL_PROJECT_LOCAL's three animatics (small ones: conftest.small_animatics), rendered once
    for the module (``--no-stitch``): the offline tests copy the folder (project, state and clip cache)."""
    ws = small_workspace(tmp_path_factory.mktemp("local") / "small", base_env(), SMALL_PROJECT_LOCAL, in_process=True)
    with small_animatics():
        done = ws.cli("render", str(ws.project), "--provider", "local", "--no-stitch")
    assert done.returncode == 0, done.stderr
    assert "3 done; spent $0.0000" in done.stderr  # offline and keyless: every clip
    assert not ws.final_cut.exists()
    return ws.root


def local_copy(tmp_path: Path, local_clips: Path) -> Workspace:
    shutil.copytree(local_clips, tmp_path / "small")
    return Workspace(tmp_path / "small", base_env(), in_process=True)


def test_small_project_renders_offline_with_music(tmp_path: Path, local_clips: Path) -> None:
    """Offline and keyless: every clip (the module's render), then a cut of the right length with a
    music bed."""
    ws = local_copy(tmp_path, local_clips)
    ws.project.write_text(
        SMALL_PROJECT_LOCAL + "audio: {music: audio/bed.mp3, music_volume: 0.3, duck: true, normalize: true}\n"
    )
    shutil.copytree(EXAMPLE / "audio", ws.root / "audio")
    done = ws.cli("render", str(ws.project), "--provider", "local")
    assert done.returncode == 0, done.stderr
    assert "3 cached; spent $0.0000" in done.stderr  # music is no input of a clip
    assert len(ws.clips("local")) == 3 and not (ws.cache_dir / "wavespeed").exists()
    info = decodes(ws.final_cut)
    assert info.duration == pytest.approx(SMALL_CUT_SECONDS, abs=2 * FRAME)
    assert info.has_audio
    again = ws.cli("render", str(ws.project), "--provider", "local")
    assert again.returncode == 0 and "3 cached; spent $0.0000" in again.stderr
    # local animatics never stand in for real clips: the wavespeed namespace has none
    missing = ws.cli("stitch", str(ws.project), "--provider", "wavespeed")
    assert missing.returncode == 1 and all(s in missing.stderr for s in SMALL_SHOTS)


# -- against the fake WaveSpeed server -------------------------------------------------------


def test_render_resume_edit_only_status_budget(ws: Workspace, fake_process: FakeProcess) -> None:
    plan = ws.plan()
    assert plan["provider"] == "wavespeed"
    assert [(s["id"], s["status"]) for s in plan["shots"]] == [(s, "render") for s in SMALL_SHOTS]
    assert plan["to_render_cost_usd"] == pytest.approx(sum(SMALL_COST.values()))
    assert fake_process.requests() == []  # plan needs no network

    # 1. first render: each shot submitted once, the plan's cost spent, a cut of the right length
    first = ws.render("--json")
    assert first.returncode == 0, first.stderr
    report = render_report(first)
    assert report["spent_usd"] == pytest.approx(plan["to_render_cost_usd"])
    assert fake_process.submits_by_shot() == Counter(dict.fromkeys(SMALL_SHOTS, 1))
    assert len(ws.clips()) == 3
    assert decodes(ws.final_cut).duration == pytest.approx(SMALL_CUT_SECONDS, abs=2 * FRAME)
    lock = json.loads((ws.root / "project.lock").read_text())["shots"]
    assert {sid: e["cost_usd"] for sid, e in lock.items()} == SMALL_COST

    # 2. nothing changed: nothing submitted, $0 (the cut is only checked at steps 1 and 4)
    second = ws.render("--no-stitch")
    assert second.returncode == 0, second.stderr
    assert stderr_spent(second) == "$0.0000"
    assert len(fake_process.submits()) == 3

    # 3. one prompt edited: plan says exactly that shot, the run re-generates exactly that shot
    ws.edit("coffee pours into", "espresso pours into")
    plan = ws.plan()
    assert {s["id"]: (s["status"], s["change"]) for s in plan["shots"]} == {
        "alpha": ("cached", "unchanged"),
        "beta": ("render", "changed"),
        "gamma": ("cached", "unchanged"),
    }
    assert plan["to_render_cost_usd"] == pytest.approx(SMALL_COST["beta"])
    third = ws.render("--no-stitch")
    assert third.returncode == 0, third.stderr
    assert stderr_spent(third) == "$0.5400"
    assert fake_process.submits_by_shot() == Counter(alpha=1, beta=2, gamma=1)

    # 4. a trim and a transition edited: nothing to generate, but the cut is stitched again
    ws.edit("trim: {start: 0.5}", "trim: {start: 1.0}")
    ws.edit("{type: fade, duration: 0.5}", "{type: fade, duration: 1.0}")
    plan = ws.plan()
    assert {s["status"] for s in plan["shots"]} == {"cached"} and plan["to_render_cost_usd"] == 0
    # The plan tells the truth: those two shots re-stitch (the lock recorded the last cut's settings).
    assert {s["id"]: (s["change"], s["changed_fields"]) for s in plan["shots"]} == {
        "alpha": ("unchanged", []),
        "beta": ("re-stitch", ["transition"]),
        "gamma": ("re-stitch", ["trim"]),
    }
    fourth = ws.render()
    assert fourth.returncode == 0, fourth.stderr
    assert stderr_spent(fourth) == "$0.0000" and len(fake_process.submits()) == 4
    assert decodes(ws.final_cut).duration == pytest.approx(SMALL_CUT_SECONDS - 1.0, abs=2 * FRAME)
    assert {s["change"] for s in ws.plan()["shots"]} == {"unchanged"}  # the new cut is recorded

    # 5. --only: two shots edited, one rendered; no cut while a clip is missing
    ws.edit("on a table", "on a desk")
    ws.edit("the {{ product }} spins", "the {{ product }} turns")
    only = ws.render("--only", "alpha")
    assert only.returncode == 0, only.stderr
    assert fake_process.submits_by_shot() == Counter(alpha=2, beta=2, gamma=1)
    assert "no clip yet for gamma" in only.stderr
    assert ws.statuses() == {"alpha": "done", "beta": "done", "gamma": "pending"}
    stitch = ws.cli("stitch", str(ws.project))
    assert stitch.returncode == 1 and "gamma" in stitch.stderr and "alpha" not in stitch.stderr

    # 6. budget: below the plan's cost, exit 3 and nothing submitted or recorded
    before = ws.state_path.read_bytes()
    broke = ws.render("--max-cost", "0.1")
    assert broke.returncode == 3, broke.stderr
    assert "budget" in broke.stderr and "Traceback" not in broke.stderr
    assert len(fake_process.submits()) == 5 and ws.state_path.read_bytes() == before

    rest = ws.render("--no-stitch")
    assert rest.returncode == 0, rest.stderr
    assert fake_process.submits_by_shot() == Counter(alpha=2, beta=2, gamma=2)
    status = ws.status()
    assert {s["id"]: (s["status"], s["cached"]) for s in status["shots"]} == dict.fromkeys(
        SMALL_SHOTS, ("done", True)
    )
    assert all(s["task_id"] for s in status["shots"])
    assert len(ws.clips()) == 6  # every rendered version stays cached
    assert ws.assert_no_secret() > 10


def test_refused_submits_are_retried_and_end_done(ws: Workspace, fake_process: FakeProcess) -> None:
    fake_process.fault("429", "/api/v3/kwaivgi/kling-v3.0-std", count=2, retry_after=1)
    fake_process.fault("429", "/api/v3/kwaivgi/kling-video-o3-std/image-to-video", count=1)
    started = time.monotonic()
    done = ws.render()
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed >= 2.0  # two Retry-After: 1 honoured
    assert fake_process.submits_by_shot() == Counter(alpha=3, beta=2, gamma=1)
    statuses = [r["status"] for r in fake_process.submits()]
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    assert ws.statuses() == dict.fromkeys(SMALL_SHOTS, "done")
    assert stderr_spent(done) == "$1.0440"  # a refused submit is not paid
    ws.assert_no_secret()


def test_submit_500_is_found_in_the_task_list_not_paid_twice(ws: Workspace, fake_process: FakeProcess) -> None:
    fake_process.fault("500", "/api/v3/kwaivgi/kling-v3.0-std", count=1)  # the task exists, its answer is lost
    first = ws.render()
    assert first.returncode == 0, first.stderr
    assert fake_process.submits_by_shot() == Counter(alpha=1, beta=1, gamma=1)  # never re-sent
    assert "alpha: unknown" in first.stderr and "alpha: reconciled (found task" in first.stderr
    assert ws.statuses() == dict.fromkeys(SMALL_SHOTS, "done")
    assert stderr_spent(first) == "$1.0440"
    decodes(ws.final_cut)
    ws.assert_no_secret()


def test_failed_task_is_replaced_and_dropped_polls_are_retried(ws: Workspace, fake_process: FakeProcess) -> None:
    fake_process.fault("fail", "/api/v3/kwaivgi/kling-v3.0-std", count=1, error="generation failed")
    fake_process.fault("drop", "/api/v3/predictions/", count=3, method="GET")
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert "generation failed" in done.stderr  # the retry says why
    assert fake_process.submits_by_shot() == Counter(alpha=2, beta=1, gamma=1)
    dropped = [r for r in fake_process.gets("/api/v3/predictions/") if r["status"] == 0]
    assert len(dropped) == 3
    state = ws.state()
    assert state["alpha"]["attempts"] == 2 and state["alpha"]["status"] == "done"
    assert state["alpha"]["cost_usd"] == pytest.approx(2 * SMALL_COST["alpha"])  # both tasks were paid ...
    assert state["alpha"]["refunded_usd"] == pytest.approx(SMALL_COST["alpha"])  # ... and the failed one refunded
    assert stderr_spent(done) == "$1.0440 ($0.2520 of failed tasks refunded)"
    decodes(ws.final_cut)
    ws.assert_no_secret()


def test_expired_output_fails_the_shot_and_the_next_run_polls_again(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    assert ws.render("--only", "alpha", "--no-stitch").returncode == 0
    ws.edit("on a table", "on a shelf")
    fake_process.fault("expired", "/outputs/", count=2)  # both download attempts of this run
    failed = ws.render("--only", "alpha")
    assert failed.returncode == 1
    assert "expired" in failed.stderr and "alpha: failed" in failed.stderr
    task = ws.state()["alpha"]["task_id"]
    assert task and ws.state()["alpha"]["status"] == "submitted"
    polls_before = len(fake_process.gets(f"/api/v3/predictions/{task}/"))

    again = ws.render("--only", "alpha")
    assert again.returncode == 0, again.stderr
    assert fake_process.submits_by_shot() == Counter(alpha=2)  # no re-submit: the old task is polled
    assert len(fake_process.gets(f"/api/v3/predictions/{task}/")) > polls_before
    assert ws.state()["alpha"] == {**ws.state()["alpha"], "status": "done", "task_id": task}
    ws.assert_no_secret()


def test_the_key_never_appears_anywhere(tmp_path: Path, fake_process: FakeProcess) -> None:
    """Rejected key (the fake's 401 echoes it), --verbose, faults: no key in files or output."""
    wrong = "sk-test-WRONG-abcdef0123456789"
    ws = small_workspace(tmp_path / "small", ws_env(fake_process.base_url))
    rejected = ws.render(env=ws_env(fake_process.base_url, wrong), verbose=True)
    assert rejected.returncode == 2  # a rejected key is a setting to fix (issue 23 item 8)
    assert "401" in rejected.stderr and "rejected" in rejected.stderr
    assert any(wrong in json.dumps(r["headers"]) for r in fake_process.requests())  # it was really sent
    rejected_json = ws.render("--json", env=ws_env(fake_process.base_url, wrong), verbose=True)
    assert rejected_json.returncode == 2

    fake_process.fault("500", "/api/v3/kwaivgi/kling-v3.0-std", count=1)
    fake_process.fault("drop", "/api/v3/predictions/", count=2, method="GET")
    fake_process.fault("truncate", "/outputs/", count=1)
    fake_process.fault("envelope", "/api/v3/kwaivgi/kling-video-o3-std/image-to-video", code=400, message="bad request")
    first = ws.render(verbose=True)
    assert first.returncode == 1  # beta rejected
    forced = ws.render("--resubmit-unknown", "--json", verbose=True)
    assert forced.returncode == 0, forced.stderr
    for args in (("status", str(ws.project)), ("status", str(ws.project), "--json")):
        assert ws.cli(*args, verbose=True).returncode == 0
    assert ws.cli("plan", str(ws.project), verbose=True).returncode == 0
    # the server saw the real key; none of our files or outputs did
    assert any(SECRET in json.dumps(r["headers"]) for r in fake_process.requests())
    for secret in (SECRET, wrong):
        assert ws.assert_no_secret(secret) > 10


def test_missing_or_malformed_key_is_one_clear_error(tmp_path: Path, fake_process: FakeProcess) -> None:
    ws = small_workspace(tmp_path / "small", base_env(WAVESPEED_BASE_URL=fake_process.base_url))
    before = sorted(ws.root.rglob("*"))
    missing = ws.render(verbose=True)
    assert missing.returncode == 2  # not "re-run: resumes" (issue 23 item 8)
    assert "WAVESPEED_API_KEY is not set" in missing.stderr and "--provider local" in missing.stderr
    assert sorted(ws.root.rglob("*")) == before  # nothing written
    bad = "sk-test-SECRET-12345\x01678"
    malformed = ws.render(env=ws_env(fake_process.base_url, bad), verbose=True)
    assert malformed.returncode == 2 and "WAVESPEED_API_KEY" in malformed.stderr
    assert "sk-test-SECRET-12345" not in malformed.stderr + malformed.stdout
    assert fake_process.requests() == []


def test_stitch_takes_clip_headers_from_the_memo_of_its_own_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_clips: Path
) -> None:
    """The render's download check (the module's render, ``--no-stitch``) remembers each clip's
    stream headers under its sha256 (the probe memo), so a stitch starts no ffmpeg probe and checks
    no clip; without the memo (a cache from an older version) each clip is checked once,
    structurally (no ffmpeg either), and the cut is the same."""
    monkeypatch.delenv("KLING_RENDER_CACHE", raising=False)
    ws = local_copy(tmp_path, local_clips)
    clips = ws.clips("local")
    assert len(clips) == 3
    from kling_render.store.probes import ProbeMemo

    memo = ProbeMemo(ws.cache_dir)
    for clip in clips:
        checked = memo.get(sha256_file(clip))
        assert checked is not None and checked.info == probe(clip)
    project = load_project(ws.project)
    probe_module = importlib.import_module("kling_render.media.probe")  # the package re-exports probe()
    probes_module = importlib.import_module("kling_render.store.probes")
    probed: list[Path] = []
    checked_paths: list[Path] = []
    monkeypatch.setattr(probe_module, "probe", lambda path: probed.append(path) or probe(path))
    real_check = probes_module.check_structure
    monkeypatch.setattr(probes_module, "check_structure", lambda path: checked_paths.append(path) or real_check(path))
    from_memo = app_cut.stitch(project, "local").path.read_bytes()
    assert probed == [] and checked_paths == []
    shutil.rmtree(ws.cache_dir / "probes")  # as an older version left the cache
    from_checks = app_cut.stitch(project, "local", force=True).path.read_bytes()
    assert probed == [] and sorted(checked_paths) == clips
    assert from_memo == from_checks


def _submitted_days_ago(ws: Workspace, shot: str, days: float, **changes: str) -> None:
    """Move a shot's submit time back (what a week-old state file in CI looks like)."""
    doc = json.loads(ws.state_path.read_text())
    when = datetime.now(UTC) - timedelta(days=days)
    doc["shots"][shot].update(submitted_at=when.isoformat(timespec="seconds"), **changes)
    ws.state_path.write_text(json.dumps(doc))


def test_an_output_past_the_retention_is_given_up_and_the_next_run_resubmits(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    assert ws.render("--only", "alpha", "--no-stitch").returncode == 0
    ws.edit("on a table", "on a shelf")
    fake_process.fault("expired", "/outputs/", count=2)
    failed = ws.render("--only", "alpha")
    assert failed.returncode == 1 and ws.state()["alpha"]["status"] == "submitted"  # a young 404 may pass
    task = ws.state()["alpha"]["task_id"]

    _submitted_days_ago(ws, "alpha", 8)  # WaveSpeed keeps outputs 7 days
    fake_process.fault("expired", "/outputs/", count=2)
    gone = ws.render("--only", "alpha")
    assert gone.returncode == 1
    assert f"task {task} is gone" in gone.stderr and "submitted 8.0 days ago" in gone.stderr
    assert "the next run submits a new task ($0.2520)" in gone.stderr
    assert ws.state()["alpha"]["status"] == "failed"
    assert fake_process.submits_by_shot() == Counter(alpha=2)  # given up, not re-submitted behind the user's back

    again = ws.render("--only", "alpha")
    assert again.returncode == 0, again.stderr
    assert fake_process.submits_by_shot() == Counter(alpha=3)
    assert ws.state()["alpha"]["status"] == "done" and ws.state()["alpha"]["task_id"] != task
    ws.assert_no_secret()


def test_a_task_the_provider_forgot_is_polled_again_until_past_the_retention(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    assert ws.render("--only", "alpha", "--no-stitch").returncode == 0
    ws.edit("on a table", "on a shelf")
    forgotten = "f" * 32  # a task id the server does not know: its poll answers 404
    cost = ws.state()["alpha"]["cost_usd"]
    key = {s["id"]: s["key"] for s in ws.plan()["shots"]}["alpha"]  # the edited shot's new key
    for days, status in ((1, "submitted"), (8, "failed")):
        state = json.loads(ws.state_path.read_text())
        state["shots"]["alpha"].update(key=key, status="submitted", task_id=forgotten, cost_usd=cost)
        ws.state_path.write_text(json.dumps(state))
        _submitted_days_ago(ws, "alpha", days)
        done = ws.render("--only", "alpha")
        assert done.returncode == 1 and "not found (404)" in done.stderr
        assert ws.state()["alpha"]["status"] == status
        assert fake_process.submits_by_shot() == Counter(alpha=1)
    again = ws.render("--only", "alpha")
    assert again.returncode == 0, again.stderr
    assert fake_process.submits_by_shot() == Counter(alpha=2)
