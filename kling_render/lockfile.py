"""The project's lock file (``<project stem>.lock`` beside it, meant for git): what each shot rendered.

JSON, not YAML: the stdlib writes it deterministically (sorted keys, two-space indent,
one field a line, trailing newline), so a re-render changes exactly the lines of the shots
that changed and diffs stay clean; and JSON has no implicit typing (YAML reads a key like
``1e10`` or a shot id ``no`` as a number or a boolean).

    {"version": 1, "shots": {"<id>": {"key", "model", "provider", "task_id",
                                       "output_sha256", "duration", "cost_usd"}}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kling_render.errors import StateError
from kling_render.fsutil import atomic_write_json

LOCK_VERSION = 1


@dataclass(frozen=True)
class LockEntry:
    key: str
    model: str
    provider: str
    task_id: str | None
    output_sha256: str
    duration: float
    cost_usd: float
    # A short digest per wire field, so `plan` can say which field of a changed shot changed.
    fields: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.fields is None:
            del doc["fields"]
        doc["duration"] = round(self.duration, 4)
        doc["cost_usd"] = round(self.cost_usd, 4)
        return doc


def lock_path_for(project_path: Path) -> Path:
    return project_path.parent / f"{project_path.stem}.lock"


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The entries of the lock file at ``path``; empty when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError(f"cannot read lock file {path}: {exc}") from exc
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
            raise ValueError("not an object with a version")
        if doc["version"] > LOCK_VERSION:
            raise ValueError(f"version {doc['version']} is newer than this kling-render understands")
        shots = doc.get("shots", {})
        if not isinstance(shots, dict):
            raise ValueError("'shots' is not an object")
        return {
            sid: LockEntry(
                key=str(e["key"]),
                model=str(e["model"]),
                provider=str(e["provider"]),
                task_id=None if e.get("task_id") is None else str(e["task_id"]),
                output_sha256=str(e["output_sha256"]),
                duration=float(e["duration"]),
                cost_usd=float(e.get("cost_usd", 0.0)),
                fields=_fields(e.get("fields")),
            )
            for sid, e in shots.items()
        }
    except (ValueError, TypeError, KeyError) as exc:
        raise StateError(f"lock file {path} is not valid ({exc}); fix it or restore it from git") from exc


def _fields(raw: object) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        return None
    return {str(k): str(v) for k, v in raw.items()}


def write_lock(path: Path, entries: Mapping[str, LockEntry]) -> None:
    doc = {"version": LOCK_VERSION, "shots": {sid: e.to_json() for sid, e in sorted(entries.items())}}
    atomic_write_json(path, doc)


class LockFile:
    """The lock file of one project, as the runner records into it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, LockEntry] | None = None  # read once: the run lock keeps others out

    @classmethod
    def for_project(cls, project_path: Path) -> LockFile:
        return cls(lock_path_for(project_path))

    def read(self) -> dict[str, LockEntry]:
        if self._entries is None:
            self._entries = read_lock(self.path)
        return dict(self._entries)

    def record(self, shot_id: str, entry: LockEntry) -> None:
        """Merge one shot's entry; entries of other shots are kept. Writes only on change."""
        entries = self.read()
        if entries.get(shot_id) == entry and self.path.exists():
            return
        entries[shot_id] = entry
        write_lock(self.path, entries)
        self._entries = entries
