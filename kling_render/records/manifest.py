"""The stitch manifest: what the final cut was made from, so an unchanged cut is not made again.

One JSON file per project file, next to its state (:func:`manifest_path`)::

    {"version": 1,
     "inputs": {"kling_render", "stitch_format", "ffmpeg": {"version", "identity"}, "provider",
                "output": {"path", "width", "height", "fps", "fit"},
                "audio": null | {"music", "music_sha256", "music_volume", "duck", "normalize"},
                "clips": [{"id", "sha256", "trim": {"start", "end"},
                           "transition": {"type", "duration"}}, ...]},
     "cut": {"sha256", "size", "frames", "fps", "duration", "stream_copy"},
     "stitched_at": "..."}

A stitch is skipped when the inputs are equal and the file at the output path still has the
recorded sha256 (:func:`check`). That is also why the cut may be written without an fsync: a
cut damaged by a crash no longer matches its digest, so the next stitch or render makes it again.

The manifest is written (atomically, fsynced) only after the cut has been renamed into place, so
a crash in between leaves an old manifest whose inputs or digest do not match: never a skip of
a cut that is not there. Everything here is pure except :func:`read`, :func:`write` and
:func:`check` (which hashes the cut).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kling_render.fsutil import atomic_write_json, sha256_file

if TYPE_CHECKING:
    from kling_render.project.project import Project, Shot

__all__ = [
    "MANIFEST_VERSION",
    "ClipInput",
    "CutRecord",
    "Freshness",
    "Manifest",
    "check",
    "clip_doc",
    "compare",
    "manifest_path",
    "read",
    "write",
]

MANIFEST_VERSION = 1
MANIFEST_NAME = "stitch.json"
STITCH_FORMAT = 2


def manifest_path(state_dir: Path) -> Path:
    """The manifest inside a project's state directory (``state.state_dir_for``)."""
    return state_dir / MANIFEST_NAME


@dataclass(frozen=True)
class ClipInput:
    """One shot as it enters the cut: its clip (by digest) and its cut settings."""

    shot_id: str
    sha256: str
    trim_start: float = 0.0
    trim_end: float | None = None
    transition: str = "cut"
    transition_duration: float = 0.0


def clip_doc(clip: ClipInput) -> dict[str, Any]:
    return {
        "id": clip.shot_id,
        "sha256": clip.sha256,
        **cut_settings(clip.trim_start, clip.trim_end, clip.transition, clip.transition_duration),
    }


def cut_settings(start: float, end: float | None, transition: str, duration: float) -> dict[str, Any]:
    """A shot's cut settings as recorded (in the manifest and in the lock file)."""
    return {"trim": {"start": start, "end": end}, "transition": {"type": transition, "duration": duration}}


def shot_cut_settings(shot: Shot) -> dict[str, Any]:
    settings = cut_settings(shot.trim.start, shot.trim.end, shot.transition.type, shot.transition.duration)
    if shot.takes > 1:  # which take is cut: changing it re-stitches (and pays nothing)
        settings["pick"] = shot.picked_take
    return settings


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def output_settings(project: Project) -> dict[str, Any]:
    """The project's ``output`` as recorded: its path relative to the project, size, fps, fit."""
    out = project.output
    return {
        "path": _relative(out.path, project.root),
        "width": out.width,
        "height": out.height,
        "fps": out.fps,
        "fit": out.fit,
    }


def audio_settings(project: Project) -> dict[str, Any] | None:
    """The project's ``audio`` as recorded, the music by its digest too (reads the music file)."""
    a = project.audio
    if a is None:
        return None
    music = None
    digest = None
    if a.music is not None:
        music = _relative(a.music, project.root)
        try:
            digest = sha256_file(a.music)
        except OSError:
            digest = None  # gone since validation: the stitch reports it
    return {
        "music": music,
        "music_sha256": digest,
        "music_volume": a.music_volume,
        "duck": a.duck,
        "normalize": a.normalize,
    }


