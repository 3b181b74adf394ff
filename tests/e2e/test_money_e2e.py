"""Issue 11 against the stand-in as its own process: every path that can spend money, each counting
the tasks the stand-in created (SPEC §5, §6). The commands run in this process (``in_process``:
what a run decides and pays is the subject, not the interpreter); the real CLI as a process is
kept where the process is the point: the run stopped by SIGTERM while it waits out the grace."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from e2e_cli import SECRET, SMALL_CUT_SECONDS, SMALL_SHOTS, Workspace, base_env, decodes, small_workspace, ws_env
from e2e_fake import FakeProcess
from stress_kit import write_project

pytestmark = pytest.mark.stand_in(latency=0.3)

SUBMIT = "/api/v3/kwaivgi/"
O3 = SUBMIT + "kling-video-o3-std/image-to-video"  # beta's model


@pytest.fixture
def ws(tmp_path: Path, fake_process: FakeProcess) -> Workspace:
    return small_workspace(tmp_path / "small", ws_env(fake_process.base_url), in_process=True)


def tasks(fake_process: FakeProcess) -> dict[str, dict[str, object]]:
    """The tasks the stand-in created (each is paid at submit)."""
    stats: dict[str, dict[str, object]] = fake_process.stats()["tasks"]
    return stats


def created_by_shot(fake_process: FakeProcess) -> Counter[str]:
    """Tasks created per shot (every project here names its shot in its prompts: ``shot <id>``)."""
    counts: Counter[str] = Counter()
    for task in tasks(fake_process).values():
        body = task["body"]
        prompt = body.get("prompt", "") if isinstance(body, dict) else ""
        match = re.match(r"shot (\w+)", str(prompt))
        counts[match.group(1) if match else "?"] += 1
    return counts


def eight_shots(tmp_path: Path, fake_process: FakeProcess) -> Workspace:
    """Eight 3-second o3 shots ($0.54 each), prompts ``shot s000`` ... ``shot s007``."""
    project = write_project(tmp_path / "eight", 8)
    return Workspace(project.parent, ws_env(fake_process.base_url), in_process=True)


# -- rejected and account problems ------------------------------------------------------------


def test_an_error_envelope_reaches_the_user_and_the_shot_is_not_unknown(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    fake_process.fault("envelope", O3, code=400, message="end_image aspect ratio differs from image")
    done = ws.render("--no-stitch")
    assert done.returncode == 1
    assert "beta: failed: submit failed:" in done.stderr
    assert "rejected (code 400): end_image aspect ratio differs from image" in done.stderr
    assert ws.statuses()["beta"] == "failed" and ws.state()["beta"]["error_code"] == "400"
    assert created_by_shot(fake_process) == Counter(alpha=1, gamma=1)  # the rejected submit created nothing
    assert "up to $" not in done.stderr  # nothing is counted as possibly spent

    again = ws.render()  # a rejection costs nothing: the next run simply asks again
    assert again.returncode == 0, again.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)
    ws.assert_no_secret()


@pytest.mark.parametrize(
    ("kind", "options", "words"),
    [
        ("balance", {}, "cannot pay (code 400): Insufficient balance, please top up your account"),
        ("402", {}, "cannot pay (402): Insufficient balance"),
        ("401", {}, "the API key was rejected (401)"),
    ],
)
def test_an_account_problem_stops_every_further_submit(
    ws: Workspace, fake_process: FakeProcess, kind: str, options: dict[str, object], words: str
) -> None:
    """Two tasks at a time: alpha and beta are submitted together, beta's answer says the account
    cannot pay; gamma is never submitted, alpha (already running) is still polled to the end."""
    fake_process.fault(kind, O3, **options)
    done = ws.render("--no-stitch", "--concurrency", "2")
    assert done.returncode == (2 if kind == "401" else 1)  # a rejected key is a setting to fix (issue 23)
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]  # one clear line
    assert words in line and line.endswith("(no more submits this run)")
    assert "internal error" not in done.stderr
    assert Counter(r["body"]["prompt"].split(":")[0] for r in fake_process.submits()) == {
        "shot alpha": 1,
        "shot beta": 1,
    }
    assert created_by_shot(fake_process) == Counter(alpha=1)
    assert ws.statuses() == {"alpha": "done", "beta": "pending", "gamma": "pending"}

    again = ws.render()
    assert again.returncode == 0, again.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)
    ws.assert_no_secret()


def test_a_key_rejected_while_tasks_run_keeps_their_ids(ws: Workspace, fake_process: FakeProcess) -> None:
    """The key stops working between submit and poll: no task id is lost, nothing is paid twice."""
    fake_process.fault("401", "/api/v3/predictions/", count=1000)
    done = ws.render("--no-stitch", "--concurrency", "3")
    assert done.returncode == 2 and "the API key was rejected (401)" in done.stderr
    state = ws.state()
    assert {sid: rec["status"] for sid, rec in state.items()} == dict.fromkeys(SMALL_SHOTS, "submitted")
    assert all(rec["task_id"] in tasks(fake_process) for rec in state.values())
    fake_process.clear_faults()  # the key works again
    again = ws.render()
    assert again.returncode == 0, again.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)  # polled, not paid again


# -- the base URL -----------------------------------------------------------------------------


def test_a_plain_http_base_url_exits_2_before_any_request(tmp_path: Path, fake_process: FakeProcess) -> None:
    """The stand-in is also the HTTP proxy: a request to http://example.invalid would reach it."""
    env = base_env(
        WAVESPEED_BASE_URL="http://example.invalid",
        WAVESPEED_API_KEY=SECRET,
        HTTP_PROXY=fake_process.base_url,
        HTTPS_PROXY=fake_process.base_url,
        ALL_PROXY=fake_process.base_url,
    )
    env.pop("NO_PROXY"), env.pop("no_proxy")
    ws = small_workspace(tmp_path / "small", env, in_process=True)
    before = sorted(ws.root.rglob("*"))
    done = ws.render()
    assert done.returncode == 2, done.stderr
    assert "WAVESPEED_BASE_URL 'http://example.invalid' is plain http to a host that is not loopback" in done.stderr
    assert "Traceback" not in done.stderr
    assert fake_process.requests() == []
    assert sorted(ws.root.rglob("*")) == before  # nothing written
    ws.assert_no_secret()
    status = ws.cli("status", str(ws.project), "--json")  # status needs no network: it still works
    assert status.returncode == 0 and json.loads(status.stdout)["provider"] == "wavespeed"


