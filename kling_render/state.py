"""The per-project run state: what each shot's task is doing, written atomically on every transition.

``.kling-render/<project stem>/state.json`` beside the project. One run of a project at a
time: the store holds ``run.lock`` (an OS file lock) for as long as it is open.

A corrupt or unreadable state file is an error, never silently replaced: it may hold the
task id of a paid task, and forgetting it means paying again. There is no ``.bak``
fallback for the same reason: the previous good state can be exactly one transition old
(``submitting`` instead of ``submitted`` with its task id). Every write is a temp file,
fsync and rename, so the file is only ever damaged from outside.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from kling_render.errors import LockedError, StateError
from kling_render.fsutil import atomic_write_json, atomic_write_text
from kling_render.jobs import shown_id, valid_task_id
from kling_render.ledger import KeyLedger, TaskEntry, seed_from_records, task_ids

SCHEMA_VERSION = 2  # 2: the task ledger (per shot key, all runs); 1 is read and upgraded
STATUSES = ("pending", "submitting", "submitted", "done", "failed", "unknown")
STATE_DIR = ".kling-render"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ShotState:
    """One shot's record (for its current key). ``cost_usd`` is what its tasks cost when they were
    submitted (a submitted task is paid); ``refunded_usd`` the part refunded for failed tasks."""

    key: str
    status: str = "pending"
    attempts: int = 0
    task_id: str | None = None
    submitted_at: str | None = None
    finished_at: str | None = None
    cost_usd: float = 0.0
    error: str | None = None
    output_sha256: str | None = None
    error_code: str | None = None  # the provider's code for the last failure (rejected submit, failed task)
    refunded_usd: float = 0.0
    # sha256 of each field of the body the current submit sent, recorded before the POST, so a task
    # whose answer was lost can be recognised in the provider's task list (also by a later process)
    wire: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, shot_id: str, raw: object) -> ShotState:
        if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
            raise ValueError(f"shot {shot_id!r}: not an object with a key")
        known = {f.name for f in fields(cls)}
        shot = cls(**{k: v for k, v in raw.items() if k in known})
        if shot.status not in STATUSES:
            raise ValueError(f"shot {shot_id!r}: unknown status {shot.status!r}")
        if shot.wire is not None and not (
            isinstance(shot.wire, dict) and all(isinstance(v, str) for v in shot.wire.values())
        ):
            shot = replace(shot, wire=None)
        if shot.task_id is not None and not valid_task_id(shot.task_id):
            # Never into a URL or a file. A task may exist behind it: the shot is unknown, and the
            # provider's task list is asked which task it was.
            problem = f"the state file held an unusable task id {shown_id(shot.task_id)}"
            if shot.status in ("submitting", "submitted", "unknown"):
                shot = replace(shot, status="unknown", task_id=None, error=f"{problem}; a paid task may exist")
            else:
                shot = replace(shot, task_id=None)
        return shot


def state_dir_for(project_path: Path) -> Path:
    """``.kling-render/<project stem>/`` beside the project file."""
    return project_path.resolve().parent / STATE_DIR / project_path.stem


def read_state(path: Path) -> dict[str, ShotState]:
    """The shots recorded in ``path`` (empty when it does not exist), without taking the lock.

    For ``status``: a reader may see the state one transition old, never a torn file.
    """
    return read_state_file(path)[0]


def read_ledger(path: Path) -> dict[str, KeyLedger]:
    """The task ledger recorded in ``path``, by shot key (see ``ledger``)."""
    return read_state_file(path)[1]


def read_state_file(path: Path) -> tuple[dict[str, ShotState], dict[str, KeyLedger]]:
    """Shots and ledger recorded in ``path`` (both empty when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, {}
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc}") from exc
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        version = doc.get("version")
        if not isinstance(version, int):
            raise ValueError("no schema version")
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state file {path} has schema version {version}, newer than this kling-render "
                f"understands ({SCHEMA_VERSION}); upgrade kling-render"
            )
        raw_shots = doc.get("shots", {})
        if not isinstance(raw_shots, dict):
            raise ValueError("'shots' is not an object")
        shots = {sid: ShotState.from_json(sid, raw) for sid, raw in raw_shots.items()}
        if version < 2:
            return shots, seed_from_records(shots)
        raw_ledger = doc.get("ledger", {})
        if not isinstance(raw_ledger, dict):
            raise ValueError("'ledger' is not an object")
        return shots, {key: KeyLedger.from_json(raw) for key, raw in raw_ledger.items()}
    except (ValueError, TypeError) as exc:
        raise StateError(
            f"state file {path} is corrupt ({exc}). It may hold task ids of paid tasks: "
            "repair it, or move it aside to start over (tasks it recorded may then be paid again)"
        ) from exc