@dataclass(frozen=True)
class CutRecord:
    """The cut a stitch wrote: its digest and its real length."""

    sha256: str
    size: int
    frames: int
    fps: int
    duration: float
    stream_copy: bool

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["duration"] = round(self.duration, 6)
        return doc

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CutRecord:
        return cls(
            sha256=str(raw["sha256"]),
            size=int(raw["size"]),
            frames=int(raw["frames"]),
            fps=int(raw["fps"]),
            duration=float(raw["duration"]),
            stream_copy=bool(raw["stream_copy"]),
        )


@dataclass(frozen=True)
class Manifest:
    inputs: dict[str, Any]
    cut: CutRecord
    stitched_at: str = ""


@dataclass(frozen=True)
class Freshness:
    """Whether the cut on disk is the one the current inputs make, and if not, why."""

    up_to_date: bool
    reasons: list[str] = field(default_factory=list)
    manifest: Manifest | None = None


MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def read(path: Path) -> Manifest | None:
    """The manifest at ``path``; None when there is none or it cannot be read: anything but the exact
    shape :func:`write` gives (a hand edit with a wrong type, a huge number, deep nesting, another
    version) means "no stitch recorded", so the cut is simply made again."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            return None
        doc = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or set(doc) != {"version", "inputs", "cut", "stitched_at"}:
        return None
    if not _is_int(doc["version"]) or doc["version"] != MANIFEST_VERSION or not isinstance(doc["stitched_at"], str):
        return None
    if not _valid_inputs(doc["inputs"]) or not _valid_cut(doc["cut"]):
        return None
    return Manifest(doc["inputs"], CutRecord.from_json(doc["cut"]), doc["stitched_at"])


_LIMIT = 2**53  # integers beyond what a double holds exactly are not ours


def _is_int(value: object, low: int = -_LIMIT, high: int = _LIMIT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_num(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value) and abs(value) < _LIMIT)


def _is_str(value: object, limit: int = 4096) -> bool:
    return isinstance(value, str) and len(value) <= limit


def _shape(value: object, keys: dict[str, Callable[[object], bool]]) -> bool:
    """``value`` is a dict with exactly ``keys``, each value passing its check."""
    return isinstance(value, dict) and set(value) == set(keys) and all(check(value[k]) for k, check in keys.items())


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _valid_clip(value: object) -> bool:
    return _shape(value, {
        "id": _is_str,
        "sha256": _is_str,
        "trim": lambda t: _shape(t, {"start": _is_num, "end": _optional(_is_num)}),
        "transition": lambda t: _shape(t, {"type": _is_str, "duration": _is_num}),
    })  # fmt: skip


def _valid_inputs(value: object) -> bool:
    return _shape(value, {
        "kling_render": _is_str,
        "stitch_format": _is_int,
        "ffmpeg": lambda f: _shape(f, {"version": _is_str, "identity": _is_str}),
        "provider": _is_str,
        "output": lambda o: _shape(o, {"path": _is_str, "width": _is_int, "height": _is_int, "fps": _is_int,
                                       "fit": _is_str}),
        "audio": _optional(lambda a: _shape(a, {"music": _optional(_is_str), "music_sha256": _optional(_is_str),
                                                "music_volume": _is_num, "duck": _is_bool, "normalize": _is_bool})),
        "clips": lambda c: isinstance(c, list) and len(c) <= 100_000 and all(_valid_clip(x) for x in c),
    })  # fmt: skip


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _valid_cut(value: object) -> bool:
    return _shape(value, {
        "sha256": lambda v: _is_str(v, 64),
        "size": lambda v: _is_int(v, 0),
        "frames": lambda v: _is_int(v, 0),
        "fps": lambda v: _is_int(v, 1, 100_000),
        "duration": lambda v: _is_num(v) and isinstance(v, int | float) and v >= 0,
        "stream_copy": _is_bool,
    })  # fmt: skip


def write(path: Path, inputs: Mapping[str, Any], cut: CutRecord, stitched_at: str) -> None:
    atomic_write_json(
        path,
        {"version": MANIFEST_VERSION, "inputs": dict(inputs), "cut": cut.to_json(), "stitched_at": stitched_at},
    )


def _shots(clips: object) -> dict[str, Mapping[str, Any]]:
    if not isinstance(clips, list):
        return {}
    return {str(c.get("id")): c for c in clips if isinstance(c, Mapping)}


def compare(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why the cut recorded with ``recorded`` inputs is not the cut of ``current`` ones (empty: same)."""
    reasons: list[str] = []
    if recorded.get("provider") != current.get("provider"):
        reasons.append(f"it was made from {recorded.get('provider')} clips, not {current.get('provider')}")
    old, new = _shots(recorded.get("clips")), _shots(current.get("clips"))
    added = [sid for sid in new if sid not in old]
    removed = [sid for sid in old if sid not in new]
    if added:
        reasons.append("shot(s) added: " + ", ".join(added))
    if removed:
        reasons.append("shot(s) removed: " + ", ".join(removed))
    common_old = [sid for sid in old if sid in new]
    common_new = [sid for sid in new if sid in old]
    if common_old != common_new:
        reasons.append("shots reordered")
    for what in ("sha256", "trim", "transition"):
        differ = [sid for sid in common_new if old[sid].get(what) != new[sid].get(what)]
        if differ:
            label = "clip" if what == "sha256" else what
            reasons.append(f"{label} changed: " + ", ".join(differ))
    for what in ("output", "audio"):
        if recorded.get(what) != current.get(what):
            reasons.append(f"{what} settings changed")
    old_ff, new_ff = recorded.get("ffmpeg") or {}, current.get("ffmpeg") or {}
    if old_ff.get("identity") != new_ff.get("identity"):
        reasons.append(f"ffmpeg changed ({old_ff.get('version')} -> {new_ff.get('version')})")
    if recorded.get("kling_render") != current.get("kling_render"):
        reasons.append(f"kling-render changed ({recorded.get('kling_render')} -> {current.get('kling_render')})")
    known = {"provider", "clips", "output", "audio", "ffmpeg", "kling_render"}
    if not reasons and any(recorded.get(k) != current.get(k) for k in set(recorded) | set(current) - known):
        reasons.append("stitch settings changed")
    return reasons