# -- failed tasks by cause, refunds and the lifetime cap ----------------------------------------


def test_every_fourth_task_failing_by_moderation_is_paid_once_and_never_again(
    tmp_path: Path, fake_process: FakeProcess
) -> None:
    ws = eight_shots(tmp_path, fake_process)
    fake_process.fault("fail", SUBMIT, count=100, every=4, code=1200, error="the prompt was flagged by moderation")
    first = ws.render("--no-stitch", "--concurrency", "2")
    assert first.returncode == 1
    created = created_by_shot(fake_process)
    assert len(created) == 8 and set(created.values()) == {1}  # one task per shot, 0 retries
    failed = sorted(sid for sid, status in ws.statuses().items() if status == "failed")
    assert len(failed) == 2
    summary = [ln for ln in first.stderr.splitlines() if ln.startswith("  ")]  # the lines after the run
    assert len(summary) == 2
    for sid, line in zip(failed, summary, strict=True):
        assert line.startswith(f"  {sid}: failed: task ")
        assert "(code 1200): the prompt was flagged by moderation; refunded" in line
    assert "spent $3.2400 ($1.0800 of failed tasks refunded)" in first.stderr

    second = ws.render("--no-stitch")  # and the next run: 0 new tasks
    assert second.returncode == 1 and sum(created_by_shot(fake_process).values()) == 8
    assert second.stderr.count("failed for good (code 1200)") == 4 and "spent $0.0000" in second.stderr
    doc = json.loads(ws.cli("status", str(ws.project), "--json").stdout)
    for shot in doc["shots"]:
        if shot["id"] in failed:
            assert shot["error_code"] == "1200" and shot["refunded_usd"] == pytest.approx(0.54)
            assert shot["ledger"] == {"tasks": 1, "paid_usd": 0.0, "refunded_usd": 0.54, "failed_for_good": True}
        else:
            assert shot["ledger"] == {"tasks": 1, "paid_usd": 0.54, "refunded_usd": 0.0, "failed_for_good": False}

    forced = ws.render("--no-stitch", "--retry-failed")  # the user asks: each gets a new task
    assert sum(created_by_shot(fake_process).values()) == 10
    assert forced.returncode == (0 if all(ws.statuses()[sid] == "done" for sid in failed) else 1)


