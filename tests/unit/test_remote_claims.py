"""Claims on the remote: create-only before money, the task id by compare-and-swap, lost races
as results, and what a run does with a claim it finds. Against moto (real S3 API) and file://."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import S3Case
from remote_kit import open_env_remote, run
from s3_proxy import Rule, S3Proxy

from kling_render.errors import RemoteIntegrityError
from kling_render.store.remote.claims import STALE_AFTER, Claim, ClaimRecord, Lost, Owner, Won, judge

HERE = Path(__file__).resolve().parents[1]  # tests/: the support modules
RACER = HERE / "remote_racer.py"
KEY = "0123456789abcdef" * 4


def keys(n: int) -> list[str]:
    return [f"{i:04x}" * 16 for i in range(n)]


# -- one process ----------------------------------------------------------------------------------


def test_acquire_record_finish_and_the_lost_races(s3: S3Case) -> None:
    a = open_env_remote("run-a").claims
    b = open_env_remote("run-b").claims
    won = run(a.acquire(KEY, provider="wavespeed", model="kling-v3"))
    assert isinstance(won, Won)
    assert (won.claim.record.status, won.claim.task_id, won.claim.record.attempts) == ("active", None, 0)
    lost = run(b.acquire(KEY, provider="wavespeed", model="kling-v3"))
    assert isinstance(lost, Lost) and lost.current is not None
    assert lost.current.record.owner.run_id == "run-a"

    recorded = run(a.record_task(won.claim, "task-1"))
    assert isinstance(recorded, Won) and recorded.claim.task_id == "task-1" and recorded.claim.record.attempts == 1
    stale = run(b.record_task(lost.current, "task-2"))  # b still holds the ETag from before task-1
    assert isinstance(stale, Lost) and stale.current is not None and stale.current.task_id == "task-1"

    stored = json.loads(s3.server.get_raw(s3.bucket, f"{s3.prefix}/claims/{KEY}"))
    assert stored["task_id"] == "task-1" and stored["owner"]["run_id"] == "run-a"
    assert stored["owner"]["host"] and stored["owner"]["pid"] == os.getpid()
    assert stored["submitted_at"] and stored["created_at"] and stored["provider"] == "wavespeed"

    done = run(b.finish(stale.current, "done", output_sha256="f" * 64))  # a follower may finish it
    assert isinstance(done, Won) and done.claim.record.status == "done"
    read = run(a.read(KEY))
    assert read is not None and read.record == done.claim.record and read.etag == done.claim.etag


def test_take_over_keeps_the_paid_count_and_the_history(s3: S3Case) -> None:
    a = open_env_remote("run-a").claims
    won = run(a.acquire(KEY, provider="wavespeed", model="m"))
    assert isinstance(won, Won)
    recorded = run(a.record_task(won.claim, "task-1"))
    assert isinstance(recorded, Won)
    failed = run(a.finish(recorded.claim, "failed", error="task-1 failed: 5000 internal"))
    assert isinstance(failed, Won)
    b, c = open_env_remote("run-b").claims, open_env_remote("run-c").claims
    assert judge(failed.claim, b.owner, now=time.time()) == "free"
    taken = run(b.take_over(failed.claim))
    late = run(c.take_over(failed.claim))  # c judged the same old claim: only one takes it
    assert isinstance(taken, Won) and isinstance(late, Lost)
    assert late.current is not None and late.current.record.owner.run_id == "run-b"
    record = taken.claim.record
    assert (record.status, record.task_id, record.attempts, record.owner.run_id) == ("active", None, 1, "run-b")
    assert record.previous is not None and record.previous["task_id"] == "task-1"
    assert record.previous["owner"]["run_id"] == "run-a" and record.previous["status"] == "failed"
    again = run(b.record_task(taken.claim, "task-2"))
    assert isinstance(again, Won) and again.claim.record.attempts == 2


def test_a_permanent_failure_refuses_other_machines(s3: S3Case) -> None:
    a = open_env_remote("run-a").claims
    won = run(a.acquire(KEY, provider="wavespeed", model="m"))
    assert isinstance(won, Won)
    failed = run(a.finish(won.claim, "failed", error="1200 content moderation", permanent=True))
    assert isinstance(failed, Won)
    b = open_env_remote("run-b").claims
    found = run(b.acquire(KEY, provider="wavespeed", model="m"))
    assert isinstance(found, Lost) and found.current is not None
    assert judge(found.current, b.owner, now=time.time()) == "refused"
    assert found.current.record.error == "1200 content moderation"


def test_a_claim_whose_create_answer_was_lost_is_still_ours(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The create lands, the answer is a 503, the retry is told 412: the run must see its own claim
    as won (not as another machine's, which would make it wait for itself)."""
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("land-then-503", method="PUT", path_contains="/claims/", count=1))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        claims = open_env_remote("run-a").claims
        outcome = run(claims.acquire(KEY, provider="wavespeed", model="m"))
        assert isinstance(outcome, Won) and outcome.claim.record.owner.run_id == "run-a"
        recorded = run(claims.record_task(outcome.claim, "task-1"))
        assert isinstance(recorded, Won)
        assert proxy.hits("land-then-503") == 1