def check(path: Path, inputs: Mapping[str, Any], cut_path: Path, *, hash_cut: bool = True) -> Freshness:
    """Is the file at ``cut_path`` the cut that ``inputs`` make? Reads the whole cut to hash it
    (unless ``hash_cut`` is False, for callers that only want the input differences)."""
    manifest = read(path)
    if manifest is None:
        return Freshness(False, ["no stitch recorded"], None)
    reasons = compare(manifest.inputs, inputs)
    try:
        size = cut_path.stat().st_size
    except OSError:
        return Freshness(False, [*reasons, "the cut file is missing"], manifest)
    if size != manifest.cut.size:
        return Freshness(False, [*reasons, "the cut file changed since it was stitched"], manifest)
    if reasons or not hash_cut:
        return Freshness(not reasons, reasons, manifest)
    try:
        digest = sha256_file(cut_path)
    except OSError as exc:
        return Freshness(False, [f"the cut file cannot be read ({exc.strerror or exc})"], manifest)
    if digest != manifest.cut.sha256:
        return Freshness(False, ["the cut file changed since it was stitched"], manifest)
    return Freshness(True, [], manifest)


def inputs_doc(
    *,
    clips: Sequence[ClipInput],
    output: Mapping[str, Any],
    audio: Mapping[str, Any] | None,
    provider: str,
    ffmpeg_version: str,
    ffmpeg_identity: str,
    version: str,
) -> dict[str, Any]:
    """The ``inputs`` part of a manifest (pure): everything that decides the cut's bytes."""
    return {
        "kling_render": version,
        # How the cut is made (2: video segments joined by stream copy, audio mixed once); a cut
        # recorded by another way of making it is made again.
        "stitch_format": STITCH_FORMAT,
        "ffmpeg": {"version": ffmpeg_version, "identity": ffmpeg_identity},
        "provider": provider,
        "output": dict(output),
        "audio": dict(audio) if audio is not None else None,
        "clips": [clip_doc(c) for c in clips],
    }
