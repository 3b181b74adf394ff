"""The project's lock file (``<project stem>.lock`` beside it, meant for git): what each shot rendered.

JSON, not YAML: the stdlib writes it deterministically (sorted keys, two-space indent,
one field a line, trailing newline), so a re-render changes exactly the lines of the shots
that changed and diffs stay clean; and JSON has no implicit typing (YAML reads a key like
``1e10`` or a shot id ``no`` as a number or a boolean).

    {"version": 1,
     "shots": {"<id>": {"key", "model", "provider", "task_id", "output_sha256", "duration",
                        "cost_usd", "fields", "prompt", "trim", "transition"}},
     "cut": {"order": [ids], "output": {...}, "audio": {...} | null}}

``prompt`` is the rendered prompt (what was sent), so a pull request's diff of the lock reads as
the prompts that changed, and ``plan`` can show the old text beside the new. ``trim`` and
``transition`` per shot and the ``cut`` section record the settings of the last final cut
(written when a stitch succeeds or finds the cut up to date), so ``plan`` can say that an edit
only re-stitches. Every one of these is optional: older locks read as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
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
    prompt: str | None = None  # the rendered prompt sent for this clip
    # The shot's cut settings in the last final cut ({"trim": {...}, "transition": {...}}).
    cut: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for name in ("fields", "prompt", "cut"):
            if doc[name] is None:
                del doc[name]
        cut = doc.pop("cut", None)
        if cut is not None:
            doc.update(cut)  # "trim" and "transition" sit beside the other fields: plain diffs
        doc["duration"] = round(self.duration, 4)
        doc["cost_usd"] = round(self.cost_usd, 4)
        return doc


def lock_path_for(project_path: Path) -> Path:
    return project_path.parent / f"{project_path.stem}.lock"


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The entries of the lock file at ``path``; empty when there is none."""
    return read_lock_file(path)[0]


def read_lock_file(path: Path) -> tuple[dict[str, LockEntry], dict[str, Any] | None]:
    """The entries and the ``cut`` section of the lock file at ``path`` (empty, None when there is none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
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
        cut = doc.get("cut")
        entries = {
            sid: LockEntry(
                key=str(e["key"]),
                model=str(e["model"]),
                provider=str(e["provider"]),
                task_id=None if e.get("task_id") is None else str(e["task_id"]),
                output_sha256=str(e["output_sha256"]),
                duration=float(e["duration"]),
                cost_usd=float(e.get("cost_usd", 0.0)),
                fields=_fields(e.get("fields")),
                prompt=e["prompt"] if isinstance(e.get("prompt"), str) else None,
                cut=_cut(e),
            )
            for sid, e in shots.items()
        }
        return entries, cut if isinstance(cut, dict) else None
    except (ValueError, TypeError, KeyError) as exc:
        raise StateError(f"lock file {path} is not valid ({exc}); fix it or restore it from git") from exc


def _fields(raw: object) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        return None
    return {str(k): str(v) for k, v in raw.items()}


def _cut(e: Mapping[str, Any]) -> dict[str, Any] | None:
    trim, transition = e.get("trim"), e.get("transition")
    if not isinstance(trim, dict) or not isinstance(transition, dict):
        return None
    return {"trim": trim, "transition": transition}


def write_lock(path: Path, entries: Mapping[str, LockEntry], cut: Mapping[str, Any] | None = None) -> None:
    doc: dict[str, Any] = {
        "version": LOCK_VERSION,
        "shots": {sid: e.to_json() for sid, e in sorted(entries.items())},
    }
    if cut is not None:
        doc["cut"] = dict(cut)
    atomic_write_json(path, doc)


class LockFile:
    """The lock file of one project, as the runner records into it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, LockEntry] | None = None  # read once: the run lock keeps others out
        self._cut: dict[str, Any] | None = None

    @classmethod
    def for_project(cls, project_path: Path) -> LockFile:
        return cls(lock_path_for(project_path))

    def read(self) -> dict[str, LockEntry]:
        if self._entries is None:
            self._entries, self._cut = read_lock_file(self.path)
        return dict(self._entries)

    def _write(self, entries: dict[str, LockEntry], cut: dict[str, Any] | None) -> None:
        write_lock(self.path, entries, cut)
        self._entries, self._cut = entries, cut

    def record(self, shot_id: str, entry: LockEntry) -> None:
        """Merge one shot's entry; entries of other shots are kept. Writes only on change.

        A new clip does not change what the last final cut was made with: when ``entry`` carries
        no cut settings, the recorded ones are kept (the next stitch records the new ones).
        """
        entries = self.read()
        old = entries.get(shot_id)
        if entry.cut is None and old is not None and old.cut is not None:
            entry = replace(entry, cut=old.cut)
        if old == entry and self.path.exists():
            return
        entries[shot_id] = entry
        self._write(entries, self._cut)

    def record_cut(self, shots: Mapping[str, dict[str, Any]], cut: dict[str, Any]) -> None:
        """After a final cut: each shot's cut settings and the project's (order, output, audio).

        Shots without an entry (never rendered into this lock) are left out. Writes only on change.
        """
        entries = self.read()
        if not entries:
            return
        changed = {sid: replace(e, cut=shots[sid]) for sid, e in entries.items() if sid in shots}
        merged = {**entries, **changed}
        if merged == entries and self._cut == cut and self.path.exists():
            return
        self._write(merged, cut)

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Drop the entries of shots not in ``keep`` (after a full render); return their ids."""
        entries = self.read()
        wanted = set(keep)
        gone = sorted(sid for sid in entries if sid not in wanted)
        if gone:
            self._write({sid: e for sid, e in entries.items() if sid in wanted}, self._cut)
        return gone
