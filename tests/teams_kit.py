"""Helpers for the teams tests: several checkouts of one project (separate directories, separate
local caches) sharing one remote (moto on 127.0.0.1) and one stand-in WaveSpeed process.

Every checkout has its own environment: the stand-in's URL and key, the remote's variables, and a
short reconciliation grace (the stand-in lists tasks at once). Machines running at the same time
are real CLI processes (``Checkout.start``); one machine's command run while no other is running
(``render``, ``plan``, ``cli``) runs in this process unless the checkout says otherwise
(``in_process``, as in e2e_cli.Workspace).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cli_fork
from e2e_cli import SECRET, Workspace, base_env
from e2e_fake import FakeProcess
from stress_kit import write_project

SUBMIT = "/api/v3/kwaivgi/"
MODEL_PATH = SUBMIT + "kling-video-o3-std/image-to-video"  # the model of write_project's shots


def team_env(fake: FakeProcess, remote_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = base_env(
        WAVESPEED_BASE_URL=fake.base_url,
        WAVESPEED_API_KEY=SECRET,
        KLING_RENDER_RECONCILE_GRACE="1",
        KLING_RENDER_HEARTBEAT="600",
        **remote_env,
    )
    env.update(extra)
    return env


@dataclass
class Checkout(Workspace):
    """One machine's checkout: its own directory and its own local cache (beside the project)."""

    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``render`` (or any command given in ``args``) in the background as the real CLI process
        (whatever ``in_process`` says), JSON events on stdout.

        Its stdout and stderr go to files beside the checkout, not pipes: a pipe nobody reads while
        another machine is waited for fills up, and the process blocks on a write while it holds
        claims (which the other machine then waits for)."""
        cmd = [sys.executable, "-m", "kling_render", *args]
        logs = self.root.parent / f"{self.root.name}-logs"
        logs.mkdir(exist_ok=True)
        n = len(self.procs)
        with open(logs / f"{n}.out", "w") as out, open(logs / f"{n}.err", "w") as err:
            if self.fresh:
                proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=self.env, cwd=self.root)
            else:
                proc = cli_fork.popen(args, stdout=out, stderr=err, env=self.env, cwd=self.root)
        self.procs.append(proc)
        return proc

    def start_render(self, *extra: str) -> subprocess.Popen[str]:
        return self.start("render", str(self.project), "--poll-interval", "0.05", "--json", *extra)

    def finish(self, proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, list[dict[str, Any]], str]:
        """Wait for ``proc``; its exit code, its JSON events and its stderr."""
        proc.wait(timeout=timeout)
        logs = self.root.parent / f"{self.root.name}-logs"
        n = self.procs.index(proc)
        out, err = (logs / f"{n}.out").read_text(), (logs / f"{n}.err").read_text()
        self.outputs += [out, err]
        events = [e for line in out.splitlines() if line.startswith("{") and "event" in (e := json.loads(line))]
        return proc.returncode, events, err

    def cut_bytes(self) -> bytes:
        return self.final_cut.read_bytes()


def checkouts(
    root: Path, env: dict[str, str], count: int, shots: int = 8, *, in_process: bool = True
) -> list[Checkout]:
    """``count`` checkouts of one ``shots``-shot project (identical files, separate directories)."""
    first = write_project(root / "machine-1", shots)
    result = [Checkout(first.parent, dict(env), in_process=in_process)]
    for n in range(2, count + 1):
        other = root / f"machine-{n}"
        shutil.copytree(first.parent, other)
        result.append(Checkout(other, dict(env), in_process=in_process))
    return result


def tasks(fake: FakeProcess) -> dict[str, dict[str, Any]]:
    """Every task the stand-in created (each is paid when created)."""
    stats: dict[str, dict[str, Any]] = fake.stats()["tasks"]
    return stats


def paid_by_shot(fake: FakeProcess) -> Counter[str]:
    """Tasks created per shot (write_project's prompts name their shot: ``shot sNNN, ...``)."""
    counts: Counter[str] = Counter()
    for task in tasks(fake).values():
        match = re.match(r"shot (\w+)", str(task["body"].get("prompt", "")))
        counts[match.group(1) if match else "?"] += 1
    return counts


def wait_until(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kinds(events: Sequence[dict[str, Any]], shot: str | None = None) -> list[str]:
    return [e["event"] for e in events if shot is None or e.get("shot_id") == shot]


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, 9)
    proc.wait(timeout=30)
