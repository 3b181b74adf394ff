"""Issue 14's "Done when": checkouts on separate directories and local caches share one remote
(moto on 127.0.0.1) and one stand-in WaveSpeed; every path that can spend money counts the tasks
the stand-in created. Machines that run at the same time, and a machine killed with -9, are real
CLI processes (``Checkout.start``); a command run while no other machine runs runs in this process
(``in_process``, teams_kit.checkouts)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import S3_KEY_ID, S3_SECRET, S3_TOKEN, S3Case
from e2e_cli import SECRET, base_env
from e2e_fake import FakeProcess
from s3_proxy import Rule, S3Proxy
from stress_kit import shot_id
from teams_kit import MODEL_PATH, Checkout, checkouts, kill9, kinds, paid_by_shot, tasks, team_env, wait_until

pytestmark = pytest.mark.stand_in(latency=0.6)

EIGHT = Counter({shot_id(n): 1 for n in range(8)})


def test_two_checkouts_at_once_pay_each_shot_once_and_cut_the_same_bytes(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    one, two, three = checkouts(tmp_path, team_env(fake_process, s3.env()), 3)
    procs = [one.start_render(), two.start_render()]
    (rc1, ev1, err1), (rc2, ev2, err2) = one.finish(procs[0]), two.finish(procs[1])
    assert rc1 == 0, err1
    assert rc2 == 0, err2
    assert paid_by_shot(fake_process) == EIGHT  # 8 tasks in total, one per shot
    assert one.cut_bytes() == two.cut_bytes()
    # Each machine paid for some shots and used the other's task or clip for the rest.
    claimed = Counter(e["shot_id"] for e in ev1 + ev2 if e["event"] == "claimed")
    assert claimed == EIGHT, claimed
    assert {"following", "waiting", "pulled"} & set(kinds(ev1 + ev2)), kinds(ev1 + ev2)

    # A third checkout with an empty local cache pays nothing and makes the same cut.
    assert not three.cache_dir.exists()
    rc3, ev3, err3 = three.finish(three.start_render())
    assert rc3 == 0, err3
    assert len(tasks(fake_process)) == 8
    assert kinds(ev3).count("pulled") == 8 and "claimed" not in kinds(ev3)
    assert three.cut_bytes() == one.cut_bytes()
    for checkout in (one, two, three):  # no credential in any file or output, the remote's neither
        for secret in (SECRET, S3_SECRET, S3_TOKEN):
            checkout.assert_no_secret(secret)


def test_shards_on_two_machines_pay_for_the_edits_and_a_third_machine_stitches(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    one, two, three = checkouts(tmp_path, team_env(fake_process, s3.env()), 3)
    first = one.render()
    assert first.returncode == 0, first.stderr
    assert len(tasks(fake_process)) == 8
    for checkout in (one, two, three):  # the same two prompt edits, as pulled from git on each machine
        checkout.edit("shot s002, a mug", "shot s002, a red mug")
        checkout.edit("shot s005, a mug", "shot s005, a blue mug")

    shard1, shard2 = one.start_render("--shard", "1/2"), two.start_render("--shard", "2/2")
    (rc1, ev1, err1), (rc2, ev2, err2) = one.finish(shard1), two.finish(shard2)
    assert rc1 == 0, err1
    assert rc2 == 0, err2
    assert paid_by_shot(fake_process) == EIGHT + Counter(s002=1, s005=1)  # 2 more tasks, one per edit
    mine = [{s["id"] for e in ev if e["event"] == "finished" for s in e["shots"]} for ev in (ev1, ev2)]
    assert not mine[0] & mine[1] and mine[0] | mine[1] == set(EIGHT)  # a split of the shots
    assert "stitching" not in kinds(ev1 + ev2)  # a shard does not stitch

    # A third machine, empty cache, no API key: stitch pulls every clip, makes the cut, records the lock.
    three.env.pop("WAVESPEED_API_KEY")
    done = three.cli("stitch", str(three.project))
    assert done.returncode == 0, done.stderr
    assert len(tasks(fake_process)) == 10
    lock = json.loads(three.project.with_suffix(".lock").read_text())["shots"]
    plan = {s["id"]: s["key"] for s in three.plan()["shots"]}
    assert {sid: e["key"] for sid, e in lock.items()} == plan
    assert lock["s002"]["prompt"] == "shot s002, a red mug on a table"
    # The cut is the one a full render on the first machine makes now, for $0.
    again = one.render()
    assert again.returncode == 0, again.stderr
    assert len(tasks(fake_process)) == 10
    assert three.cut_bytes() == one.cut_bytes()


def claim_of(s3: S3Case, checkout: Checkout, shot: str) -> dict[str, Any] | None:
    key = {s["id"]: s["key"] for s in checkout.plan()["shots"]}[shot]
    try:
        data = s3.server.get_raw(s3.bucket, f"{s3.prefix}/claims/{key}")
    except Exception:
        return None
    doc: dict[str, Any] = json.loads(data)
    return doc


@pytest.mark.parametrize(
    ("point", "fault"),
    [
        # the POST reached the service, which created nothing: the claim has a wire, no task id
        ("before the task exists", {"kind": "hang", "create": False}),
        # the service created the task, the answer never came: the claim has a wire, no task id
        ("after submit, before the task id is recorded", {"kind": "hang", "create": True}),
        # the claim names the task; the task runs for a while
        ("after the task id is recorded", {"kind": "slow", "latency": 4.0}),
    ],
)
def test_kill_9_while_holding_a_claim_never_pays_twice(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case, point: str, fault: dict[str, Any]
) -> None:
    one, two = checkouts(tmp_path, team_env(fake_process, s3.env()), 2, shots=1)
    fake_process.fault(fault.pop("kind"), MODEL_PATH, **fault)
    holder = one.start_render()
    if point == "after the task id is recorded":
        wait_until(lambda: (claim_of(s3, one, "s000") or {}).get("task_id"), what="the task id in the claim")
    else:
        wait_until(lambda: fake_process.submits(), what="the submit to reach the service")
        claim = claim_of(s3, one, "s000")
        assert claim is not None and claim["status"] == "active" and claim["task_id"] is None and claim["wire"]
    created = len(tasks(fake_process))
    assert created == (0 if point == "before the task exists" else 1)
    kill9(holder)

    # Another machine: never pays for a task that exists, pays once for one that does not.
    rc, events, err = two.finish(two.start_render())
    assert rc == 0, err
    assert paid_by_shot(fake_process) == Counter(s000=1)
    claim = claim_of(s3, two, "s000")
    assert claim is not None and claim["status"] == "done" and claim["attempts"] == 1
    if point == "after submit, before the task id is recorded":
        assert "reconciled" in kinds(events)
    if point == "after the task id is recorded":
        assert "following" in kinds(events) and "claimed" not in kinds(events)

    # The killed machine resumes: it pays nothing and cuts the same clip.
    again = one.render()
    assert again.returncode == 0, again.stderr
    assert paid_by_shot(fake_process) == Counter(s000=1)
    assert one.cut_bytes() == two.cut_bytes()


def failed_shots(fake_process: FakeProcess) -> Counter[str]:
    counts: Counter[str] = Counter()
    for task in tasks(fake_process).values():
        if task["failed"]:
            counts[str(task["body"]["prompt"]).split(",")[0].removeprefix("shot ")] += 1
    return counts


def test_a_permanent_failure_on_one_machine_is_not_paid_again_by_another(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    one, two = checkouts(tmp_path, team_env(fake_process, s3.env()), 2, shots=2)
    fake_process.fault("fail", MODEL_PATH, code=1200, error="content moderation: the prompt was flagged")
    first = one.render("--no-stitch")
    assert first.returncode == 1
    [bad] = failed_shots(fake_process)
    good = ({"s000", "s001"} - {bad}).pop()
    assert paid_by_shot(fake_process) == Counter({bad: 1, good: 1})
    claim = claim_of(s3, one, bad)
    assert claim is not None and (claim["status"], claim["permanent"]) == ("failed", True)

    second = two.render("--no-stitch")
    assert second.returncode == 1
    assert paid_by_shot(fake_process) == Counter({bad: 1, good: 1})  # nothing paid on the second machine
    [line] = [ln for ln in second.stderr.splitlines() if ln.startswith(f"  {bad}: failed: ")]
    assert "its claim on the remote says it failed for good" in line and "content moderation" in line
    assert len(two.clips()) == 1  # the good shot's clip, pulled

    # Asked for explicitly, the second machine takes the claim over and pays once.
    retried = two.render("--no-stitch", "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert paid_by_shot(fake_process) == Counter({bad: 2, good: 1})


def test_the_lifetime_cap_holds_across_machines(tmp_path: Path, fake_process: FakeProcess, s3: S3Case) -> None:
    """Three transient failures on one machine use the key's cap: another machine pays nothing."""
    one, two = checkouts(tmp_path, team_env(fake_process, s3.env()), 2, shots=1)
    fake_process.fault("fail", MODEL_PATH, count=3, code=5000, error="internal error")
    first = one.render("--no-stitch")
    assert first.returncode == 1
    assert paid_by_shot(fake_process) == Counter(s000=3)
    claim = claim_of(s3, one, "s000")
    assert claim is not None and claim["attempts"] == 3 and claim["status"] == "failed"
    second = two.render("--no-stitch")
    assert second.returncode == 1
    assert "over all machines" in second.stderr and "the cap of 3" in second.stderr
    assert paid_by_shot(fake_process) == Counter(s000=3)


