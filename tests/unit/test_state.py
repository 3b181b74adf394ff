"""State file: atomic writes, schema, corrupt files, key changes, one run per project."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kling_render.errors import LockedError, StateError
from kling_render.records.lifecycle import IllegalMove, Move
from kling_render.records.lockfile import LockEntry, LockFile, read_lock, write_lock
from kling_render.records.state import SCHEMA_VERSION, ShotState, StateStore, read_state, state_dir_for


def test_state_path_is_beside_the_project_by_file_name_and_provider(tmp_path: Path) -> None:
    store = StateStore.for_project(tmp_path / "teaser.yaml", "wavespeed")
    assert store.path == tmp_path / ".kling-render" / "teaser.yaml" / "wavespeed" / "state.json"
    assert store.lock_path == tmp_path / ".kling-render" / "teaser.yaml" / "run.lock"
    assert state_dir_for(tmp_path / "teaser.yaml") == store.path.parent.parent
    # one run lock per project file, whatever the provider; p.yml is another project file
    assert StateStore.for_project(tmp_path / "teaser.yaml", "local").lock_path == store.lock_path
    assert StateStore.for_project(tmp_path / "teaser.yml", "wavespeed").lock_path != store.lock_path
    with pytest.raises(ValueError):
        StateStore.for_project(tmp_path / "teaser.yaml", "../x")


def test_every_change_is_written_with_a_schema_version_and_no_temp_files(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s" / "state.json") as store:
        store.ensure("intro", "k1")
        assert read_state(store.path)["intro"] == ShotState(key="k1")
        store.transition("intro", Move.SUBMIT, attempts=1)
        assert read_state(store.path)["intro"].status == "submitting"
        store.transition("intro", Move.SUBMITTED, task_id="abc")
        doc = json.loads(store.path.read_text())
        assert doc["version"] == SCHEMA_VERSION
        assert doc["shots"]["intro"]["task_id"] == "abc"
        assert store.path.read_text().endswith("\n")
    assert sorted(p.name for p in store.path.parent.iterdir() if not p.name.endswith(".lock")) == ["state.json"]


def test_a_changed_key_resets_the_shot_and_other_shots_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with StateStore(path) as store:
        store.ensure("a", "k1")
        store.transition("a", Move.CACHED, output_sha256="x", cost_usd=0.5)
        store.ensure("b", "kb")
    with StateStore(path) as store:
        assert store.ensure("a", "k1").status == "done"
        assert store.ensure("a", "k2") == ShotState(key="k2")
    assert set(read_state(path)) == {"a", "b"}


def test_a_status_changes_only_by_a_move_the_lifecycle_allows(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.json") as store:
        store.ensure("a", "k")
        with pytest.raises(TypeError):
            store.note("a", status="done")  # no status by hand
        with pytest.raises(TypeError):
            store.transition("a", Move.SUBMIT, status="done")
        with pytest.raises(IllegalMove):
            store.transition("a", Move.SUBMITTED, task_id="t1")  # pending -> submitted skips the reservation
        with pytest.raises(IllegalMove):
            store.transition("a", Move.FETCHED)  # nothing was submitted
        store.transition("a", Move.SUBMIT)
        with pytest.raises(IllegalMove):
            store.transition("a", Move.SUBMIT)  # one reservation, one POST: never two submits in flight
        store.transition("a", Move.SUBMITTED, task_id="t1")
        store.transition("a", Move.FETCHED, output_sha256="x")
        with pytest.raises(IllegalMove):
            store.transition("a", Move.FAIL)  # a done step's output exists: nothing fails it
        assert read_state(store.path)["a"].status == "done"


def test_unknown_status_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 2, "shots": {"a": {"key": "k", "status": "bogus"}}}))
    with pytest.raises(StateError):
        read_state(path)


@pytest.mark.parametrize(
    "text",
    ['{"version": 1, "shots": {"a": {"key": "k", "status": "weird"}}}', "{not json", "[]", '{"shots": {}}'],
)
def test_a_corrupt_state_file_is_an_error_not_a_fresh_start(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateError, match="corrupt"):
        StateStore(path).open()
    assert path.read_text() == text  # untouched
    # and the lock was released: a fixed file opens fine
    path.write_text('{"version": 1, "shots": {}}')
    with StateStore(path) as store:
        assert store.shots == {}


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": SCHEMA_VERSION + 1, "shots": {}}))
    with pytest.raises(StateError, match="newer"):
        read_state(path)


def test_two_stores_of_one_project_cannot_both_be_open(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with StateStore(path):
        started = time.monotonic()
        with pytest.raises(LockedError, match=r"run\.lock.*pid"):
            StateStore(path, lock_timeout=0.3).open()
        assert time.monotonic() - started >= 0.25
    with StateStore(path):  # released
        pass


def test_writing_without_the_lock_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    with pytest.raises(StateError):
        store.flush()


def test_another_process_holding_the_lock_is_named(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from kling_render.records.state import StateStore
        with StateStore(Path({str(path)!r})):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            StateStore(path, lock_timeout=0.1).open()
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()
    with StateStore(path, lock_timeout=2):
        pass


# -- the git lock file ----------------------------------------------------------------------------


def _entry(key: str) -> LockEntry:
    return LockEntry(key, "kling-v3.0-std/image-to-video", "local", "t1", "ab" * 32, 5.0, 0.42)


def test_lock_file_is_sorted_json_with_a_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    write_lock(path, {"b": _entry("kb"), "a": _entry("ka")})
    text = path.read_text()
    assert text.endswith("}\n")
    assert text.index('"a"') < text.index('"b"')
    assert read_lock(path) == {"a": _entry("ka"), "b": _entry("kb")}
    before = path.stat().st_mtime_ns
    lock = LockFile(path)
    lock.record("a", _entry("ka"))  # no change, no write
    assert path.stat().st_mtime_ns == before
    lock.record("c", _entry("kc"))
    assert set(read_lock(path)) == {"a", "b", "c"}


def test_missing_lock_is_empty_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "none.lock") == {}
    (tmp_path / "bad.lock").write_text('{"version": 1, "shots": {"a": {"key": "k"}}}')
    with pytest.raises(StateError, match=r"bad\.lock"):
        read_lock(tmp_path / "bad.lock")


def test_a_state_write_that_fails_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import kling_render.records.state as state_module

    with StateStore(tmp_path / "state.json") as store:
        store.ensure("a", "k" * 64)
        before = (tmp_path / "state.json").read_text()

        def full_disk(path: Path, text: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(state_module, "atomic_write_text", full_disk)
        with pytest.raises(StateError, match=r"cannot write the state file .*No space left on device"):
            store.transition("a", Move.SUBMIT)
    assert (tmp_path / "state.json").read_text() == before


def test_ensure_all_writes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kling_render.records.state as state_module

    writes: list[str] = []
    real = state_module.atomic_write_text

    def counting(path: Path, text: str) -> None:
        writes.append(text)
        real(path, text)

    with StateStore(tmp_path / "state.json") as store:
        store.ensure("a", "1" * 64)
        monkeypatch.setattr(state_module, "atomic_write_text", counting)
        store.ensure_all({"a": "1" * 64, "b": "2" * 64, "c": "3" * 64})
        assert len(writes) == 1
        store.ensure_all({"a": "1" * 64, "b": "2" * 64})  # nothing new: no write
        assert len(writes) == 1
    shots = read_state(tmp_path / "state.json")
    assert {sid: s.key[0] for sid, s in shots.items()} == {"a": "1", "b": "2", "c": "3"}
    assert {s.status for s in shots.values()} == {"pending"}
