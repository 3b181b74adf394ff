"""The remote in a run (remote/gate.py), in process: claims whose holder died in every state, lost
races on a claim, a remote that fails. Machines are runs with their own state and cache sharing
the stub provider's journal (its "server") and one remote on moto; every test counts the tasks
the server created."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Case
from money_kit import submit as paid_submit
from remote_kit import fast_policy
from runner_stub import StubProvider, make_job
from s3_proxy import Rule, S3Proxy

from kling_render.jobs import Job
from kling_render.plan.keys import fingerprint
from kling_render.records.state import StateStore, now_iso
from kling_render.report.progress import ListSink
from kling_render.run.report import RunReport
from kling_render.run.scheduler import RunOptions, execute
from kling_render.store.cache import ClipCache
from kling_render.store.remote.claims import Claim, ClaimRecord, Owner, Won
from kling_render.store.remote.connect import Remote, open_remote, resolve_remote_url

JOB = make_job("hero")


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (so a claim naming it on this host is orphaned)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@dataclass
class Machine:
    """One machine: its own directory (state, cache) and run id; the shared server and remote."""

    root: Path
    server: Path
    sources: Path
    name: str
    script: dict[str, list[str]] = field(default_factory=dict)
    events: ListSink = field(default_factory=ListSink)
    provider: StubProvider | None = None

    def remote(self) -> Remote:
        url = resolve_remote_url(None)
        assert url is not None
        return open_remote(url, owner=Owner.here(f"run-{self.name}"), policy=fast_policy(3))

    def render(self, jobs: list[Job] | None = None, **options: Any) -> RunReport:
        self.provider = StubProvider(self.sources, journal=self.server, script=self.script)
        opts = RunOptions(poll_interval=0.02, reconcile_grace=0.3, **options)
        with StateStore.for_project(self.root / "p.yaml", "stub", lock_timeout=10) as state:
            return asyncio.run(
                execute(
                    jobs or [JOB], self.provider, state=state, cache=ClipCache(self.root / "cache"),
                    options=opts, events=self.events, remote=self.remote(),
                )
            )  # fmt: skip

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events.events]


def machine(tmp_path: Path, name: str, **kw: Any) -> Machine:
    return Machine(tmp_path / name, tmp_path / "server", tmp_path / "sources", name, **kw)


def created(tmp_path: Path) -> int:
    """Tasks the shared server created (each is paid)."""
    return len(list((tmp_path / "server").glob("t*.json")))


def put_claim(record: ClaimRecord) -> Claim:
    remote = Machine(Path("."), Path("."), Path("."), "writer").remote()
    outcome = asyncio.run(remote.store.write(f"claims/{record.key}", record.to_bytes()))
    claim = asyncio.run(remote.claims.read(record.key))
    assert claim is not None, outcome
    return claim


def read_claim(key: str = JOB.key) -> ClaimRecord:
    claim = asyncio.run(Machine(Path("."), Path("."), Path("."), "reader").remote().claims.read(key))
    assert claim is not None
    return claim.record


def dead_claim(pid: int, **fields: Any) -> ClaimRecord:
    stamp = now_iso()
    owner = Owner(socket.gethostname(), pid, "run-dead")
    return ClaimRecord(JOB.key, "stub", JOB.model, owner, created_at=stamp, updated_at=stamp, **fields)


def holder_task(tmp_path: Path, behaviour: str = "ok") -> str:
    """A task the dead holder submitted for JOB (it is on the server, paid)."""
    holder = StubProvider(tmp_path / "sources", journal=tmp_path / "server", script={JOB.shot_id: [behaviour]})

    async def send() -> str:
        return await paid_submit(holder, JOB)

    return asyncio.run(send())


def body_wire() -> dict[str, str]:
    async def body() -> dict[str, Any]:
        return dict(await StubProvider(Path(".")).prepare(JOB))

    return fingerprint(asyncio.run(body()))


def test_a_dead_holders_claim_without_a_wire_is_taken_over_without_asking_the_list(
    tmp_path: Path, s3: S3Case, dead_pid: int
) -> None:
    """Every claim write before a POST carries the body's fingerprint: none means nothing was sent."""
    put_claim(dead_claim(dead_pid))
    me = machine(tmp_path, "b")
    report = me.render()
    assert report.exit_code == 0 and created(tmp_path) == 1
    assert me.provider is not None and me.provider.listings == 0
    record = read_claim()
    assert (record.status, record.attempts, record.owner.run_id) == ("done", 1, "run-b")
    assert record.previous is not None and record.previous["owner"]["run_id"] == "run-dead"


