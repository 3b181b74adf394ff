"""Money on fal, through the real CLI against the fal stand-in (its own process), counting the
requests fal would bill: chaos with kill -9 at random moments, kill -9 at the money points, and two
machines sharing a remote (claims) never paying twice for one shot."""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import S3_SECRET, S3_TOKEN, S3Case
from e2e_cli import SECRET
from fal_kit import FalProcess, fal_env
from stress_kit import assert_cache_sound, assert_decodes, cli_cmd, render_args, shot_id, state_of, write_project
from teams_kit import Checkout, kill9, kinds, wait_until

RUN_TIMEOUT = 300.0
CHAOS_KINDS = "429,500,502,503,504,drop,truncate,fail"
SUBMIT_PREFIX = "/fal-ai/kling-video/o3/"  # write_project's model: O3 std image-to-video
SLOW_SECONDS = 3.0  # how long a request under the "slow" fault runs
# fal lists a request once it has ended: a lost submit's request is proven absent only after the
# longest request could have ended, so the grace outlasts a slow request (with a margin for load).
CHAOS_GRACE = SLOW_SECONDS + 3.0


@dataclass
class Figures:
    seed: int
    shots: int
    runs: int = 0
    kills: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # requests created at fal
    charged: int = 0  # requests fal bills
    free_failed: int = 0  # requests its infrastructure failed (never billed)
    known_doubles: int = 0  # shots left unknown by a run, next run with --resubmit-unknown
    reconciled: int = 0
    repeated_after_record: int = 0  # must stay 0

    def line(self) -> str:
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        return (
            f"fal round seed={self.seed}: {self.shots} shots, {self.runs} runs, {self.kills} kills, "
            f"{sum(self.faults.values())} faults ({faults}), {self.requests} requests, {self.charged} billed, "
            f"{self.free_failed} failed free, {self.reconciled} reconciled, {self.known_doubles} known possible "
            f"doubles, {self.repeated_after_record} repeated after record"
        )