def test_409_on_claims_is_a_lost_race(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_env_remote("run-a").claims
    won = run(a.acquire(KEY, provider="wavespeed", model="m"))
    assert isinstance(won, Won)
    assert isinstance(run(a.record_task(won.claim, "task-1")), Won)
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("rewrite-412-to-409", method="PUT"))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        b = open_env_remote("run-b").claims
        lost = run(b.acquire(KEY, provider="wavespeed", model="m"))
        assert isinstance(lost, Lost) and lost.current is not None and lost.current.task_id == "task-1"
        stale = run(b.record_task(won.claim, "task-2"))
        assert isinstance(stale, Lost) and stale.current is not None and stale.current.task_id == "task-1"
        assert proxy.hits("rewrite-412-to-409") == 2


def test_a_damaged_claim_is_an_integrity_error(s3: S3Case) -> None:
    s3.server.put_raw(s3.bucket, f"{s3.prefix}/claims/{KEY}", b"not json")
    with pytest.raises(RemoteIntegrityError, match=f"claims/{KEY}.*damaged"):
        run(open_env_remote().claims.read(KEY))
    other = "fedcba9876543210" * 4
    claims = open_env_remote("run-a").claims
    assert isinstance(run(claims.acquire(other, provider="p", model="m")), Won)
    copied = s3.server.get_raw(s3.bucket, f"{s3.prefix}/claims/{other}")
    s3.server.put_raw(s3.bucket, f"{s3.prefix}/claims/{KEY}", copied)
    with pytest.raises(RemoteIntegrityError, match="names another key"):
        run(claims.read(KEY))


def test_bad_keys_never_reach_the_store(s3: S3Case) -> None:
    claims = open_env_remote().claims
    for bad in ("../../etc/passwd", "ABCDEF0123456789" * 4, "ab", ""):
        with pytest.raises(ValueError, match="bad shot key"):
            run(claims.acquire(bad, provider="p", model="m"))
    assert s3.server.list_raw(s3.bucket) == []


# -- judge (pure) ---------------------------------------------------------------------------------