def test_every_fourth_task_failing_transiently_still_finishes(tmp_path: Path, fake_process: FakeProcess) -> None:
    ws = eight_shots(tmp_path, fake_process)
    fake_process.fault("fail", SUBMIT, count=100, every=4, code=5000, error="internal error")
    done = ws.render("--no-stitch", "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    created = created_by_shot(fake_process)
    assert sum(created.values()) == 10 and max(created.values()) == 2  # tasks 4 and 8 replaced
    assert "spent $4.3200 ($1.0800 of failed tasks refunded)" in done.stderr
    assert set(ws.statuses().values()) == {"done"}


@pytest.mark.parametrize(
    ("kind", "options"),
    [("no_outputs", {}), ("output_url", {"url": ""}), ("output_url", {"url": "{base}/pages/error.html"})],
    ids=["no outputs", "empty URL", "a web page"],
)
def test_a_completed_but_unusable_result_is_paid_counted_and_fetched_again_before_a_replacement(
    ws: Workspace, fake_process: FakeProcess, kind: str, options: dict[str, object]
) -> None:
    """Free first (issue 23 item 1): never two paid tasks for a shot in one run; the next run fetches
    the kept task again (free), and pays a replacement only because that fails too."""
    fake_process.fault(kind, O3, **options)
    first = ws.render("--no-stitch")
    assert first.returncode == 1, first.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)  # beta not paid twice
    assert "(paid)" in first.stderr and "the next run fetches its output again" in first.stderr
    assert "refunded" not in first.stderr and "spent $1.0440" in first.stderr  # 0.252 + 0.54 + 0.252
    assert ws.statuses()["beta"] == "submitted"  # its task kept for the next run
    second = ws.render("--no-stitch")
    assert second.returncode == 0, second.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=2, gamma=1)  # its task was unusable again: replaced
    assert "spent $0.5400" in second.stderr


def test_the_lifetime_cap_holds_across_runs(ws: Workspace, fake_process: FakeProcess) -> None:
    fake_process.fault("no_outputs", O3, count=100)
    for run, paid in enumerate((1, 2, 3), 1):  # one paid task a run: each kept task fetched again first
        done = ws.render("--no-stitch")
        assert done.returncode == 1 and created_by_shot(fake_process)["beta"] == paid, (run, done.stderr)
    again = ws.render("--no-stitch")
    assert again.returncode == 1 and created_by_shot(fake_process)["beta"] == 3  # nothing more, ever
    assert "beta: failed:" in again.stderr and "the cap of 3" in again.stderr
    assert "spent $0.0000" in again.stderr
    fake_process.clear_faults()
    forced = ws.render("--retry-failed")
    assert forced.returncode == 0, forced.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=4, gamma=1)


def test_a_clip_of_the_wrong_length_is_kept_and_a_trim_past_its_end_is_a_clear_error(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    fake_process.fault("length", SUBMIT + "kling-v3.0-std", seconds=2)  # alpha asks 3 s, gets 2 s
    done = ws.render()
    assert done.returncode == 0, done.stderr
    assert "alpha: warning: the clip lasts 2.00s, the shot 3s: kept" in done.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)  # not paid again
    assert decodes(ws.final_cut).duration == pytest.approx(SMALL_CUT_SECONDS - 1, abs=2 / 24)  # its real length
    lock = json.loads((ws.root / "project.lock").read_text())["shots"]
    assert lock["alpha"]["duration"] == pytest.approx(2.0, abs=0.05)

    ws.edit("    image: images/mug.png\n  - id: beta", "    image: images/mug.png\n    trim: {end: 2.8}\n  - id: beta")
    cut = ws.cli("stitch", str(ws.project))
    assert cut.returncode == 1
    assert "alpha: trim end 2.8 is past the clip's end (2.000s)" in cut.stderr
    assert "Traceback" not in cut.stderr and "internal error" not in cut.stderr
    assert ws.render().returncode == 1 and created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)


# -- lost answers: reconciliation through the task list ------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options"),
    [("503", {}), ("500", {}), ("502", {}), ("504", {}), ("drop", {}), ("hang", {"seconds": 1})],
)
def test_every_third_answer_lost_after_creation_pays_each_shot_once(
    tmp_path: Path, fake_process: FakeProcess, kind: str, options: dict[str, object]
) -> None:
    """The stand-in creates the task, then answers ``kind``: the runner finds each in the task list."""
    ws = eight_shots(tmp_path, fake_process)
    fake_process.fault(kind, SUBMIT, count=100, every=3, **options)
    runs = []
    for _ in range(3):
        runs.append(ws.render("--no-stitch", "--concurrency", "2"))
        if runs[-1].returncode == 0:
            break
    assert runs[-1].returncode == 0, runs[-1].stderr
    created = created_by_shot(fake_process)
    assert len(created) == 8 and set(created.values()) == {1}  # no shot has two tasks
    lost = sum(1 for r in fake_process.submits() if r["status"] != 200)
    assert lost >= 2 and sum(r.stderr.count(": reconciled (") for r in runs) == lost
    assert "spent $4.3200" in runs[0].stderr and "up to $" not in runs[-1].stderr
    assert set(ws.statuses().values()) == {"done"}
    ws.assert_no_secret()