def test_a_dead_holders_task_is_found_in_the_list_and_followed_not_paid_again(
    tmp_path: Path, s3: S3Case, dead_pid: int
) -> None:
    task = holder_task(tmp_path)
    put_claim(dead_claim(dead_pid, wire=body_wire()))
    me = machine(tmp_path, "b")
    report = me.render()
    assert report.exit_code == 0, report.to_json()
    assert created(tmp_path) == 1  # the holder's task only
    assert report.outcomes[JOB.shot_id].cost_usd == 0.0  # not this machine's money
    assert "reconciled" in me.kinds()
    record = read_claim()
    assert (record.status, record.task_id, record.attempts, record.tasks) == ("done", task, 1, (task,))


def test_two_candidate_tasks_leave_the_shot_unknown_until_the_user_says(
    tmp_path: Path, s3: S3Case, dead_pid: int
) -> None:
    holder_task(tmp_path)
    holder_task(tmp_path)  # two tasks with the same inputs: which one was the claim's?
    put_claim(dead_claim(dead_pid, wire=body_wire()))
    me = machine(tmp_path, "b")
    report = me.render()
    outcome = report.outcomes[JOB.shot_id]
    assert outcome.status == "unknown" and report.exit_code == 1
    assert "stopped before recording a task id" in (outcome.error or "")
    assert "2 tasks in the provider's task list could be this submit's" in (outcome.error or "")
    assert created(tmp_path) == 2 and read_claim().owner.run_id == "run-dead"  # nothing paid, claim kept

    again = me.render(resubmit_unknown=True)
    assert again.exit_code == 0 and created(tmp_path) == 3


def test_a_dead_holders_task_that_failed_for_good_is_recorded_and_not_paid_again(
    tmp_path: Path, s3: S3Case, dead_pid: int
) -> None:
    task = holder_task(tmp_path, "fail:1200")
    put_claim(dead_claim(dead_pid, wire=body_wire(), task_id=task, attempts=1, tasks=(task,)))
    me = machine(tmp_path, "b")
    report = me.render()
    outcome = report.outcomes[JOB.shot_id]
    assert outcome.status == "failed" and "fail the same way" in (outcome.error or "")
    assert created(tmp_path) == 1
    record = read_claim()
    assert (record.status, record.permanent) == ("failed", True)
    assert machine(tmp_path, "c").render().exit_code == 1 and created(tmp_path) == 1  # refused by the claim


def test_a_dead_holders_task_that_failed_for_a_passing_reason_is_replaced_within_the_cap(
    tmp_path: Path, s3: S3Case, dead_pid: int
) -> None:
    task = holder_task(tmp_path, "fail:5000")
    put_claim(dead_claim(dead_pid, wire=body_wire(), task_id=task, attempts=1, tasks=(task,)))
    me = machine(tmp_path, "b")
    report = me.render()
    assert report.exit_code == 0, report.to_json()
    assert created(tmp_path) == 2
    record = read_claim()
    assert (record.status, record.attempts, record.owner.run_id) == ("done", 2, "run-b")


def test_a_claim_that_cannot_be_written_stops_the_shot_before_any_submit(
    tmp_path: Path, s3: S3Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("status", method="PUT", path_contains="/claims/", status=503))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        me = machine(tmp_path, "b")
        report = me.render()
    outcome = report.outcomes[JOB.shot_id]
    assert outcome.status == "failed" and "claim on the remote could not be written" in (outcome.error or "")
    assert created(tmp_path) == 0 and report.spent_usd == 0


def test_a_claim_taken_over_while_the_submit_runs_keeps_the_paid_task(tmp_path: Path, s3: S3Case) -> None:
    """Someone judged the claim orphaned while the POST ran: the task is paid, so it is polled and
    used all the same, with a warning."""
    me = machine(tmp_path, "b")
    remote = me.remote()

    async def scenario() -> RunReport:
        me.provider = StubProvider(me.sources, journal=me.server)
        gate = asyncio.Event()
        me.provider.submit_gates[JOB.shot_id] = gate
        opts = RunOptions(poll_interval=0.02)
        with StateStore.for_project(me.root / "p.yaml", "stub", lock_timeout=10) as state:
            run = asyncio.create_task(
                execute([JOB], me.provider, state=state, cache=ClipCache(me.root / "cache"), options=opts,
                        events=me.events, remote=remote)
            )  # fmt: skip
            await me.provider.entered.setdefault(JOB.shot_id, asyncio.Event()).wait()
            other = Machine(Path("."), Path("."), Path("."), "other").remote()
            current = await other.claims.read(JOB.key)
            assert current is not None
            taken = await other.claims.take_over(current)
            assert isinstance(taken, Won)
            gate.set()
            return await run

    report = asyncio.run(scenario())
    outcome = report.outcomes[JOB.shot_id]
    assert outcome.status == "done" and "taken over by" in (outcome.warning or "")
    assert created(tmp_path) == 1
