"""The project's lock file (beside it, meant for git): what each shot rendered.

Named ``<stem>.lock`` for a ``.yaml`` project file (SPEC §6: ``project.yaml`` -> ``project.lock``)
and ``<file name>.lock`` for any other (``p.yml`` -> ``p.yml.lock``, ``p.json`` -> ``p.json.lock``),
so ``p.yaml`` and ``p.yml`` in one folder never share a lock file.

One entry per shot, and whose it is follows one rule: a render records a shot when the lock has
no entry for it, when the entry is of the same provider, or when the rendering provider charges
(a paid render replaces a free preview). A free provider (``--provider local``) never replaces a
paid provider's entry: the lock keeps describing the clip that was paid for (its task id, output
digest and cost), which is what a reviewer of a pull request needs, and what ``plan`` diffs
against (a local preview of a wavespeed project shows its shots as changed by ``provider``).

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
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kling_render.errors import StateError
from kling_render.fsutil import atomic_write_json
from kling_render.jobs import Job

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

    @classmethod
    def of(cls, job: Job, provider: str, task_id: str | None, sha256: str, duration: float) -> LockEntry:
        """The entry of the clip (or still) ``job`` made: its key, model, the field digests and the
        prompt the plan gave it. ``cost_usd`` is the step's price, not a run's spend (retries live
        in the state file), so re-rendering the same clip gives the same lock file."""
        fields = job.extra.get("fields")
        return cls(
            job.key, job.model, provider, task_id, sha256, duration, job.cost_usd,
            fields=dict(fields) if isinstance(fields, dict) else None, prompt=job.prompt or None,
        )  # fmt: skip

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


def project_label(project_path: Path) -> str:
    """What names the files made for a project file: the stem of a ``.yaml`` file, else the full name."""
    return project_path.stem if project_path.suffix == ".yaml" else project_path.name


def lock_path_for(project_path: Path) -> Path:
    return project_path.parent / f"{project_label(project_path)}.lock"


def _amount(entry: Mapping[str, Any], name: str, default: float | None = None) -> float:
    """A finite, non-negative number from a lock entry (NaN or inf would poison every total)."""
    raw = entry.get(name, default) if default is not None else entry[name]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{name} is {_show(raw)}, not a number")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} is {_show(raw)}, not a finite amount of at least 0")
    return value


def _show(raw: object) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) > 10**30:
        return "a huge number"
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(entry: Mapping[str, Any], name: str, *, optional: bool = False) -> str | None:
    raw = entry.get(name) if optional else entry[name]
    if raw is None and optional:
        return None
    if not isinstance(raw, str):
        raise ValueError(f"{name} is {_show(raw)}, not a string")
    return raw


def _entry(sid: object, raw: object) -> LockEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"shot {sid!r}: not an object")
    try:
        return LockEntry(
            key=str(_text(raw, "key")),
            model=str(_text(raw, "model")),
            provider=str(_text(raw, "provider")),
            task_id=_text(raw, "task_id", optional=True),
            output_sha256=str(_text(raw, "output_sha256")),
            duration=_amount(raw, "duration"),
            cost_usd=_amount(raw, "cost_usd", 0.0),
            fields=_fields(raw.get("fields")),
            prompt=raw["prompt"] if isinstance(raw.get("prompt"), str) else None,
            cut=_cut(raw),
        )
    except KeyError as exc:
        raise ValueError(f"shot {sid!r}: no {exc.args[0]}") from None
    except ValueError as exc:
        raise ValueError(f"shot {sid!r}: {exc}") from None


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
        why = exc.strerror or exc
        raise StateError(f"lock file {path} cannot be read ({why}); fix it or restore it from git") from None
    except UnicodeDecodeError as exc:
        why = f"not UTF-8: {exc.reason}"
        raise StateError(f"lock file {path} is not valid ({why}); fix it or restore it from git") from None
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or type(doc.get("version")) is not int:
            raise ValueError("not an object with a version")
        if doc["version"] > LOCK_VERSION:
            raise ValueError(f"version {doc['version']} is newer than this kling-render understands")
        shots = doc.get("shots", {})
        if not isinstance(shots, dict):
            raise ValueError("'shots' is not an object")
        cut = doc.get("cut")
        entries = {sid: _entry(sid, e) for sid, e in shots.items()}
        return entries, cut if isinstance(cut, dict) else None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        # One line, whatever the damage (a merge conflict, NaN, a hand edit): never a traceback, and
        # never a number that switches a total off.
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise StateError(f"lock file {path} is not valid ({reason}); fix it or restore it from git") from None


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

    def __init__(self, path: Path, *, paid: bool = True) -> None:
        self.path = path
        self.paid = paid  # whether the renders recorded here were paid for (see the module's rule)
        self._entries: dict[str, LockEntry] | None = None  # read once: the run lock keeps others out
        self._cut: dict[str, Any] | None = None

    @classmethod
    def for_project(cls, project_path: Path, *, paid: bool = True) -> LockFile:
        return cls(lock_path_for(project_path), paid=paid)

    def prepare(self) -> None:
        """Make sure the lock file can be written, before a run pays for anything (a read-only
        project folder would otherwise surface only after the first paid clip)."""
        probe = self.path.parent / f".{self.path.name}.{os.getpid()}.probe.tmp"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StateError(
                f"cannot write the lock file {self.path} ({exc.strerror or exc}); "
                "the project's folder must be writable"
            ) from None

    def read(self) -> dict[str, LockEntry]:
        if self._entries is None:
            self._entries, self._cut = read_lock_file(self.path)
        return dict(self._entries)

    def _write(self, entries: dict[str, LockEntry], cut: dict[str, Any] | None) -> None:
        try:
            write_lock(self.path, entries, cut)
        except OSError as exc:
            raise StateError(f"cannot write the lock file {self.path}: {exc.strerror or exc}") from None
        self._entries, self._cut = entries, cut

    def holds(self, shot_id: str, key: str, sha256: str, prompt: str | None) -> bool:
        """Whether the shot's entry already records this clip (same key, bytes and prompt)."""
        current = self.read().get(shot_id)
        return (
            current is not None
            and current.key == key
            and current.output_sha256 == sha256
            and current.prompt == prompt  # a lock from before prompts were kept is rewritten
        )

    def record(self, shot_id: str, entry: LockEntry) -> bool:
        """Merge one shot's entry; entries of other shots are kept. Writes only on change.

        False (nothing written) when the shot's entry is another provider's and this render is
        free: a local preview never replaces what a paid render recorded. A new clip does not
        change what the last final cut was made with: when ``entry`` carries no cut settings,
        the recorded ones are kept (the next stitch records the new ones).
        """
        entries = self.read()
        old = entries.get(shot_id)
        if old is not None and old.provider != entry.provider and not self.paid:
            return False
        if entry.cut is None and old is not None and old.cut is not None:
            entry = replace(entry, cut=old.cut)
        if old == entry and self.path.exists():
            return True
        entries[shot_id] = entry
        self._write(entries, self._cut)
        return True

    def record_cut(self, shots: Mapping[str, dict[str, Any]], cut: dict[str, Any], *, row: str | None = None) -> None:
        """After a final cut: each shot's cut settings and the project's (order, output, audio).

        In a rows: project each row's cut is recorded under its key (``cut.rows.<key>``), beside
        the other rows'. Shots without an entry (never rendered into this lock) are left out.
        Writes only on change.
        """
        entries = self.read()
        if not entries:
            return
        changed = {sid: replace(e, cut=shots[sid]) for sid, e in entries.items() if sid in shots}
        merged = {**entries, **changed}
        if row is not None:
            rows = self._cut.get("rows") if self._cut is not None else None
            cut = {"rows": {**(rows if isinstance(rows, dict) else {}), row: cut}}
        if merged == entries and self._cut == cut and self.path.exists():
            return
        self._write(merged, cut)

    def prune(self, keep: Iterable[str], *, rows: Iterable[str] | None = None) -> list[str]:
        """Drop the entries of shots not in ``keep`` (after a full render), and with ``rows`` the
        recorded cuts of rows no longer in the table; return the shot ids dropped."""
        entries = self.read()
        wanted = set(keep)
        gone = sorted(sid for sid in entries if sid not in wanted)
        cut = self._cut
        recorded = cut.get("rows") if cut is not None else None
        if rows is not None and isinstance(recorded, dict):
            kept = set(rows)
            cut = {**cut, "rows": {k: v for k, v in recorded.items() if k in kept}} if cut is not None else None
        if gone or cut != self._cut:
            self._write({sid: e for sid, e in entries.items() if sid in wanted}, cut)
        return gone