def test_a_submit_that_created_nothing_is_sent_again_after_the_grace(tmp_path: Path, fake_process: FakeProcess) -> None:
    env = ws_env(fake_process.base_url) | {"KLING_RENDER_RECONCILE_GRACE": "1"}
    ws = small_workspace(tmp_path / "small", env, in_process=True)
    fake_process.fault("500", O3, create=False)
    done = ws.render("--no-stitch")
    assert done.returncode == 0, done.stderr
    assert "beta: reconciled (the provider's task list, asked 1s after the submit, has no task" in done.stderr
    assert "the submit created nothing; it may be submitted again" in done.stderr
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)
    assert Counter(r["body"]["prompt"].split(":")[0] for r in fake_process.submits())["shot beta"] == 2
    assert "spent $1.0440" in done.stderr


def test_the_product_waits_the_full_grace_before_paying_again(tmp_path: Path, fake_process: FakeProcess) -> None:
    """Without the test knob, a submit seconds old is not proven absent: the run keeps waiting (and
    is stopped here with SIGTERM once it has asked the task list and waited 2 s more) instead of
    paying a second time."""
    ws = small_workspace(tmp_path / "small", ws_env(fake_process.base_url))
    fake_process.fault("500", O3, create=False)
    cmd = [sys.executable, "-m", "kling_render", "render", str(ws.project), "--no-stitch", "--poll-interval", "0.05"]
    with subprocess.Popen(cmd, env=ws.env, cwd=ws.root, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 90  # a loaded machine starts the run late: wait for what it did, not a time
        while time.monotonic() < deadline and proc.poll() is None:
            asked = any(r["path"] == "/api/v3/predictions" for r in fake_process.requests())
            if asked and any("shot beta" in str(r["body"].get("prompt")) for r in fake_process.submits()):
                break
            time.sleep(0.1)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "beta: unknown" in err and "beta: reconciled" not in err
    assert Counter(r["body"]["prompt"].split(":")[0] for r in fake_process.submits())["shot beta"] == 1
    assert len([r for r in fake_process.requests() if r["path"] == "/api/v3/predictions"]) >= 1  # it did ask
    assert ws.state()["beta"]["status"] == "unknown"


@pytest.mark.stand_in(latency=0.3, args=("--no-list-inputs",))
def test_ambiguous_lost_answers_stay_unknown_and_say_how_many(tmp_path: Path, fake_process: FakeProcess) -> None:
    ws = eight_shots(tmp_path, fake_process)
    fake_process.fault("503", SUBMIT, count=2)  # the first two submits lose their answers
    first = ws.render("--no-stitch", "--concurrency", "2")
    assert first.returncode == 1
    unknown = sorted(sid for sid, st in ws.statuses().items() if st == "unknown")
    assert len(unknown) == 2
    for sid in unknown:
        assert re.search(rf"{sid}: unknown: .*not resolved: \d+ tasks in the provider's task list", first.stderr)
    again = ws.render("--no-stitch")  # the other tasks are known now: exactly two candidates
    assert again.returncode == 1 and again.stderr.count("not resolved: 2 tasks in the provider's task list") >= 2
    assert sum(created_by_shot(fake_process).values()) == 8
    forced = ws.render("--no-stitch", "--resubmit-unknown")
    assert forced.returncode == 0, forced.stderr
    assert sum(created_by_shot(fake_process).values()) == 10  # the override pays for the two again


# -- task ids -------------------------------------------------------------------------------------


def test_a_bad_task_id_from_the_server_is_never_used_and_the_task_is_found(
    ws: Workspace, fake_process: FakeProcess
) -> None:
    fake_process.fault("bad_id", O3, task_id="x" * 70_000)  # the task exists; its answer names it badly
    done = ws.render("--no-stitch")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "task id 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is not a usable id" in done.stderr
    assert "beta: reconciled (found task" in done.stderr and len(done.stderr) < 20_000
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)
    assert ws.state()["beta"]["task_id"] in tasks(fake_process)