def test_a_tampered_remote_clip_is_never_used(tmp_path: Path, fake_process: FakeProcess, s3: S3Case) -> None:
    one, two, three = checkouts(tmp_path, team_env(fake_process, s3.env()), 3, shots=2)
    first = one.render()
    assert first.returncode == 0, first.stderr
    blobs = [k for k in s3.server.list_raw(s3.bucket) if "/blobs/" in k]
    assert len(blobs) == 1  # the stand-in's clips of one length are the same bytes
    data = bytearray(s3.server.get_raw(s3.bucket, blobs[0]))
    data[len(data) // 2] ^= 0xFF  # one byte, same size
    s3.server.put_raw(s3.bucket, blobs[0], bytes(data))

    done = two.render()
    assert done.returncode == 1
    failed = [ln for ln in done.stderr.splitlines() if ln.startswith("  s00")]
    assert len(failed) == 2 and all("does not match its record" in ln for ln in failed), done.stderr
    assert len(tasks(fake_process)) == 2  # never paid again for a clip the remote holds
    assert not two.clips()  # nothing damaged reached the cache
    assert not two.final_cut.exists()
    stitched = three.cli("stitch", str(three.project))
    assert stitched.returncode == 1 and "does not match its record" in stitched.stderr
    assert not three.final_cut.exists()


@pytest.mark.parametrize("answer", [412, 409])
def test_a_lost_race_answered_412_or_409_never_pays_twice(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case, answer: int
) -> None:
    """S3 answers a lost conditional write 412; some S3-compatible stores answer 409: both are a lost
    race, and two machines still pay once per shot. The proxy passes moto's answers through (412) or
    rewrites them (409), and counts the lost claim writes on the wire."""
    with S3Proxy(s3.server.endpoint) as proxy:
        if answer == 409:
            proxy.add(Rule("rewrite-412-to-409", method="PUT"))
        one, two = checkouts(tmp_path, team_env(fake_process, s3.env(proxy.endpoint)), 2, shots=4)
        fake_process.fault("slow", MODEL_PATH, count=4, latency=3.0)  # claims are held for seconds
        first = one.start_render()
        wait_until(lambda: [k for k in s3.server.list_raw(s3.bucket) if "/claims/" in k], what="a claim")
        second = two.start_render()  # its first claims meet the first machine's
        (rc1, _, err1), (rc2, _, err2) = one.finish(first), two.finish(second)
        assert rc1 == 0, err1
        assert rc2 == 0, err2
        lost = [(m, p) for m, p, status in proxy.requests if status == answer and "/claims/" in p]
        assert lost and {m for m, _ in lost} == {"PUT"}, proxy.requests  # claim writes lost, with that answer
        assert answer == 412 or proxy.hits("rewrite-412-to-409") >= len(lost)
    assert paid_by_shot(fake_process) == Counter({shot_id(n): 1 for n in range(4)})
    assert len(fake_process.submits()) == 4  # not even a POST that created nothing
    assert one.cut_bytes() == two.cut_bytes()


def test_plan_and_status_count_the_remote_clips_and_a_remote_error_is_exit_1(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    one, two = checkouts(tmp_path, team_env(fake_process, s3.env()), 2, shots=3)
    one.in_process = two.in_process = True
    before = two.plan()
    assert {s["status"] for s in before["shots"]} == {"render"} and before["to_render_cost_usd"] > 0
    first = one.render("--no-stitch")
    assert first.returncode == 0, first.stderr

    plan = two.plan()  # an empty local cache: the remote's clips count as cached
    assert {s["status"] for s in plan["shots"]} == {"cached"} and plan["to_render_cost_usd"] == 0
    status = two.status()
    assert {s["id"]: (s["status"], s["cached"]) for s in status["shots"]} == dict.fromkeys(
        ("s000", "s001", "s002"), ("done", True)
    )
    assert not two.clips()  # counting pulls nothing

    with S3Proxy(s3.server.endpoint) as proxy:  # the remote refuses every request
        proxy.add(Rule("status", status=403))
        two.env["AWS_ENDPOINT_URL"] = proxy.endpoint
        for command in ("plan", "status"):
            done = two.cli(command, str(two.project))
            assert done.returncode == 1, (command, done.stdout)
            assert done.stderr.startswith("error: ") and "refused (access denied)" in done.stderr
            assert done.stdout == ""  # never a plan that says everything must be paid
        rendered = two.render()
        assert rendered.returncode == 1 and "refused (access denied)" in rendered.stderr
    assert len(tasks(fake_process)) == 3  # nothing paid while the remote could not be read
    two.assert_no_secret(S3_SECRET)


def test_shard_needs_a_remote_and_a_valid_k_of_n(tmp_path: Path, fake_process: FakeProcess, s3: S3Case) -> None:
    env = team_env(fake_process, s3.env())
    env.pop("KLING_RENDER_REMOTE")
    [alone] = checkouts(tmp_path, env, 1, shots=2)
    alone.in_process = True
    done = alone.render("--shard", "1/2")
    assert done.returncode == 2 and "--shard needs a remote" in done.stderr
    for bad in ("0/2", "3/2", "1", "a/b"):
        done = alone.render("--shard", bad)
        assert done.returncode == 2 and "--shard" in done.stderr, (bad, done.stderr)
    assert not (alone.root / ".kling-render").exists() and len(tasks(fake_process)) == 0


def test_a_cache_made_before_the_remote_is_pushed_and_another_machine_pays_nothing(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    env = team_env(fake_process, s3.env())
    one, two = checkouts(tmp_path, env, 2, shots=2)
    one.env.pop("KLING_RENDER_REMOTE")
    first = one.render("--no-stitch")
    assert first.returncode == 0, first.stderr
    one.env["KLING_RENDER_REMOTE"] = env["KLING_RENDER_REMOTE"]
    rc, events, err = one.finish(one.start_render("--no-stitch"))
    assert rc == 0, err
    assert kinds(events).count("pushed") == 2 and "claimed" not in kinds(events)
    rc, events, err = two.finish(two.start_render("--no-stitch"))
    assert rc == 0, err
    assert kinds(events).count("pulled") == 2
    assert len(tasks(fake_process)) == 2


def test_a_free_provider_shares_clips_through_the_remote_and_takes_no_claims(tmp_path: Path, s3: S3Case) -> None:
    env = base_env(**s3.env())
    one, two = checkouts(tmp_path, env, 2, shots=2)
    rc, events, err = one.finish(one.start_render("--provider", "local", "--no-stitch"))
    assert rc == 0, err
    assert kinds(events).count("pushed") == 2
    rc, events, err = two.finish(two.start_render("--provider", "local", "--no-stitch"))
    assert rc == 0, err
    assert kinds(events).count("pulled") == 2 and "submitting" not in kinds(events)
    stored = s3.server.list_raw(s3.bucket)
    assert not [k for k in stored if "/claims/" in k]
    assert len([k for k in stored if "/clips/local/" in k]) == 2


def set_project_remote(checkout: Checkout, url: str) -> None:
    text = checkout.project.read_text()
    checkout.project.write_text(text.replace("provider: wavespeed\n", f"provider: wavespeed\nremote: {url}\n", 1))


def test_the_remote_named_in_the_project_is_used_and_the_environment_wins(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case
) -> None:
    env = team_env(fake_process, s3.env())
    env.pop("KLING_RENDER_REMOTE")
    one, two, three = checkouts(tmp_path, env, 3, shots=2)
    for checkout in (one, two):
        set_project_remote(checkout, s3.url)
    set_project_remote(three, f"s3://{s3.bucket}/not-this-one")

    first = one.render("--no-stitch")  # the project's remote: claims and clips go there
    assert first.returncode == 0, first.stderr
    assert paid_by_shot(fake_process) == Counter(s000=1, s001=1)
    rc, events, err = two.finish(two.start_render("--no-stitch"))
    assert rc == 0, err
    assert kinds(events).count("pulled") == 2 and len(tasks(fake_process)) == 2

    three.env["KLING_RENDER_REMOTE"] = s3.url  # wins over the project's remote: line
    rc, events, err = three.finish(three.start_render("--no-stitch"))
    assert rc == 0, err
    assert kinds(events).count("pulled") == 2 and len(tasks(fake_process)) == 2
    stored = s3.server.list_raw(s3.bucket)
    assert stored and all(k.startswith(f"{s3.prefix}/") for k in stored), stored


@pytest.mark.parametrize("endpoint", ["http://10.0.0.5:9000", "http://169.254.169.254", "http://127.0.0.1.nip.io:9000"])
def test_plain_http_to_another_machine_stops_every_command_before_anything(
    tmp_path: Path, fake_process: FakeProcess, s3: S3Case, endpoint: str
) -> None:
    """Credentials would cross the network unencrypted: exit 2 before any request, task or file."""
    [checkout] = checkouts(tmp_path, team_env(fake_process, s3.env(endpoint)), 1, shots=2)
    checkout.in_process = True
    before = sorted(p.relative_to(checkout.root) for p in checkout.root.rglob("*"))
    for command in (["render"], ["render", "--shard", "1/2"], ["plan"], ["status"], ["stitch"]):
        done = checkout.cli(command[0], str(checkout.project), *command[1:])
        assert done.returncode == 2, (command, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith("error: AWS_ENDPOINT_URL=") and "plain http is allowed only to this machine" in line
    assert len(fake_process.submits()) == 0
    assert sorted(p.relative_to(checkout.root) for p in checkout.root.rglob("*")) == before  # nothing written
    for secret in (SECRET, S3_SECRET, S3_TOKEN, S3_KEY_ID):
        checkout.assert_no_secret(secret)
