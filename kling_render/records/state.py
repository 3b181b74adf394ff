"""The per-project run state: what each shot's task is doing, written atomically on every transition.

Namespaced by the project file's full name and by provider (SPEC §6)::

    .kling-render/<project file name>/run.lock             one run of the project file at a time
    .kling-render/<project file name>/<provider>/state.json

so ``p.yaml`` and ``p.yml`` in one folder never share records, and a ``--provider local``
run never reads, rewrites or resets a wavespeed record (its task id is what keeps the next
wavespeed run from paying again). The run lock is one per project file, whatever the provider:
two runs of one project never interleave (they share the lock file and the final cut).

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
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from kling_render.errors import LockedError, StateError
from kling_render.fsutil import atomic_write_json, atomic_write_text
from kling_render.jobs import shown_id, valid_task_id
from kling_render.masking import mask_json
from kling_render.records.ledger import KeyLedger, TaskEntry, seed_from_records, task_ids
from kling_render.records.lifecycle import Move, Rule, Status, rule_for

SCHEMA_VERSION = 2  # 2: the task ledger (per shot key, all runs); 1 is read and upgraded
STATUSES = tuple(s.value for s in Status)
STATE_DIR = ".kling-render"
_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
LOCAL_TASK_PREFIX = "local-"  # the local provider's task ids (providers/local.py)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ShotState:
    """One shot's record (for its current key). ``cost_usd`` is what its tasks cost when they were
    submitted (a submitted task is paid); ``refunded_usd`` the part refunded for failed tasks."""

    key: str
    status: Status = Status.PENDING
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
        shot = replace(shot, status=Status(shot.status))
        if shot.wire is not None and not (
            isinstance(shot.wire, dict) and all(isinstance(v, str) for v in shot.wire.values())
        ):
            shot = replace(shot, wire=None)
        if shot.task_id is not None and not valid_task_id(shot.task_id):
            # Never into a URL or a file. A task may exist behind it: the shot is unknown, and the
            # provider's task list is asked which task it was.
            problem = f"the state file held an unusable task id {shown_id(shot.task_id)}"
            if shot.status in ("submitting", "submitted", "unknown"):
                shot = replace(shot, status=Status.UNKNOWN, task_id=None, error=f"{problem}; a paid task may exist")
            else:
                shot = replace(shot, task_id=None)
        return shot


def work_dir_for(project_path: Path) -> Path:
    """``.kling-render/`` beside the project file."""
    return project_path.resolve().parent / STATE_DIR


def state_dir_for(project_path: Path) -> Path:
    """``.kling-render/<project file name>/``: the run lock and one state directory per provider."""
    return work_dir_for(project_path) / project_path.name


def state_path_for(project_path: Path, provider: str) -> Path:
    """``.kling-render/<project file name>/<provider>/state.json``."""
    if not _PROVIDER_RE.match(provider):
        raise ValueError(f"bad provider name {provider!r}")
    return state_dir_for(project_path) / provider / "state.json"


def legacy_state_path_for(project_path: Path) -> Path:
    """Where state lived before it was namespaced: ``.kling-render/<project stem>/state.json``,
    shared by every provider and by ``p.yaml``/``p.yml``."""
    return work_dir_for(project_path) / project_path.stem / "state.json"


def legacy_provider_of(shot: ShotState) -> str | None:
    """Which provider's namespace a legacy record moves to; None when it carries nothing to keep.

    A task id says it: ``local-<hex>`` is the local provider's, any other is wavespeed's (the
    only paid provider the legacy layout knew). A record without a task id moves only when it is
    ``submitting``/``unknown``: that submit may have created a paid task, and forgetting it would
    let the next run pay again (a free local submit lost that way costs nothing to repeat). The
    rest (pending, done from the cache, failed before any task) is rebuilt for free.
    """
    if shot.task_id:
        return "local" if shot.task_id.startswith(LOCAL_TASK_PREFIX) else "wavespeed"
    if shot.status in ("submitting", "unknown"):
        return "wavespeed"
    return None


def legacy_records(project_path: Path, provider: str) -> dict[str, ShotState]:
    """The legacy file's records that belong to ``provider`` (see :func:`legacy_provider_of`)."""
    return {
        sid: shot
        for sid, shot in read_state(legacy_state_path_for(project_path)).items()
        if legacy_provider_of(shot) == provider
    }


def _migrated(state_dir: Path) -> bool:
    """Whether the namespace has state of any provider (then the legacy file is never read)."""
    with contextlib.suppress(OSError), os.scandir(state_dir) as entries:
        return any(e.is_dir() and os.path.isfile(os.path.join(e.path, "state.json")) for e in entries)
    return False


