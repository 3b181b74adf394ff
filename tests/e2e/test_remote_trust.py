"""What a machine may believe of the shared remote (issue 23, items 19-23, 25, 26), through the real
CLI against the stand-in WaveSpeed (a process) and a real S3 API (moto on 127.0.0.1); every path
that can spend money counts the tasks the stand-in created.

- a pulled clip is checked as a download is, and its properties come from the clip, not the record;
- claims are judged by the store's time (Last-Modified), never by the stamps a writer put in them;
- a claim or a record written by a newer kling-render is refused, never rewritten;
- a task followed through a claim is given up after the provider's retention, like one of our own;
- the remote's record is the team's clip: a differing local clip is replaced, and that is said;
- every request to the remote has a total deadline;
- task ids from the remote's records pass the one task-id check before they reach a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Case
from e2e_cli import SECRET
from e2e_fake import FakeProcess
from teams_kit import MODEL_PATH, Checkout, checkouts, kinds, paid_by_shot, tasks, team_env, wait_until

from kling_render.media.probe import probe
from kling_render.plan.keys import fingerprint
from kling_render.records.state import now_iso
from kling_render.store.remote.claims import ClaimRecord, Owner
from kling_render.store.remote.clips import blob_path, record_path

MODEL = MODEL_PATH.removeprefix("/api/v3/kwaivgi/")
DAY = 86400.0


pytestmark = pytest.mark.stand_in(latency=0.6)


@pytest.fixture
def fake(fake_process: FakeProcess) -> FakeProcess:
    """The stand-in as its own process (conftest's ``fake_process``, options from this module's marker)."""
    return fake_process


def key_of(checkout: Checkout, shot: str = "s000") -> str:
    return str({s["id"]: s["key"] for s in checkout.plan()["shots"]}[shot])


def remote_path(s3: S3Case, path: str) -> str:
    return f"{s3.prefix}/{path}"


def read_json(s3: S3Case, path: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(s3.server.get_raw(s3.bucket, remote_path(s3, path)))
    return doc


def put_json(s3: S3Case, path: str, doc: dict[str, Any]) -> bytes:
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    s3.server.put_raw(s3.bucket, remote_path(s3, path), data)
    return data


def stamp(offset: float) -> str:
    """An ISO time ``offset`` seconds from now, as a writer with a wrong clock would stamp it."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(time.time() + offset, UTC).isoformat(timespec="seconds")


def claim(key: str, *, owner: Owner, written: str, **fields: Any) -> ClaimRecord:
    return ClaimRecord(key, "wavespeed", MODEL, owner, created_at=written, updated_at=written, **fields)


def put_claim(s3: S3Case, record: ClaimRecord) -> bytes:
    data = record.to_bytes()
    s3.server.put_raw(s3.bucket, remote_path(s3, f"claims/{record.key}"), data)
    return data


