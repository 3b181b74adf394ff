"""Issue 12, state isolation: state is namespaced by the project file's full name and by provider.

Against the stand-in WaveSpeed server (``tests/fake_wavespeed.py``), with every paid task counted
from what the server received (``fake_wavespeed.submits()``). The render left with running tasks is
the real CLI stopped by SIGTERM; the commands after it run in this process (``in_process``):

- a ``--provider local`` run while a wavespeed task is ``submitted`` keeps its task id, and the
  next wavespeed run polls it: 0 new tasks;
- ``p.yaml`` and ``p.yml`` in one folder have their own state, run lock and lock file;
- the legacy ``.kling-render/<stem>/state.json`` is migrated on first use: no paid task id lost,
  the next run pays nothing again, the legacy file left untouched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import filelock
import pytest
from e2e_cli import SMALL_PROJECT, SMALL_SHOTS, Workspace, decodes, small_workspace, ws_env
from fake_wavespeed import FakeWaveSpeed

from kling_render.records.lockfile import read_lock
from kling_render.records.state import ShotState, legacy_provider_of, read_state

# The local previews here render small animatics (conftest.small_animatics): the state and the lock
# are the subject, not the pictures.
pytestmark = pytest.mark.usefixtures("small_local")


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def submits_by_shot(fake_wavespeed: FakeWaveSpeed) -> Counter[str]:
    return Counter(r.body["prompt"].split(":", 1)[0].removeprefix("shot ") for r in fake_wavespeed.submits())


def finish_tasks(fake_wavespeed: FakeWaveSpeed) -> None:
    """Every task the stand-in holds completes now."""
    with fake_wavespeed.lock:
        for task in fake_wavespeed.tasks.values():
            task.latency = 0.0


def records(path: Path) -> dict[str, ShotState]:
    return read_state(path) if path.exists() else {}


def start_and_interrupt(ws: Workspace, fake_wavespeed: FakeWaveSpeed, shots: tuple[str, ...]) -> dict[str, str]:
    """A wavespeed render whose tasks are still running when it is stopped (SIGTERM, as CI cancels):
    the shots stay ``submitted`` with their (paid) task ids. Returns them."""
    fake_wavespeed.latency = 600.0
    cmd = [sys.executable, "-m", "kling_render", "render", str(ws.project), "--poll-interval", "0.05",
           "--concurrency", "3", "--only", ",".join(shots)]  # fmt: skip
    path = ws.state_path_of("wavespeed")

    def all_submitted() -> bool:
        got = records(path)
        return all(sid in got and got[sid].status == "submitted" and got[sid].task_id for sid in shots)

    with subprocess.Popen(cmd, env=ws.env, cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            wait_for(all_submitted)
        finally:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    fake_wavespeed.latency = 0.2
    got = records(path)
    return {sid: str(got[sid].task_id) for sid in shots}


def test_a_local_run_never_touches_a_running_wavespeed_task(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> None:
    ws = small_workspace(tmp_path / "p", ws_env(fake_wavespeed.base_url), in_process=True)
    paid = start_and_interrupt(ws, fake_wavespeed, SMALL_SHOTS)
    assert submits_by_shot(fake_wavespeed) == Counter(dict.fromkeys(SMALL_SHOTS, 1))
    wavespeed_state = ws.state_path_of("wavespeed").read_bytes()

    # a free preview of the same project, same shot ids, while the paid tasks are still running
    local = ws.cli("render", str(ws.project), "--provider", "local")
    assert local.returncode == 0, local.stderr
    assert ws.state_path_of("wavespeed").read_bytes() == wavespeed_state  # not even rewritten
    assert {sid: r.status for sid, r in records(ws.state_path_of("local")).items()} == dict.fromkeys(
        SMALL_SHOTS, "done"
    )
    status = ws.cli("status", str(ws.project), "--provider", "wavespeed", "--json")
    assert {s["id"]: (s["status"], s["task_id"]) for s in json.loads(status.stdout)["shots"]} == {
        sid: ("submitted", task) for sid, task in paid.items()
    }
    # the lock had no entry yet: the preview fills it, marked local
    assert {e.provider for e in read_lock(ws.root / "project.lock").values()} == {"local"}

    finish_tasks(fake_wavespeed)
    again = ws.render()
    assert again.returncode == 0, again.stderr
    assert len(fake_wavespeed.submits()) == 3  # 0 new paid tasks: the running ones were polled
    lock = read_lock(ws.root / "project.lock")
    assert {sid: (e.provider, e.task_id) for sid, e in lock.items()} == {
        sid: ("wavespeed", task) for sid, task in paid.items()
    }  # the paid render replaces the preview's entries
    decodes(ws.final_cut)

    # another preview: cached locally, and it leaves the paid entries of the lock alone
    lock_text = (ws.root / "project.lock").read_text()
    preview = ws.cli("render", str(ws.project), "--provider", "local")
    assert preview.returncode == 0 and "3 cached" in preview.stderr, preview.stderr
    assert (ws.root / "project.lock").read_text() == lock_text
    plan = ws.plan("--provider", "local")
    assert {s["id"]: s["change"] for s in plan["shots"]} == dict.fromkeys(SMALL_SHOTS, "changed")
    assert all("provider" in s["changed_fields"] for s in plan["shots"])
    assert all(s["change"] == "unchanged" for s in ws.plan()["shots"])  # wavespeed: as the lock says
    final = ws.render()
    assert final.returncode == 0 and len(fake_wavespeed.submits()) == 3, final.stderr


def test_p_yaml_and_p_yml_render_independently(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> None:
    yaml_ws = small_workspace(tmp_path / "p", ws_env(fake_wavespeed.base_url), in_process=True)
    yaml_ws.project.rename(yaml_ws.root / "p.yaml")
    yml_text = SMALL_PROJECT.replace("on a table", "on a shelf")  # alpha differs, beta and gamma do not
    (yaml_ws.root / "p.yml").write_text(yml_text)

    def cli(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return yaml_ws.cli(args[0], str(yaml_ws.root / name), *args[1:])

    first = cli("p.yaml", "render", "--poll-interval", "0.05")
    assert first.returncode == 0, first.stderr
    assert submits_by_shot(fake_wavespeed) == Counter(dict.fromkeys(SMALL_SHOTS, 1))
    second = cli("p.yml", "render", "--poll-interval", "0.05")
    assert second.returncode == 0, second.stderr
    # only p.yml's alpha is new content; beta and gamma come from the shared content-addressed cache
    assert submits_by_shot(fake_wavespeed) == Counter({"alpha": 2, "beta": 1, "gamma": 1})

    work = yaml_ws.root / ".kling-render"
    yaml_state = read_state(work / "p.yaml" / "wavespeed" / "state.json")
    yml_state = read_state(work / "p.yml" / "wavespeed" / "state.json")
    assert yaml_state["alpha"].key != yml_state["alpha"].key
    assert yaml_state["alpha"].task_id != yml_state["alpha"].task_id
    assert not (work / "p").exists()  # nothing in the shared legacy place
    locks = {name: read_lock(yaml_ws.root / name) for name in ("p.lock", "p.yml.lock")}
    assert locks["p.lock"]["alpha"].key == yaml_state["alpha"].key
    assert locks["p.yml.lock"]["alpha"].key == yml_state["alpha"].key
    assert locks["p.lock"]["beta"] == locks["p.yml.lock"]["beta"]
    assert (yaml_ws.root / "renders" / "final.mp4").exists()

    # one run lock per project file: p.yaml running (of any provider) does not block p.yml
    with filelock.FileLock(str(work / "p.yaml" / "run.lock"), timeout=0):
        blocked = cli("p.yaml", "render", "--provider", "local")
        assert blocked.returncode == 1 and "another kling-render run of this project" in blocked.stderr
        free = cli("p.yml", "render", "--poll-interval", "0.05")
        assert free.returncode == 0 and "3 cached" in free.stderr, free.stderr
    for name in ("p.yaml", "p.yml"):
        again = cli(name, "render", "--poll-interval", "0.05")
        assert again.returncode == 0 and "3 cached" in again.stderr, again.stderr
        status = json.loads(cli(name, "status", "--json").stdout)
        assert set(status["counts"]) == {"done"}
    assert len(fake_wavespeed.submits()) == 4  # nothing paid twice


def test_legacy_state_is_migrated_without_losing_a_paid_task(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> None:
    ws = small_workspace(tmp_path / "p", ws_env(fake_wavespeed.base_url), in_process=True)
    paid = start_and_interrupt(ws, fake_wavespeed, ("alpha", "beta"))
    preview = ws.cli("render", str(ws.project), "--provider", "local", "--only", "gamma", "--no-stitch")
    assert preview.returncode == 0, preview.stderr
    # Rebuild the layout of earlier versions: one shared .kling-render/<stem>/state.json
    namespace = ws.root / ".kling-render" / "project.yaml"
    legacy_records = {
        **json.loads(ws.state_path_of("wavespeed").read_text())["shots"],
        "gamma": json.loads(ws.state_path_of("local").read_text())["shots"]["gamma"],
    }
    assert legacy_records["gamma"]["task_id"].startswith("local-")
    legacy = ws.root / ".kling-render" / "project" / "state.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({"version": 1, "updated": "2025-01-01T00:00:00+00:00", "shots": legacy_records}))
    legacy_bytes = legacy.read_bytes()
    for path in sorted(namespace.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    namespace.rmdir()

    # status reads what the first run will migrate, and writes nothing
    status = json.loads(ws.cli("status", str(ws.project), "--json").stdout)
    assert {s["id"]: s["task_id"] for s in status["shots"] if s["status"] == "submitted"} == paid
    assert not namespace.exists()

    local = ws.cli("render", str(ws.project), "--provider", "local")
    assert local.returncode == 0, local.stderr
    migrated = read_state(ws.state_path_of("wavespeed"))
    assert {sid: r.task_id for sid, r in migrated.items()} == paid
    assert all(r.status == "submitted" for r in migrated.values())
    assert legacy.read_bytes() == legacy_bytes  # left in place, untouched, and never read again

    finish_tasks(fake_wavespeed)
    first = ws.render()
    assert first.returncode == 0, first.stderr
    # alpha and beta were polled (their tasks were paid before the upgrade); gamma never had a task
    assert submits_by_shot(fake_wavespeed) == Counter({"alpha": 1, "beta": 1, "gamma": 1})
    again = ws.render()
    assert again.returncode == 0 and "3 cached" in again.stderr, again.stderr
    assert len(fake_wavespeed.submits()) == 3
    legacy.write_text("{ damaged")  # never read again: a damaged legacy file changes nothing
    assert ws.render().returncode == 0 and len(fake_wavespeed.submits()) == 3


@pytest.mark.parametrize(
    ("record", "provider"),
    [
        (ShotState(key="k", status="submitted", task_id="local-0123456789abcdef"), "local"),
        (ShotState(key="k", status="done", task_id="local-0123456789abcdef"), "local"),
        (ShotState(key="k", status="submitted", task_id="b1f4c2"), "wavespeed"),
        (ShotState(key="k", status="failed", task_id="b1f4c2", attempts=3), "wavespeed"),
        # a submit that may have created a paid task, with no id: kept where money is at stake
        (ShotState(key="k", status="unknown"), "wavespeed"),
        (ShotState(key="k", status="submitting"), "wavespeed"),
        (ShotState(key="k", status="pending"), None),
        (ShotState(key="k", status="done"), None),
        (ShotState(key="k", status="failed", error="submit failed: 400"), None),
    ],
)
def test_legacy_records_go_to_the_provider_their_task_id_names(record: ShotState, provider: str | None) -> None:
    assert legacy_provider_of(record) == provider