def chaos_round(workdir: Path, seed: int, shots: int, *, max_runs: int, max_kills: int) -> Figures:
    rng = random.Random(seed)
    project = write_project(workdir / f"fal-round-{seed}", shots, provider="fal")
    figures = Figures(seed, shots)
    args = ("--chaos-seed", str(seed), "--chaos-rate", "0.1", "--chaos-kinds", CHAOS_KINDS)
    with FalProcess(SECRET, latency=0.5, args=args) as fal:
        fal.fault("slow", SUBMIT_PREFIX, count=rng.randint(1, 3), latency=SLOW_SECONDS)
        fal.fault("expired", "/files/", count=rng.randint(1, 3))
        fal.fault("429", "/fal-ai/kling-video/requests/", count=rng.randint(5, 20), retry_after=0.3)
        # A short grace (the product waits for fal's list lag), longer than any request here runs.
        env = fal_env(fal.base_url, KLING_RENDER_RECONCILE_GRACE=str(CHAOS_GRACE))
        recorded: list[tuple[int, dict[str, str]]] = []
        flags: list[str] = []
        code = None
        text = ""
        while figures.runs < max_runs:
            figures.runs += 1
            kill_at = rng.uniform(0.5, 4.0) if figures.kills < max_kills and rng.random() < 0.75 else None
            log = project.parent / f"run-{figures.runs}.log"
            with log.open("w") as err, subprocess.Popen(
                render_args(project, *flags, provider="fal"), env=env, stdout=subprocess.DEVNULL, stderr=err
            ) as proc:
                try:
                    code = proc.wait(timeout=kill_at or RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    if kill_at is None:
                        raise
                    proc.kill()
                    code = proc.wait()
                    figures.kills += 1
            text = log.read_text()
            assert "Traceback" not in text and "internal error" not in text, text
            figures.reconciled += text.count(": reconciled (")
            assert code in (0, 1, -9), (code, text[-2000:])
            state = state_of(project, "fal")
            recorded.append((len(fal.submits()), {sid: rec.task_id for sid, rec in state.items() if rec.task_id}))
            if code == 0:
                break
            unknown = [sid for sid, rec in state.items() if rec.status in ("unknown", "submitting")]
            capped = [sid for sid, rec in state.items() if rec.status == "failed" and "retry-failed" in str(rec.error)]
            flags = (["--resubmit-unknown"] if unknown else []) + (["--retry-failed"] if capped else [])
            figures.known_doubles += len(unknown)
        stats = fal.stats()
        submits = fal.submits()
        assert code == 0, f"round {seed} did not converge in {max_runs} runs:\n{text[-3000:]}"
        queue = stats["queue"]
        figures.faults = Counter(stats["faults"])
        figures.requests = len(queue)
        figures.charged = sum(1 for q in queue.values() if q["charged"])
        figures.free_failed = sum(1 for q in queue.values() if q["failed"] and not q["charged"])
        billed = fal.charged_by_shot()
        # No request the state file knew of was replaced by a new submit, unless it failed.
        for seen, known in recorded:
            later = Counter(_shot(r["body"]) for r in submits[seen:] if isinstance(r["body"], dict))
            for sid, request_id in known.items():
                assert request_id in queue, f"{sid}: state holds request {request_id} fal never created"
                if later[sid] and not queue[request_id]["failed"]:
                    figures.repeated_after_record += later[sid]
        assert figures.repeated_after_record == 0, figures.line()
        # Every shot billed once; more only for a known possible double (a --resubmit-unknown run).
        assert all(billed[shot_id(n)] >= 1 for n in range(shots)), billed
        assert figures.charged - shots <= figures.known_doubles, figures.line()
        assert_cache_sound(project, shots, provider="fal")
        stitched = subprocess.run(cli_cmd("stitch", str(project), "--provider", "fal"), env=env,
                                  capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)  # fmt: skip
        assert stitched.returncode == 0, stitched.stderr
    assert_decodes(project.parent / "renders" / "final.mp4", min_seconds=3.0 * shots)
    return figures


def _shot(body: dict[str, object]) -> str:
    prompt = str(body.get("prompt", ""))
    return prompt.split(",", 1)[0].removeprefix("shot ")


def test_fal_chaos_with_kills_bills_each_shot_once(tmp_path: Path) -> None:
    figures = [chaos_round(tmp_path, seed, 6, max_runs=12, max_kills=2) for seed in (201, 202)]
    for f in figures:
        print(f.line())
    assert sum(f.runs for f in figures) >= 2


@pytest.mark.slow
def test_fal_chaos_20_shots_6_rounds(tmp_path: Path) -> None:
    figures = [chaos_round(tmp_path, seed, 20, max_runs=16, max_kills=4) for seed in range(301, 307)]
    for f in figures:
        print(f.line())
    assert sum(f.kills for f in figures) >= 6


# -- two machines, one remote ---------------------------------------------------------------------


@pytest.fixture
def fal() -> Iterator[FalProcess]:
    with FalProcess(SECRET, latency=0.6) as server:
        yield server


def checkouts(root: Path, env: dict[str, str], count: int, shots: int) -> list[Checkout]:
    import shutil

    first = write_project(root / "machine-1", shots, provider="fal")
    result = [Checkout(first.parent, dict(env))]
    for n in range(2, count + 1):
        other = root / f"machine-{n}"
        shutil.copytree(first.parent, other)
        result.append(Checkout(other, dict(env)))
    return result


def team(fal: FalProcess, s3: S3Case) -> dict[str, str]:
    return fal_env(fal.base_url, KLING_RENDER_RECONCILE_GRACE="2", KLING_RENDER_HEARTBEAT="600", **s3.env())


def test_two_checkouts_on_fal_bill_each_shot_once_and_cut_the_same_bytes(
    tmp_path: Path, fal: FalProcess, s3: S3Case
) -> None:
    one, two, three = checkouts(tmp_path, team(fal, s3), 3, shots=6)
    procs = [one.start_render(), two.start_render()]
    (rc1, ev1, err1), (rc2, ev2, err2) = one.finish(procs[0]), two.finish(procs[1])
    assert rc1 == 0, err1
    assert rc2 == 0, err2
    six = Counter({shot_id(n): 1 for n in range(6)})
    assert fal.charged_by_shot() == six and fal.created_by_shot() == six
    claimed = Counter(e["shot_id"] for e in ev1 + ev2 if e["event"] == "claimed")
    assert claimed == six, claimed
    assert one.cut_bytes() == two.cut_bytes()
    rc3, ev3, err3 = three.finish(three.start_render())  # an empty cache: pulls every clip, pays nothing
    assert rc3 == 0, err3
    assert fal.created_by_shot() == six and "claimed" not in kinds(ev3)
    assert three.cut_bytes() == one.cut_bytes()
    for checkout in (one, two, three):
        for secret in (SECRET, S3_SECRET, S3_TOKEN):
            checkout.assert_no_secret(secret)


def test_kill_9_after_the_request_id_is_recorded_another_machine_follows_it(
    tmp_path: Path, s3: S3Case
) -> None:
    with FalProcess(SECRET, latency=4.0) as fal:
        one, two = checkouts(tmp_path, team(fal, s3), 2, shots=1)
        holder = one.start_render()
        wait_until(lambda: any("/status" in r["path"] for r in fal.requests()), what="the request to be followed")
        kill9(holder)
        # The other machine never saw the submit answer (no record of its URLs): it follows the
        # request the claim names, by fal's owner/app URL, and pays nothing.
        rc, events, err = two.finish(two.start_render())
        assert rc == 0, err
        assert "following" in kinds(events) and "claimed" not in kinds(events)
        assert fal.created_by_shot() == Counter(s000=1) and fal.charged_by_shot() == Counter(s000=1)
        again = one.render()
        assert again.returncode == 0, again.stderr
        assert fal.created_by_shot() == Counter(s000=1)
        assert one.cut_bytes() == two.cut_bytes()