def test_bad_task_ids_in_the_state_file_never_crash_a_run(ws: Workspace, fake_process: FakeProcess) -> None:
    fake_process.fault("401", "/api/v3/predictions/", count=1000)  # every shot submitted, none polled
    assert ws.render("--no-stitch", "--concurrency", "3").returncode == 2  # the key was rejected (issue 23 item 8)
    fake_process.clear_faults()
    doc = json.loads(ws.state_path.read_text())
    doc["shots"]["beta"]["task_id"] = "abc\ndef"  # the ledger still knows beta's task
    doc["shots"]["gamma"]["task_id"] = "y" * 70_000
    for entries in doc["ledger"].values():  # gamma's is lost from the ledger too: only the list can tell
        for entry in entries:
            if entry["shot"] == "gamma":
                entry["task_id"] = "../" * 30_000
    ws.state_path.write_text(json.dumps(doc))

    status = ws.cli("status", str(ws.project), "--json")
    assert status.returncode == 0, status.stderr
    shots = {s["id"]: s for s in json.loads(status.stdout)["shots"]}
    for sid in ("beta", "gamma"):
        assert shots[sid]["status"] == "unknown" and shots[sid]["task_id"] is None
        assert "unusable task id" in shots[sid]["error"] and len(shots[sid]["error"]) < 300
    done = ws.render()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(done.stderr) < 20_000
    assert "beta: reconciled (the state's task ledger still holds its task" in done.stderr
    assert "gamma: reconciled (found task" in done.stderr  # found again by its inputs
    assert created_by_shot(fake_process) == Counter(alpha=1, beta=1, gamma=1)  # nothing paid twice


# -- concurrency ----------------------------------------------------------------------------------


@pytest.mark.stand_in(latency=0.6)
@pytest.mark.parametrize(
    ("option", "flag", "most"),
    [("", (), {2}), ("1", (), {1}), ("1", ("--concurrency", "3"), {2, 3})],
    ids=["default", "project", "flag"],
)
def test_concurrency_is_2_by_default_and_settable_in_the_project_and_by_flag(
    tmp_path: Path, fake_process: FakeProcess, option: str, flag: tuple[str, ...], most: set[int]
) -> None:
    ws = eight_shots(tmp_path, fake_process)
    if option:
        setting = f"provider_options: {{wavespeed: {{concurrency: {option}}}}}"
        ws.edit("provider: wavespeed\n", f"provider: wavespeed\n{setting}\n")
    done = ws.cli("render", str(ws.project), "--no-stitch", "--poll-interval", "0.05", *flag)
    assert done.returncode == 0, done.stderr
    assert fake_process.stats()["max_running"] in most


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ("{wavespeed: {concurrency: 0}}", "provider_options.wavespeed.concurrency"),
        ("{wavespeed: {concurrency: 1.5}}", "provider_options.wavespeed.concurrency"),
        ("{wavespeed: {parallel: 2}}", "provider_options.wavespeed"),
        ("{replicate: {concurrency: 2}}", "provider_options"),  # not a provider kling-render knows
        ("{fal: {concurrency: 65}}", "provider_options.fal.concurrency"),
    ],
)
def test_bad_provider_options_are_exit_2_with_a_line(tmp_path: Path, options: str, problem: str) -> None:
    ws = small_workspace(tmp_path / "small", base_env(), in_process=True)
    ws.edit("provider: wavespeed\n", f"provider: wavespeed\nprovider_options: {options}\n")
    done = ws.cli("validate", str(ws.project))
    assert done.returncode == 2, done.stderr
    assert re.search(rf"project\.yaml:4: {re.escape(problem)}", done.stderr), done.stderr


# -- a cached clip that goes bad: free first (issue 23 item 1) ---------------------------------


@pytest.mark.parametrize("damage", ["rotten bytes", "deleted"])
def test_a_done_shot_whose_cached_clip_goes_bad_is_fetched_again_from_its_task_for_free(
    ws: Workspace, fake_process: FakeProcess, damage: str
) -> None:
    """A done shot whose clip later fails its digest (quarantined) or leaves the cache gets its
    task's output again, free while the provider keeps it: no new task, the same bytes, a cut."""
    first = ws.render()
    assert first.returncode == 0, first.stderr
    paid = created_by_shot(fake_process)
    assert sum(paid.values()) == len(SMALL_SHOTS)
    clip = ws.clips()[0]
    good = clip.read_bytes()
    if damage == "deleted":
        clip.unlink()
    else:
        clip.write_bytes(good[:1000] + b"\0" * 64 + good[1064:])
    again = ws.render("--force")
    assert again.returncode == 0, again.stderr
    assert created_by_shot(fake_process) == paid  # nothing paid again
    assert "fetched again (free)" in again.stderr
    assert good in [c.read_bytes() for c in ws.clips()]
    assert set(ws.statuses().values()) == {"done"}
