"""Issue 12, "no more internal error": file-system trouble and damaged files give one clear line.

A read-only project folder, a run lock that is a directory, a lock file with bad values and a
``--plan`` file with wrong types: each is one ``error:`` line, exit 2 for usage/project problems
and exit 1 for state/file-system trouble (the same command works once it is fixed), nothing paid
(the stand-in server counts submits) and nothing half-written. The permission cases run the real
CLI (it drops capabilities before exec); the damaged-file cases run the commands in this process
(``in_process``), one of them also through the real CLI.

A read-only folder as root: root ignores permission bits only through CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH, so the CLI runs with those two dropped from its capability bounding set
(``prctl(PR_CAPBSET_DROP)`` before exec); as another user the bits apply anyway.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cli import Workspace, small_workspace, ws_env
from fake_wavespeed import FakeWaveSpeed

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


@pytest.fixture
def ws(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> Workspace:
    return small_workspace(tmp_path / "p", ws_env(fake_wavespeed.base_url), in_process=True)


def one_error(stderr: str) -> str:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(("error: ", "Error: "))]
    assert len(errors) == 1, stderr
    return errors[0]


def _obey_permissions() -> None:
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def cli_obeying_permissions(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kling_render", *args],
        env=ws.env,
        cwd=ws.root.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_obey_permissions,
    )


@pytest.fixture
def read_only(ws: Workspace) -> Iterator[Workspace]:
    try:
        yield ws
    finally:
        for path in [ws.root, *ws.root.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)


# -- a read-only project folder ----------------------------------------------------------------


def test_read_only_project_folder(read_only: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    ws = read_only
    probe = cli_obeying_permissions(ws, "validate", str(ws.project))
    assert probe.returncode == 0, probe.stderr
    ws.root.chmod(0o555)
    render = cli_obeying_permissions(ws, "render", str(ws.project), "--poll-interval", "0.05")
    assert render.returncode == 1
    assert "cannot create the state directory" in one_error(render.stderr)
    assert "Permission denied" in render.stderr
    for args, needle in (
        (("render", str(ws.project), "--provider", "local"), "cannot create the state directory"),
        (("plan", str(ws.project), "--out", str(ws.root / "plan.json")), "cannot write the plan"),
        (("report", str(ws.project)), "cannot write the report"),
        # stitch takes the project's run lock first (it writes the cut, the manifest and the lock).
        (("stitch", str(ws.project)), "cannot create the state directory"),
    ):
        done = cli_obeying_permissions(ws, *args)
        assert done.returncode == 1, (args, done.stderr)
        assert needle in one_error(done.stderr), done.stderr
    for args in (("validate", str(ws.project)), ("plan", str(ws.project)), ("status", str(ws.project))):
        assert cli_obeying_permissions(ws, *args).returncode == 0  # reading still works
    assert fake_wavespeed.submits() == []
    assert sorted(p.name for p in ws.root.iterdir()) == ["images", "project.yaml"]


def test_project_folder_read_only_but_state_writable_stops_before_paying(
    read_only: Workspace, fake_wavespeed: FakeWaveSpeed
) -> None:
    ws = read_only
    (ws.root / ".kling-render").mkdir()  # e.g. restored by a CI cache step into a read-only checkout
    ws.root.chmod(0o555)
    done = cli_obeying_permissions(ws, "render", str(ws.project), "--poll-interval", "0.05")
    assert done.returncode == 1
    assert "cannot write the lock file" in one_error(done.stderr)
    assert fake_wavespeed.submits() == []  # refused before the first paid task, not after


def test_read_only_output_folder_keeps_the_clips_and_says_how_to_finish(
    read_only: Workspace, fake_wavespeed: FakeWaveSpeed
) -> None:
    ws = read_only
    (ws.root / "renders").mkdir(mode=0o555)
    done = cli_obeying_permissions(ws, "render", str(ws.project), "--poll-interval", "0.05")
    assert done.returncode == 1
    assert "cannot write the final cut" in one_error(done.stderr) and "kling-render stitch" in done.stderr
    assert len(fake_wavespeed.submits()) == 3
    (ws.root / "renders").chmod(0o755)
    again = cli_obeying_permissions(ws, "stitch", str(ws.project))
    assert again.returncode == 0, again.stderr
    assert len(fake_wavespeed.submits()) == 3


# -- a run lock that is a directory ------------------------------------------------------------


@pytest.mark.parametrize("provider", ["wavespeed", "local"])
def test_run_lock_that_is_a_directory(ws: Workspace, fake_wavespeed: FakeWaveSpeed, provider: str) -> None:
    lock = ws.root / ".kling-render" / "project.yaml" / "run.lock"
    lock.mkdir(parents=True)
    command = ("--provider", provider, "--only", "alpha", "--no-stitch")  # one clip is enough to take the lock
    done = ws.render(*command)
    assert done.returncode == 1
    error = one_error(done.stderr)
    assert "cannot take the run lock" in error and str(lock) in error and "Is a directory" in error, error
    assert fake_wavespeed.submits() == [] and lock.is_dir()
    lock.rmdir()
    assert ws.render(*command).returncode == 0  # fixed: the same command works


# -- a lock file with bad values ---------------------------------------------------------------


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"key": "a" * 64, "model": "kling-v3.0-std/image-to-video",
                                "provider": "wavespeed", "task_id": "t1", "output_sha256": "b" * 64,
                                "duration": 3.0, "cost_usd": 0.252}  # fmt: skip
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not ...}


BAD_LOCKS = {
    "truncated": '{"version": 1, "shots": {"alpha": {"key": ',
    "not-json": "<<<<<<< HEAD\n",
    "a-list": "[1, 2]",
    "no-version": json.dumps({"shots": {}}),
    "version-text": json.dumps({"version": "1", "shots": {}}),
    "version-true": json.dumps({"version": True, "shots": {}}),
    "newer-version": json.dumps({"version": 99, "shots": {}}),
    "shots-list": json.dumps({"version": 1, "shots": ["alpha"]}),
    "entry-text": json.dumps({"version": 1, "shots": {"alpha": "done"}}),
    "key-number": json.dumps({"version": 1, "shots": {"alpha": _entry(key=12)}}),
    "key-missing": json.dumps({"version": 1, "shots": {"alpha": _entry(key=...)}}),
    "task-id-list": json.dumps({"version": 1, "shots": {"alpha": _entry(task_id=["t"])}}),
    "duration-nan": json.dumps({"version": 1, "shots": {"alpha": _entry(duration=float("nan"))}}),
    "duration-text": json.dumps({"version": 1, "shots": {"alpha": _entry(duration="3")}}),
    "cost-negative": json.dumps({"version": 1, "shots": {"alpha": _entry(cost_usd=-1)}}),
    "cost-huge": '{"version": 1, "shots": {"alpha": ' + json.dumps(_entry())[:-1] + ', "cost_usd": 1' + "0" * 500
    + "}}}",
    "deep": '{"version": 1, "shots": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "not-utf8": b'{"version": 1, "shots": {"\xff\xfe": {}}}',
}


@pytest.mark.parametrize("name", sorted(BAD_LOCKS))
def test_lock_file_with_bad_values(ws: Workspace, fake_wavespeed: FakeWaveSpeed, name: str) -> None:
    content = BAD_LOCKS[name]
    lock = ws.root / "project.lock"
    if isinstance(content, bytes):
        lock.write_bytes(content)
    else:
        lock.write_text(content)
    before = lock.read_bytes()
    for args in (("plan",), ("render", "--poll-interval", "0.05"), ("report",)):
        done = ws.cli(args[0], str(ws.project), *args[1:])
        assert done.returncode == 1, (args, done.stderr)
        error = one_error(done.stderr)
        assert error.startswith(f"error: lock file {lock}") and "restore it from git" in error, error
        assert len(error) < 400
    assert fake_wavespeed.submits() == [] and lock.read_bytes() == before
    assert not (ws.root / "renders").exists()


def test_a_bad_lock_file_through_the_real_cli(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    ws.in_process = False
    lock = ws.root / "project.lock"
    lock.write_text(BAD_LOCKS["truncated"])
    for args in (("plan",), ("render", "--poll-interval", "0.05")):
        done = ws.cli(args[0], str(ws.project), *args[1:])
        assert done.returncode == 1, (args, done.stderr)
        assert one_error(done.stderr).startswith(f"error: lock file {lock}"), done.stderr
    assert fake_wavespeed.submits() == [] and lock.read_text() == BAD_LOCKS["truncated"]


def test_lock_file_that_is_a_directory(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    (ws.root / "project.lock").mkdir()
    for args in (("plan",), ("render",)):
        done = ws.cli(args[0], str(ws.project))
        assert done.returncode == 1 and "project.lock" in one_error(done.stderr), done.stderr
    assert fake_wavespeed.submits() == []


# -- a --plan file with wrong types ------------------------------------------------------------


def _saved(ws: Workspace) -> dict[str, object]:
    done = ws.cli("plan", str(ws.project), "--out", "plan.json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads((ws.root / "plan.json").read_text())
    return doc


WRONG_PLANS: dict[str, object] = {
    "a-list": [1, 2],
    "a-number": 7,
    "shots-number": {"shots": 3},
    "shots-text": {"shots": "alpha"},
    "shot-text": {"shots": ["alpha"]},
    "shot-id-number": {"shots": [{"id": 1, "key": "k"}]},
    "shot-key-missing": {"shots": [{"id": "alpha"}]},
    "selected-text": {"selected": "alpha"},
    "selected-numbers": {"selected": [1, 2]},
    "lock-keys-list": {"lock_keys": ["alpha"]},
    "lock-keys-numbers": {"lock_keys": {"alpha": 5}},
    "provider-number": {"provider": 5},
    "provider-missing": {"provider": ...},
    "version-text": {"version": "1"},
    "sha-number": {"project_sha256": 0},
}


@pytest.mark.parametrize("name", sorted(WRONG_PLANS))
def test_plan_file_with_wrong_types(ws: Workspace, fake_wavespeed: FakeWaveSpeed, name: str) -> None:
    change = WRONG_PLANS[name]
    if isinstance(change, dict):
        doc: object = {k: v for k, v in {**_saved(ws), **change}.items() if v is not ...}
    else:
        doc = change
    (ws.root / "plan.json").write_text(json.dumps(doc))
    done = ws.render("--plan", "plan.json")
    assert done.returncode == 2, done.stderr
    error = one_error(done.stderr)
    assert error.startswith("error: --plan plan.json: not a plan file"), error
    assert fake_wavespeed.submits() == [] and not (ws.root / ".kling-render").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"\xff\xfe\x00",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"shots": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    ],
    ids=["empty", "truncated", "not-utf8", "deep", "deep-shots"],
)
def test_plan_file_that_is_not_json(ws: Workspace, fake_wavespeed: FakeWaveSpeed, content: bytes) -> None:
    (ws.root / "plan.json").write_bytes(content)
    done = ws.render("--plan", "plan.json")
    assert done.returncode == 2, done.stderr
    assert one_error(done.stderr).startswith("error: --plan plan.json: not a plan file")
    assert fake_wavespeed.submits() == []


def test_a_good_saved_plan_still_renders(ws: Workspace, fake_wavespeed: FakeWaveSpeed) -> None:
    _saved(ws)
    done = ws.render("--plan", "plan.json")
    assert done.returncode == 0, done.stderr
    assert len(fake_wavespeed.submits()) == 3


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"[" * 100_000], ids=["not-utf8", "deep"])
def test_a_damaged_state_file_is_one_line_and_pays_nothing(
    ws: Workspace, fake_wavespeed: FakeWaveSpeed, content: bytes
) -> None:
    state = ws.state_path_of("wavespeed")
    state.parent.mkdir(parents=True)
    state.write_bytes(content)
    for args in (("render", "--poll-interval", "0.05"), ("status",)):
        done = ws.cli(args[0], str(ws.project), *args[1:])
        assert done.returncode == 1, done.stderr
        assert "is corrupt" in one_error(done.stderr) and "paid tasks" in done.stderr
    assert fake_wavespeed.submits() == [] and state.read_bytes() == content