def read_project_state(project_path: Path, provider: str) -> dict[str, ShotState]:
    """``provider``'s records for the project, without taking the lock (for ``status``/``report``)."""
    return read_project_state_file(project_path, provider)[0]


def read_project_state_file(project_path: Path, provider: str) -> tuple[dict[str, ShotState], dict[str, KeyLedger]]:
    """``provider``'s records and task ledger for the project, without taking the lock.

    Before the first run in the namespaced layout this is what that run will migrate from the
    legacy file, so ``status`` shows a paid task id the moment kling-render is upgraded.
    """
    path = state_path_for(project_path, provider)
    if _migrated(path.parent.parent):
        return read_state_file(path)
    shots = legacy_records(project_path, provider)
    return shots, seed_from_records(shots)


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
        data = path.read_bytes()
    except FileNotFoundError:
        return {}, {}
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc}") from exc
    try:
        doc = json.loads(data.decode("utf-8"))
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
    except (ValueError, TypeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise StateError(
            f"state file {path} is corrupt ({reason}). It may hold task ids of paid tasks: "
            "repair it, or move it aside to start over (tasks it recorded may then be paid again)"
        ) from None


class StateStore:
    """The state file of one project, locked while open; every change is flushed before returning.

    Use as a context manager (or ``open()``/``close()``). ``lock_timeout`` is how long to wait
    for another run to finish before raising LockedError (0: fail at once).
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_path: Path | None = None,
        lock_timeout: float = 0.0,
        legacy_from: Path | None = None,
    ) -> None:
        self.path = path
        self.lock_path = lock_path or path.with_name("run.lock")
        self.owner_path = self.lock_path.with_name("run.owner")
        self.lock_timeout = lock_timeout
        self.legacy_from = legacy_from  # the project file whose legacy state to migrate on open
        self._lock = filelock.FileLock(str(self.lock_path), timeout=lock_timeout)
        self._shots: dict[str, ShotState] = {}
        self._ledger: dict[str, KeyLedger] = {}
        self._known_ids: set[str] = set()
        # Each record as it appears in the file, kept while the (frozen) record is the same object:
        # a flush then encodes one changed shot, not all of them (a run flushes ~5 times per shot).
        self._encoded: dict[str, tuple[ShotState, str]] = {}
        self._encoded_ledger: dict[str, tuple[KeyLedger, str]] = {}
        self._open = False
        self._sibling = False  # shares another open store's run lock (see ``sibling``)

    @classmethod
    def for_project(cls, project_path: Path, provider: str, *, lock_timeout: float = 0.0) -> StateStore:
        """``provider``'s state of the project file, under the project file's one run lock."""
        return cls(
            state_path_for(project_path, provider),
            lock_path=state_dir_for(project_path) / "run.lock",
            lock_timeout=lock_timeout,
            legacy_from=project_path,
        )

    @property
    def is_open(self) -> bool:
        return self._open

    def sibling(self, path: Path) -> StateStore:
        """Another provider's state file of the same project, under this (open) store's run lock:
        a run of several providers holds the project's one lock throughout (the lock is reentrant)."""
        other = StateStore(path, lock_path=self.lock_path, lock_timeout=self.lock_timeout)
        other._lock = self._lock
        other._sibling = True
        return other

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> StateStore:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {self.path.parent}: {_why(exc)}") from None
        try:
            self._lock.acquire(timeout=self.lock_timeout)
        except filelock.Timeout:
            raise LockedError(self._locked_message()) from None
        except OSError as exc:  # the lock path is a directory, the folder is read-only, ...
            raise StateError(
                f"cannot take the run lock {self.lock_path}: {_why(exc)}; "
                "it must be a regular file in a writable directory (remove whatever is in its place)"
            ) from None
        try:
            if self.legacy_from is not None:
                self._migrate_legacy(self.legacy_from)
            self._shots, self._ledger = read_state_file(self.path)
            self._known_ids = task_ids(self._ledger.values())
            if not self._sibling:
                atomic_write_json(self.owner_path, {"pid": os.getpid(), "since": now_iso()})
        except OSError as exc:
            self._lock.release()
            raise StateError(f"cannot write beside the state file {self.path}: {_why(exc)}") from None
        except BaseException:
            self._lock.release()
            raise
        self._open = True
        return self

    def _migrate_legacy(self, project_path: Path) -> None:
        """Split the legacy ``.kling-render/<stem>/state.json`` into the provider namespaces, once.

        Runs under the project file's run lock, before the first namespaced state exists. Every
        provider's state file is written (empty ones too): their presence is the mark that the
        project file has migrated, so the legacy file is never read for it again. The legacy
        file itself is left untouched, not renamed: ``p.yaml`` and ``p.yml`` shared it, and the
        sibling migrates its own copy on its first run (a copied record whose key is not the
        sibling's shot's is reset there, as any changed shot's is). Delete it when you like.
        """
        namespace = self.path.parent.parent
        legacy = legacy_state_path_for(project_path)
        if _migrated(namespace) or not legacy.is_file():
            return
        records = read_state(legacy)  # a corrupt legacy file stops here, never silently dropped
        routed: dict[str, dict[str, ShotState]] = {"local": {}, "wavespeed": {}}
        for sid, shot in records.items():
            provider = legacy_provider_of(shot)
            if provider is not None:
                routed[provider][sid] = shot
        for provider, shots in routed.items():
            target = namespace / provider / "state.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, encode_state(shots, ledger=seed_from_records(shots)))

    def close(self) -> None:
        if self._open:
            self._open = False
            if not self._sibling:
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
        return self._put(shot_id, ShotState(key=key))

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

    def transition(self, shot_id: str, move: Move, **changes: Any) -> tuple[ShotState, Rule]:
        """Apply ``move`` (records/lifecycle.py) and ``changes`` to the shot's record, and flush.
        The only way a status changes: a move its current status does not allow raises IllegalMove."""
        current = self._shots.get(shot_id)
        if current is None:
            raise KeyError(shot_id)
        if "status" in changes:
            raise TypeError("a status changes only through a move")
        rule = rule_for(move, current.status)
        return self._put(shot_id, replace(current, status=rule.to, **changes)), rule

    def note(self, shot_id: str, **changes: Any) -> ShotState:
        """Change fields of the shot's record other than its status (errors, costs), and flush."""
        current = self._shots.get(shot_id)
        if current is None:
            raise KeyError(shot_id)
        if "status" in changes:
            raise TypeError("a status changes only through a move (transition)")
        return self._put(shot_id, replace(current, **changes))

    def _put(self, shot_id: str, shot: ShotState) -> ShotState:
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
        text = encode_state(self._shots, self._encoded, self._ledger, self._encoded_ledger)
        try:
            atomic_write_text(self.path, text)
        except OSError as exc:
            # The previous state file is intact (atomic rename); the step it was to record is not
            # taken: before a submit that means no POST, after one the shot resumes as `unknown`.
            raise StateError(f"cannot write the state file {self.path}: {exc.strerror or exc}") from exc


def encode_state(
    shots: Mapping[str, ShotState],
    memo: dict[str, tuple[ShotState, str]] | None = None,
    ledger: Mapping[str, KeyLedger] | None = None,
    ledger_memo: dict[str, tuple[KeyLedger, str]] | None = None,
) -> str:
    """The state file's text: the same bytes as json.dumps({"ledger", "shots", "updated",
    "version"}, indent=2, sort_keys=True). The memos keep each record's text while the (frozen)
    record is the same object, so a flush encodes the one changed shot, not all of them."""
    body = _encode_map(shots, {} if memo is None else memo)
    book = _encode_map(ledger or {}, {} if ledger_memo is None else ledger_memo)
    updated = json.dumps(now_iso())
    return (
        f'{{\n  "ledger": {book},\n  "shots": {body},\n  "updated": {updated},\n'
        f'  "version": {SCHEMA_VERSION}\n}}\n'
    )


def _encode_map(records: Mapping[str, Any], memo: dict[str, Any]) -> str:
    parts = []
    for name, record in sorted(records.items()):
        hit = memo.get(name)
        if hit is None or hit[0] is not record:
            # Masked value by value (masking.py): a server's text in an error never brings a secret here.
            text = json.dumps(mask_json(record.to_json()), indent=2, sort_keys=True).replace("\n", "\n    ")
            hit = memo[name] = (record, text)
        parts.append(f"    {json.dumps(name)}: {hit[1]}")
    return "{\n" + ",\n".join(parts) + "\n  }" if parts else "{}"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def open_state(project_path: Path, provider: str, *, lock_timeout: float = 0.0) -> Iterator[StateStore]:
    """Open (and lock) ``provider``'s state of the project for the duration of the block."""
    with StateStore.for_project(project_path, provider, lock_timeout=lock_timeout) as store:
        yield store