def _claim(**changes: object) -> Claim:
    record = ClaimRecord(
        KEY, "wavespeed", "m", Owner("host-a", 4242, "run-a"), created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    return Claim(replace(record, **changes), '"etag"', modified=T0)  # type: ignore[arg-type]


T0 = 1767225600.0  # 2026-01-01T00:00:00Z
OTHER = Owner("host-b", 1, "run-b")


def alive(pid: int) -> bool:
    return pid == 4242


def dead(pid: int) -> bool:
    return False


@pytest.mark.parametrize(
    ("changes", "me", "now", "pid_check", "verdict"),
    [
        ({}, Owner("host-a", 1, "run-a"), T0, alive, "mine"),
        ({"task_id": "t1"}, Owner("host-b", 1, "run-b"), T0 + 10 * STALE_AFTER, dead, "follow"),
        ({}, Owner("host-b", 1, "run-b"), T0 + 60, alive, "wait"),
        ({}, Owner("host-a", 1, "run-b"), T0 + 60, alive, "wait"),  # same host, holder alive
        ({}, Owner("host-a", 1, "run-b"), T0 + 60, dead, "orphaned"),  # same host, holder died
        ({}, Owner("host-b", 1, "run-b"), T0 + 60, dead, "wait"),  # another host's pid says nothing
        ({}, Owner("host-b", 1, "run-b"), T0 + STALE_AFTER + 1, alive, "orphaned"),
        # The writer's stamps do not count, only the store's Last-Modified (``modified``, T0 here):
        ({"updated_at": "2025-12-31T23:40:00+00:00"}, Owner("host-b", 1, "run-b"), T0 + 60, alive, "wait"),
        ({"updated_at": "2026-01-02T00:00:00+00:00"}, OTHER, T0 + STALE_AFTER + 1, alive, "orphaned"),
        ({"status": "done", "output_sha256": "f" * 64}, Owner("host-b", 1, "run-b"), T0, alive, "done"),
        ({"status": "failed", "permanent": True}, Owner("host-b", 1, "run-b"), T0, alive, "refused"),
        ({"status": "failed"}, Owner("host-b", 1, "run-b"), T0, alive, "free"),
        ({"status": "released"}, Owner("host-a", 1, "run-a"), T0, alive, "free"),
    ],
)
def test_judge(changes: dict[str, object], me: Owner, now: float, pid_check: object, verdict: str) -> None:
    assert judge(_claim(**changes), me, now=now, alive=pid_check) == verdict  # type: ignore[arg-type]


def test_judge_sees_a_real_dead_holder_on_this_host(s3: S3Case) -> None:
    """A run killed (kill -9) after creating its claim, before recording a task: on this host its
    pid is gone, so the claim is orphaned at once (to be reconciled, never resubmitted blindly)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, signal; print(os.getpid(), flush=True); signal.pause()"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        pid = int(holder.stdout.readline())
        claims_of_holder = open_env_remote("run-dead").claims
        claims_of_holder.owner = Owner(claims_of_holder.owner.host, pid, "run-dead")
        assert isinstance(run(claims_of_holder.acquire(KEY, provider="wavespeed", model="m")), Won)
        me = open_env_remote("run-me").claims
        found = run(me.read(KEY))
        assert found is not None and run(me.judge(found)) == "wait"
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert run(me.judge(found)) == "orphaned"


# -- two processes --------------------------------------------------------------------------------


def _race(mode: str, names: list[str], env: dict[str, str], tmp_path: Path) -> dict[str, list[dict[str, object]]]:
    go = tmp_path / f"go-{mode}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "KLING_RENDER_REMOTE"}
    procs = {
        tag: subprocess.Popen(
            [sys.executable, str(RACER), mode, "--keys", ",".join(names), "--go", str(go), "--tag", tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**base, **env},
            cwd=HERE,
        )
        for tag in ("a", "b")
    }
    for proc in procs.values():  # both are ready (and, for `record`, hold the same ETags)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else ""
    go.write_text(str(time.time() + 0.3))  # both racers write key i at start + i * STEP
    results = {}
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        results[tag] = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return results


def _check_create_race(results: dict[str, list[dict[str, object]]], names: list[str]) -> None:
    by_key = {name: [r for tag in results for r in results[tag] if r["key"] == name] for name in names}
    for name, rows in by_key.items():
        winners = [r for r in rows if r["won"]]
        assert len(rows) == 2 and len(winners) == 1, (name, rows)
        loser = next(r for r in rows if not r["won"])
        assert loser["run"] == winners[0]["run"], (name, rows)  # the loser sees who won


def _check_cas_race(results: dict[str, list[dict[str, object]]], names: list[str], stored: dict[str, str]) -> None:
    for name in names:
        rows = [r for tag in results for r in results[tag] if r["key"] == name]
        winners = [r for r in rows if r["won"]]
        assert len(winners) == 1, (name, rows)
        loser = next(r for r in rows if not r["won"])
        assert loser["task"] == winners[0]["task"] == stored[name], (name, rows, stored[name])


def test_two_processes_race_for_claims_on_s3(s3: S3Case, tmp_path: Path) -> None:
    names = keys(24)
    _check_create_race(_race("acquire", names, s3.env(), tmp_path), names)
    stored = {}
    for name in names:
        claim = run(open_env_remote().claims.read(name))
        assert claim is not None and claim.task_id is None
    cas = _race("record", names, s3.env(), tmp_path)
    for name in names:
        claim = run(open_env_remote().claims.read(name))
        assert claim is not None and claim.task_id is not None and claim.record.attempts == 1
        stored[name] = claim.task_id
    _check_cas_race(cas, names, stored)


def test_two_processes_race_for_claims_on_a_file_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"KLING_RENDER_REMOTE": f"file://{tmp_path / 'shared'}"}
    monkeypatch.setenv("KLING_RENDER_REMOTE", env["KLING_RENDER_REMOTE"])
    names = keys(24)
    _check_create_race(_race("acquire", names, env, tmp_path), names)
    cas = _race("record", names, env, tmp_path)
    stored = {}
    for name in names:
        claim = run(open_env_remote().claims.read(name))
        assert claim is not None and claim.task_id is not None and claim.record.attempts == 1
        stored[name] = claim.task_id
    _check_cas_race(cas, names, stored)
    assert sorted(p.name for p in (tmp_path / "shared" / "claims").iterdir()) == sorted(names)


def test_racers_print_no_credentials(s3: S3Case, tmp_path: Path) -> None:
    from conftest import S3_KEY_ID, S3_SECRET, S3_TOKEN

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **s3.env()}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: every call fails, retried, then reported
    go = tmp_path / "go"
    go.write_text(str(time.time()))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(RACER), "acquire", "--keys", KEY, "--go", str(go), "--tag", "x"],
        capture_output=True,
        env=env,
        cwd=HERE,
        timeout=300,
    )
    assert proc.returncode != 0 and time.monotonic() - started < 300
    output = (proc.stdout + proc.stderr).decode()
    assert "RemoteTransientError" in output and "on the remote s3://" in output
    for secret in (S3_KEY_ID, S3_SECRET, S3_TOKEN):
        assert secret not in output
