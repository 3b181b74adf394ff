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
import os
from collections.abc import Mapping, Sequence
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


def read(path: Path) -> Manifest | None:
    """The manifest at ``path``; None when there is none or it cannot be read (then nothing is skipped)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != MANIFEST_VERSION or not isinstance(doc.get("inputs"), dict):
            return None
        return Manifest(doc["inputs"], CutRecord.from_json(doc["cut"]), str(doc.get("stitched_at", "")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


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