def submit_directly(fake: FakeProcess, body: dict[str, Any]) -> str:
    """A task created on the stand-in behind kling-render's back (by a holder that then died)."""
    request = urllib.request.Request(
        fake.base_url + MODEL_PATH,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        task_id: str = json.loads(response.read())["data"]["id"]
    return task_id


HOLDER_BODY = {"prompt": "shot s000, a mug on a table", "image": "https://example.invalid/a.png", "duration": 3}


def lock_entry(checkout: Checkout, shot: str = "s000") -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(checkout.project.with_suffix(".lock").read_text())["shots"][shot]
    return entry


def sidecar(checkout: Checkout, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((checkout.cache_dir / "wavespeed" / key[:2] / f"{key}.json").read_text())
    return doc


# -- 19: a pulled clip gets the checks of a download -------------------------------------------------


def test_a_pulled_blob_with_the_right_digest_but_random_bytes_never_counts(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    one, two, three = checkouts(tmp_path, team_env(fake, s3.env()), 3, shots=1)
    first = one.render("--no-stitch")
    assert first.returncode == 0, first.stderr
    key = key_of(one)
    # Random bytes under their own digest, and the record pointing at them: size and sha256 agree.
    junk = os.urandom(50_000)
    digest = hashlib.sha256(junk).hexdigest()
    s3.server.put_raw(s3.bucket, remote_path(s3, blob_path(digest)), junk)
    record = read_json(s3, record_path("wavespeed", key))
    put_json(s3, record_path("wavespeed", key), {**record, "sha256": digest, "size": len(junk)})

    done = two.render()
    assert done.returncode == 1
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("  s000: failed: ")]
    assert "not a usable clip" in line and blob_path(digest) in line, done.stderr
    assert paid_by_shot(fake) == Counter(s000=1)  # never paid again for a clip the remote holds
    assert not two.clips() and not two.final_cut.exists()
    stitched = three.cli("stitch", str(three.project))
    assert stitched.returncode == 1 and "not a usable clip" in stitched.stderr
    assert not three.clips() and not three.final_cut.exists()


def test_a_pulled_clips_properties_come_from_the_clip_not_its_record(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    """A record claiming 320x180 and 9 s for a 192x108, 3 s clip: a stitch to 320x180 that trusted it
    would stream-copy a wrong-sized cut; the pulled clip's sidecar holds what the check measured."""
    one, two = checkouts(tmp_path, team_env(fake, s3.env()), 2, shots=2)
    first = one.render("--no-stitch")
    assert first.returncode == 0, first.stderr
    for shot in ("s000", "s001"):
        path = record_path("wavespeed", key_of(one, shot))
        record = read_json(s3, path)
        media = {**(record.get("media") or {}), "width": 320, "height": 180, "duration": 9.0}
        put_json(s3, path, {**record, "duration": 9.0, "media": media})
    two.edit("output: {path: renders/final.mp4, width: 192, height: 108", "output: {path: renders/final.mp4, "
             "width: 320, height: 180")  # fmt: skip

    done = two.cli("stitch", str(two.project))
    assert done.returncode == 0, done.stderr
    for shot in ("s000", "s001"):
        side = sidecar(two, key_of(two, shot))
        assert (side["media"]["width"], side["media"]["height"]) == (192, 108)
        assert abs(side["duration"] - 3.0) < 0.1
    cut = probe(two.final_cut)
    assert (cut.width, cut.height) == (320, 180) and abs(cut.duration - 6.0) < 0.2
    assert paid_by_shot(fake) == Counter(s000=1, s001=1)


# -- 20: claims are judged by the store's time ---------------------------------------------------------


def test_a_claim_stamped_20_minutes_ago_is_reconciled_around_the_stores_time(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    """The holder (this host, its pid dead) wrote its claim and sent its POST just now, by a clock 20
    minutes slow. Its task is looked for around the claim's Last-Modified, found, and followed: a
    task list window around the writer's stamp would miss it and pay again."""
    [two] = checkouts(tmp_path, team_env(fake, s3.env()), 1, shots=1)
    key = key_of(two)
    dead = Owner(socket.gethostname(), _dead_pid(), "run-slow-clock")
    put_claim(s3, claim(key, owner=dead, written=stamp(-20 * 60), wire=fingerprint(HOLDER_BODY)))
    task = submit_directly(fake, HOLDER_BODY)

    rc, events, err = two.finish(two.start_render("--no-stitch"))
    assert rc == 0, err
    assert paid_by_shot(fake) == Counter(s000=1)  # the holder's task, adopted: not paid again
    assert "reconciled" in kinds(events) and lock_entry(two)["task_id"] == task


def test_a_claim_stamped_a_day_ahead_goes_stale_by_the_stores_time(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    """A holder on another machine, its clock a day fast, stopped before its POST. By the writer's
    stamp the claim would look fresh for a day (each shot waits for the whole task timeout); by the
    store's time it is stale after KLING_RENDER_CLAIM_STALE seconds, reconciled, and taken over."""
    [two] = checkouts(tmp_path, team_env(fake, s3.env(), KLING_RENDER_CLAIM_STALE="10"), 1, shots=1)
    key = key_of(two)
    far = Owner("a-machine-with-a-fast-clock", 4242, "run-fast-clock")
    put_claim(s3, claim(key, owner=far, written=stamp(DAY), wire=fingerprint(HOLDER_BODY)))

    started = time.monotonic()
    rc, events, err = two.finish(two.start_render("--no-stitch"), timeout=90)
    assert rc == 0, err
    assert time.monotonic() - started < 60
    assert "waiting" in kinds(events) and "claimed" in kinds(events)
    assert paid_by_shot(fake) == Counter(s000=1)


def test_a_live_holders_claim_stamped_20_minutes_ago_is_waited_for(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    """A live holder on another machine, its clock 20 minutes slow, is submitting: the claim is fresh
    by the store's time, so this machine waits and then follows the holder's task (one task paid)."""
    [two] = checkouts(tmp_path, team_env(fake, s3.env()), 1, shots=1)
    key = key_of(two)
    holder = Owner("a-machine-with-a-slow-clock", 4242, "run-slow-clock")
    record = claim(key, owner=holder, written=stamp(-20 * 60), wire=fingerprint(HOLDER_BODY))
    put_claim(s3, record)
    proc = two.start_render("--no-stitch")
    log = two.root.parent / f"{two.root.name}-logs" / "0.out"
    wait_until(lambda: log.is_file() and '"event": "waiting"' in log.read_text(), what="the waiting event")
    task = submit_directly(fake, HOLDER_BODY)  # the holder's POST, then its task id in the claim
    put_claim(s3, ClaimRecord(**{**record.__dict__, "task_id": task, "attempts": 1, "tasks": (task,)}))
    rc, events, err = two.finish(proc)
    assert rc == 0, err
    assert "following" in kinds(events) and "claimed" not in kinds(events)
    assert paid_by_shot(fake) == Counter(s000=1)


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- 21: newer claims and records are refused --------------------------------------------------------


def test_a_claim_from_a_newer_kling_render_is_refused_and_left_alone(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    [two] = checkouts(tmp_path, team_env(fake, s3.env()), 1, shots=2)
    key = key_of(two)
    newer = json.loads(claim(key, owner=Owner("elsewhere", 1, "run-new"), written=now_iso(), status="released")
                       .to_bytes())  # fmt: skip
    newer.update(version=2, something_new={"a": 1})
    before = put_json(s3, f"claims/{key}", newer)

    done = two.render("--no-stitch")
    assert done.returncode == 1
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("  s000: failed: ")]
    assert "schema version 2" in line and "upgrade kling-render" in line, done.stderr
    assert s3.server.get_raw(s3.bucket, remote_path(s3, f"claims/{key}")) == before  # not rewritten
    assert paid_by_shot(fake) == Counter(s001=1)  # the other shot only


def test_a_clip_record_from_a_newer_kling_render_is_refused(tmp_path: Path, fake: FakeProcess, s3: S3Case) -> None:
    one, two = checkouts(tmp_path, team_env(fake, s3.env()), 2, shots=1)
    first = one.render("--no-stitch")
    assert first.returncode == 0, first.stderr
    path = record_path("wavespeed", key_of(one))
    before = put_json(s3, path, {**read_json(s3, path), "version": 3})

    done = two.render()
    assert done.returncode == 1
    assert "schema version 3" in done.stderr and "upgrade kling-render" in done.stderr, done.stderr
    stitched = two.cli("stitch", str(two.project))
    assert stitched.returncode == 1
    [line] = stitched.stderr.splitlines()
    assert line.startswith("error: the clip record ") and "schema version 3" in line
    assert s3.server.get_raw(s3.bucket, remote_path(s3, path)) == before
    assert paid_by_shot(fake) == Counter(s000=1) and not two.clips()


# -- 22: a followed task is given up after the provider's retention -----------------------------------


@pytest.mark.parametrize("written_days_ago", [8, 0])
def test_a_task_followed_through_a_claim_is_given_up_after_seven_days(
    tmp_path: Path, fake: FakeProcess, s3: S3Case, written_days_ago: int
) -> None:
    """Another machine's claim names a task the provider no longer knows (404). Written 8 days ago
    by the store's clock, the task is given up: the shot fails, the claim is closed, and the next
    run pays one replacement. Written just now, a 404 may be a hiccup: the task is kept."""
    [two] = checkouts(tmp_path, team_env(fake, s3.env()), 1, shots=1)
    key = key_of(two)
    gone = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"
    holder = Owner("elsewhere", 4242, "run-elsewhere")
    s3.server.set_clock(-written_days_ago * DAY)
    try:
        put_claim(s3, claim(key, owner=holder, written=now_iso(), task_id=gone, attempts=1, tasks=(gone,)))
    finally:
        s3.server.set_clock(0)

    first = two.render("--no-stitch")
    assert first.returncode == 1
    [line] = [ln for ln in first.stderr.splitlines() if ln.startswith("  s000: failed: ")]
    assert len(tasks(fake)) == 0
    record = read_json(s3, f"claims/{key}")
    if written_days_ago == 0:
        assert "the next run polls it again" in line, first.stderr
        assert (record["status"], record["task_id"]) == ("active", gone)
        return
    assert f"task {gone} is gone" in line and "8.0 days ago" in line and "submits a new task" in line, line
    assert record["status"] == "failed" and not record["permanent"]

    second = two.render("--no-stitch")
    assert second.returncode == 0, second.stderr
    assert paid_by_shot(fake) == Counter(s000=1)
    record = read_json(s3, f"claims/{key}")
    assert record["status"] == "done" and record["attempts"] == 2
    third = two.render("--no-stitch")
    assert third.returncode == 0 and len(tasks(fake)) == 1


# -- 23: the remote's record is the team's clip --------------------------------------------------------


def test_a_differing_local_clip_is_replaced_by_the_teams_in_render_stitch_plan_and_status(
    tmp_path: Path, fake: FakeProcess, s3: S3Case
) -> None:
    env = team_env(fake, s3.env())
    one, two, three = checkouts(tmp_path, env, 3, shots=1)
    first = one.render()
    assert first.returncode == 0, first.stderr
    team_sha = lock_entry(one)["output_sha256"]
    # Two other machines made their own clip of the key while the remote was not set (a 4 s one).
    for other in (two, three):
        other.env.pop("KLING_RENDER_REMOTE")
        fake.fault("length", MODEL_PATH, seconds=4)
        alone = other.render()
        assert alone.returncode == 0, alone.stderr
        assert lock_entry(other)["output_sha256"] != team_sha
        other.env["KLING_RENDER_REMOTE"] = env["KLING_RENDER_REMOTE"]
    assert paid_by_shot(fake) == Counter(s000=3)

    plan = two.plan()
    assert [(s["change"], s["changed_fields"]) for s in plan["shots"]] == [("re-stitch", ["team clip"])]
    assert plan["counts"]["re-stitch"] == 1
    table = two.cli("plan", str(two.project))
    assert "re-stitch: team clip" in table.stdout
    shown = two.cli("status", str(two.project))
    assert shown.returncode == 0
    assert "warning: s000: this machine's clip" in shown.stderr and "the next render or stitch" in shown.stderr

    rc, events, err = two.finish(two.start_render())  # render: replaced, reported, locked, cut
    assert rc == 0, err
    [replaced] = [e for e in events if e["event"] == "replaced"]
    assert replaced["shot_id"] == "s000" and team_sha[:12] in replaced["message"]
    [finished] = [e for e in events if e["event"] == "finished"]
    assert "replaced by the team's clip" in finished["shots"][0]["warning"]
    plain = two.render()
    assert plain.returncode == 0 and "replaced" not in plain.stderr  # said once, when it happened
    assert lock_entry(two)["output_sha256"] == team_sha
    assert two.cut_bytes() == one.cut_bytes()
    assert [s["change"] for s in two.plan()["shots"]] == ["unchanged"]

    stitched = three.cli("stitch", str(three.project), "--json")  # stitch: the same
    assert stitched.returncode == 0, stitched.stderr
    assert "s000: replaced" in stitched.stderr and team_sha[:12] in stitched.stderr
    assert lock_entry(three)["output_sha256"] == team_sha
    assert three.cut_bytes() == one.cut_bytes()
    assert paid_by_shot(fake) == Counter(s000=3)  # replacing pays nothing
    aside = list((three.cache_dir / "quarantine" / "wavespeed").glob("*.mp4"))
    assert len(aside) == 1  # this machine's own clip is set aside, never deleted


# -- 25: every request to the remote has a total deadline ----------------------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_remote_that_accepts_and_never_answers_ends_every_command_on_time(
    tmp_path: Path, fake: FakeProcess, s3: S3Case, silent_endpoint: str
) -> None:
    env = team_env(fake, s3.env(silent_endpoint), KLING_RENDER_REMOTE_TIMEOUT="2")
    [checkout] = checkouts(tmp_path, env, 1, shots=1)
    for command in ("plan", "status", "render", "stitch"):
        started = time.monotonic()
        done = checkout.cli(command, str(checkout.project), timeout=60)
        took = time.monotonic() - started
        assert done.returncode == 1, (command, done.stderr)
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and s3.url in line and "no complete answer within 2 s" in line, line
        assert took < 20, (command, took)  # one request's deadline (no retries of a silent endpoint)
    assert len(fake.submits()) == 0


# -- 26: task ids from the remote's records pass the one check ----------------------------------------


@pytest.mark.parametrize("bad", ["bad id\nwith a newline", "../../etc/passwd", f"task-{SECRET}", "x" * 300])
def test_a_records_task_id_reaches_no_file_unchecked(tmp_path: Path, fake: FakeProcess, s3: S3Case, bad: str) -> None:
    one, two = checkouts(tmp_path, team_env(fake, s3.env()), 2, shots=1)
    first = one.render("--no-stitch")
    assert first.returncode == 0, first.stderr
    path = record_path("wavespeed", key_of(one))
    put_json(s3, path, {**read_json(s3, path), "task_id": bad})

    done = two.render()
    assert done.returncode == 0, done.stderr
    assert lock_entry(two)["task_id"] is None and sidecar(two, key_of(two))["task_id"] is None
    _assert_nowhere(two, bad)
    assert len(tasks(fake)) == 1


@pytest.mark.parametrize("bad", ["bad id\nwith a newline", f"task-{SECRET}"])
def test_a_claims_task_id_that_is_not_usable_makes_the_claim_damaged(
    tmp_path: Path, fake: FakeProcess, s3: S3Case, bad: str
) -> None:
    [two] = checkouts(tmp_path, team_env(fake, s3.env()), 1, shots=1)
    key = key_of(two)
    doc = json.loads(claim(key, owner=Owner("elsewhere", 4242, "run-x"), written=now_iso()).to_bytes())
    put_json(s3, f"claims/{key}", {**doc, "task_id": bad, "tasks": [bad], "attempts": 1})
    done = two.render("--no-stitch")
    assert done.returncode == 1
    assert "is damaged" in done.stderr and "not a usable id" in done.stderr, done.stderr
    assert len(tasks(fake)) == 0
    _assert_nowhere(two, bad)


def _assert_nowhere(checkout: Checkout, text: str) -> None:
    needle = text.encode()
    for path in checkout.root.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"{text!r} reached {path}"
    for output in checkout.outputs:
        assert text not in output
    checkout.assert_no_secret()

