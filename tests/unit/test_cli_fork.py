"""The e2e helpers' CLI processes are forks of a zygote (tests/cli_fork.py): each must answer as
``python -m kling_render`` does, a real process with its own pid, signals, environment and
working directory, and fall back to that command where a fork cannot stand for it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cli_fork
import pytest
from e2e_cli import base_env

GOOD = (
    "version: 1\nname: x\nprovider: local\ndefaults: {model: kling-v3.0-std/text-to-video}\n"
    "shots:\n  - id: a\n    prompt: p\n    duration: 5\n"
)
BAD = GOOD.replace("duration: 5", "duration: 99")


def _exec(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kling_render", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_this_worker_has_a_zygote_and_commands_are_its_forks(tmp_path: Path) -> None:
    assert cli_fork.ZYGOTE.running, "no zygote: every CLI command of the suite starts a new interpreter"
    with cli_fork.popen(["--version"], env=base_env(), cwd=tmp_path, stdout=subprocess.PIPE) as proc:
        assert isinstance(proc, cli_fork.Forked)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.startswith("kling-render")


@pytest.mark.parametrize(
    "args",
    [["--version"], ["validate", "p.yaml"], ["plan", "p.yaml", "--json"], ["models", "--json"], ["no-such-command"]],
)
def test_a_fork_answers_as_the_interpreter_does(tmp_path: Path, args: list[str]) -> None:
    """Same exit code, stdout and stderr (a bad file: exit 2 naming its line; a usage error)."""
    (tmp_path / "p.yaml").write_text(BAD)
    env = base_env(NO_COLOR="1")
    forked = cli_fork.run(args, env=env, cwd=tmp_path, timeout=60)
    fresh = _exec(args, env, tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    if args[0] == "validate":
        assert forked.returncode == 2 and "p.yaml" in forked.stderr


def test_the_environment_and_directory_are_the_commands_own(tmp_path: Path) -> None:
    """A project found relative to the given directory; a key set only in the given environment."""
    (tmp_path / "p.yaml").write_text(GOOD)
    env = base_env(WAVESPEED_API_KEY="sk-only-here-1234567890")
    done = cli_fork.run(["validate", "p.yaml"], env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    elsewhere = cli_fork.run(["validate", "p.yaml"], env=env, cwd=tmp_path.parent, timeout=60)
    assert elsewhere.returncode == 2


def test_a_signal_reaches_the_command_and_its_status_is_the_signal(tmp_path: Path) -> None:
    """kill -9 ends the command itself (not a go-between): the status says SIGKILL, at once."""
    (tmp_path / "p.yaml").write_text(GOOD)
    # `--wait-lock` waits on a lock this test holds: the command is alive until it is killed
    from kling_render.records.state import StateStore

    store = StateStore.for_project(tmp_path / "p.yaml", "local").open()
    try:
        with cli_fork.popen(
            ["render", "p.yaml", "--provider", "local", "--wait-lock", "60"],
            env=base_env(),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            time.sleep(1.0)
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        store.close()


@pytest.mark.parametrize("name", ["PYTHONHASHSEED", "PYTHONPATH", "LC_ALL"])
def test_an_environment_read_at_the_interpreters_start_gets_a_new_interpreter(tmp_path: Path, name: str) -> None:
    env = base_env(**{name: "C" if name == "LC_ALL" else "7"})
    assert cli_fork.needs_new_interpreter(env)
    with cli_fork.popen(["--version"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL) as proc:
        assert isinstance(proc, subprocess.Popen)
    assert not cli_fork.needs_new_interpreter(base_env())