class StateStore:
    """The state file of one project, locked while open; every change is flushed before returning.

    Use as a context manager (or ``open()``/``close()``). ``lock_timeout`` is how long to wait
    for another run to finish before raising LockedError (0: fail at once).
    """

    def __init__(self, path: Path, *, lock_timeout: float = 0.0) -> None:
        self.path = path
        self.lock_path = path.with_name("run.lock")
        self.owner_path = path.with_name("run.owner")
        self.lock_timeout = lock_timeout
        self._lock = filelock.FileLock(str(self.lock_path), timeout=lock_timeout)
        self._shots: dict[str, ShotState] = {}
        self._ledger: dict[str, KeyLedger] = {}
        self._known_ids: set[str] = set()
        # Each record as it appears in the file, kept while the (frozen) record is the same object:
        # a flush then encodes one changed shot, not all of them (a run flushes ~5 times per shot).
        self._encoded: dict[str, tuple[ShotState, str]] = {}
        self._encoded_ledger: dict[str, tuple[KeyLedger, str]] = {}
        self._open = False

    @classmethod
    def for_project(cls, project_path: Path, *, lock_timeout: float = 0.0) -> StateStore:
        return cls(state_dir_for(project_path) / "state.json", lock_timeout=lock_timeout)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> StateStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=self.lock_timeout)
        except filelock.Timeout:
            raise LockedError(self._locked_message()) from None
        try:
            self._shots, self._ledger = read_state_file(self.path)
            self._known_ids = task_ids(self._ledger.values())
            atomic_write_json(self.owner_path, {"pid": os.getpid(), "since": now_iso()})
        except BaseException:
            self._lock.release()
            raise
        self._open = True
        return self

    def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(OSError):
                self.owner_path.unlink()
            self._lock.release()

    def __enter__(self) -> StateStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _locked_message(self) -> str:
        holder = ""
        with contextlib.suppress(OSError, ValueError, TypeError):
            info = json.loads(self.owner_path.read_text(encoding="utf-8"))
            holder = f" (pid {int(info['pid'])}, since {info['since']})"
        waited = f" after waiting {self.lock_timeout:g}s" if self.lock_timeout > 0 else ""
        return (
            f"another kling-render run of this project holds {self.lock_path}{holder}{waited}; "
            "wait for it to finish, or stop it"
        )

    # -- reading and changing shots ----------------------------------------------------------

    @property
    def shots(self) -> Mapping[str, ShotState]:
        return dict(self._shots)

    def get(self, shot_id: str) -> ShotState | None:
        return self._shots.get(shot_id)

    def ensure(self, shot_id: str, key: str) -> ShotState:
        """The shot's record for ``key``; a record for another key (the shot changed) is reset."""
        current = self._shots.get(shot_id)
        if current is not None and current.key == key:
            return current
        return self.set(shot_id, ShotState(key=key))

    def ensure_all(self, keys: Mapping[str, str]) -> None:
        """:meth:`ensure` for many shots with one write (a run starts with every shot at once)."""
        changed = False
        for shot_id, key in keys.items():
            current = self._shots.get(shot_id)
            if current is None or current.key != key:
                self._shots[shot_id] = ShotState(key=key)
                changed = True
        if changed:
            self.flush()

    def update(self, shot_id: str, **changes: Any) -> ShotState:
        """Apply ``changes`` to the shot's record and flush."""
        current = self._shots.get(shot_id)
        if current is None:
            raise KeyError(shot_id)
        status = changes.get("status", current.status)
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        return self.set(shot_id, replace(current, **changes))

    def set(self, shot_id: str, shot: ShotState) -> ShotState:
        self._shots[shot_id] = shot
        self.flush()
        return shot

    # -- the task ledger (by shot key, all runs) --------------------------------------------------

    def ledger(self, key: str) -> KeyLedger:
        return self._ledger.get(key, KeyLedger())

    def known_task_ids(self) -> frozenset[str]:
        """Every task id this project's state has ever recorded (any shot, any key)."""
        return frozenset(self._known_ids)

    def add_task(self, key: str, entry: TaskEntry, *, flush: bool = True) -> int:
        """Append ``entry`` to the key's ledger; its index."""
        ledger = self.ledger(key).with_entry(entry)
        self._put_ledger(key, ledger, flush)
        return len(ledger.tasks) - 1

    def change_task(self, key: str, index: int, *, flush: bool = True, **changes: Any) -> TaskEntry:
        ledger = self.ledger(key).with_change(index, **changes)
        self._put_ledger(key, ledger, flush)
        return ledger.tasks[index]

    def _put_ledger(self, key: str, ledger: KeyLedger, flush: bool) -> None:
        self._ledger[key] = ledger
        self._known_ids |= task_ids([ledger])
        if flush:
            self.flush()

    def flush(self) -> None:
        if not self._open:
            raise StateError(f"state file {self.path} written without holding its lock")
        # The same bytes as json.dumps({"ledger", "shots", "updated", "version"}, indent=2, sort_keys=True).
        parts = []
        for sid, shot in sorted(self._shots.items()):
            hit = self._encoded.get(sid)
            if hit is None or hit[0] is not shot:
                text = json.dumps(shot.to_json(), indent=2, sort_keys=True).replace("\n", "\n    ")
                hit = self._encoded[sid] = (shot, text)
            parts.append(f"    {json.dumps(sid)}: {hit[1]}")
        shots = "{\n" + ",\n".join(parts) + "\n  }" if parts else "{}"
        entries = []
        for key, kl in sorted(self._ledger.items()):
            cached = self._encoded_ledger.get(key)
            if cached is None or cached[0] is not kl:
                encoded = json.dumps(kl.to_json(), indent=2, sort_keys=True).replace("\n", "\n    ")
                cached = self._encoded_ledger[key] = (kl, encoded)
            entries.append(f"    {json.dumps(key)}: {cached[1]}")
        ledger = "{\n" + ",\n".join(entries) + "\n  }" if entries else "{}"
        updated = json.dumps(now_iso())
        text = (
            f'{{\n  "ledger": {ledger},\n  "shots": {shots},\n  "updated": {updated},\n'
            f'  "version": {SCHEMA_VERSION}\n}}\n'
        )
        try:
            atomic_write_text(self.path, text)
        except OSError as exc:
            # The previous state file is intact (atomic rename); the step it was to record is not
            # taken: before a submit that means no POST, after one the shot resumes as `unknown`.
            raise StateError(f"cannot write the state file {self.path}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def open_state(project_path: Path, *, lock_timeout: float = 0.0) -> Iterator[StateStore]:
    """Open (and lock) the project's state for the duration of the block."""
    with StateStore.for_project(project_path, lock_timeout=lock_timeout) as store:
        yield store
