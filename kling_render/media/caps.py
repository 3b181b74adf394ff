"""What the ffmpeg in use is and what it can do, and whether that is enough for a project.

A build is read once (``-version``, ``-filters``, ``-encoders``, ``-h filter=xfade``: four short
ffmpeg runs) and kept on disk under the user cache dir, keyed by the binary's path, mtime and
size, so later runs read one small JSON file. The bundled binary is described the same way, so
``--version``, the stitch manifest and the report name whichever ffmpeg made a cut.

:func:`project_issues` turns what a project needs (its transitions, music, ducking, loudness
pass, the local provider's animatics) into located validation errors naming the binary and its
version: a transition the binary lacks is an error at that shot's ``transition`` line, before
anything is rendered or paid for, instead of a raw filter error at stitch time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kling_render import env
from kling_render.errors import FFmpegError, Issue
from kling_render.media import ffmpeg

if TYPE_CHECKING:
    from kling_render.project.document import Document

class _Transition(Protocol):
    @property
    def type(self) -> str: ...


class _Shot(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def transition(self) -> _Transition: ...


class _Audio(Protocol):
    @property
    def music(self) -> Any: ...
    @property
    def duck(self) -> bool: ...
    @property
    def normalize(self) -> bool: ...


class CutNeeds(Protocol):
    """What of a project decides the filters its cut needs (a project.Project is one): its shots'
    transitions and its audio settings. A Protocol, so media/ knows nothing of project/."""

    @property
    def shots(self) -> Sequence[_Shot]: ...
    @property
    def audio(self) -> _Audio | None: ...



__all__ = [
    "MIN_VERSION",
    "CutNeeds",
    "FFmpegBuild",
    "current",
    "inspect",
    "needed_filters",
    "needed_transitions",
    "parse_encoders",
    "parse_filters",
    "parse_release",
    "parse_xfade",
    "project_issues",
]

# The oldest release kling-render is tested with: Debian 12's 5.1, the realistic old ffmpeg still
# installed by default. Everything the stitch and the local animatics use (xfade, acrossfade by
# sample count, apad whole_len, tpad, loudnorm's JSON, -progress) is there; the -/filter_complex
# file syntax of 7.0 is used only by builds that have it.
MIN_VERSION = (5, 1)
CAPS_FORMAT = 1  # bump when what is recorded about a build changes

# Filters every stitch uses (scaling, frame-exact trims, padded audio), and the local provider's
# animatics (stills with a push-in, cross-faded, with a tone bed).
STITCH_FILTERS = frozenset(
    {"setpts", "fps", "trim", "tpad", "scale", "pad", "crop", "setsar", "format", "null", "concat", "settb"}
    | {"setparams", "split"}
    | {"anullsrc", "aformat", "atrim", "apad", "aresample", "asetpts"}
)
LOCAL_FILTERS = frozenset({"color", "drawgrid", "zoompan", "xfade", "aevalsrc", "afade"})
TRANSITION_FILTERS = frozenset({"xfade", "acrossfade"})
MUSIC_FILTERS = frozenset({"volume", "afade", "amix"})
DUCK_FILTERS = frozenset({"asplit", "sidechaincompress"})
NORMALIZE_FILTERS = frozenset({"loudnorm"})
ENCODERS = frozenset({"libx264", "aac"})


@dataclass(frozen=True)
class FFmpegBuild:
    """One ffmpeg binary as it describes itself."""

    path: str
    version: str  # as ffmpeg prints it: "5.1.9-0+deb12u1", "n9.0.2-17-g2a571b6068-20260930"
    release: tuple[int, int] | None  # (major, minor); None for a git snapshot ("N-12345-g...")
    identity: str  # sha256 of `ffmpeg -version`: version, compiler, configuration, library versions
    filters: frozenset[str]
    encoders: frozenset[str]
    transitions: frozenset[str]  # the xfade transition names it knows
    explicit: bool = False  # chosen with KLING_RENDER_FFMPEG

    @property
    def label(self) -> str:
        """``ffmpeg 5.1.9-0+deb12u1 (/usr/bin/ffmpeg, from KLING_RENDER_FFMPEG)``."""
        where = f"{self.path}, from KLING_RENDER_FFMPEG" if self.explicit else f"{self.path}, bundled"
        return f"ffmpeg {self.version} ({where})"

    @property
    def too_old(self) -> bool:
        return self.release is not None and self.release < MIN_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "version": self.version,
            "release": list(self.release) if self.release else None,
            "identity": self.identity,
            "filters": sorted(self.filters),
            "encoders": sorted(self.encoders),
            "transitions": sorted(self.transitions),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], *, explicit: bool) -> FFmpegBuild:
        release = doc["release"]
        return cls(
            path=str(doc["path"]),
            version=str(doc["version"]),
            release=(int(release[0]), int(release[1])) if release else None,
            identity=str(doc["identity"]),
            filters=frozenset(map(str, doc["filters"])),
            encoders=frozenset(map(str, doc["encoders"])),
            transitions=frozenset(map(str, doc["transitions"])),
            explicit=explicit,
        )


# -- parsing ffmpeg's own listings (pure) ------------------------------------------------------

_VERSION = re.compile(r"^ffmpeg version (\S+)", re.M)
_RELEASE = re.compile(r"^n?(\d+)\.(\d+)")
_FILTER = re.compile(r"^ [TSC.]{2,3} (\w+)\s+\S*->\S*\s", re.M)
_ENCODER = re.compile(r"^ [VASD][F.][S.][X.][B.][D.] (\w[\w-]*)\s+(?!=)", re.M)


def parse_version(text: str) -> str:
    m = _VERSION.search(text)
    if m is None:
        raise ValueError("no 'ffmpeg version' line")
    return m.group(1)


def parse_release(version: str) -> tuple[int, int] | None:
    """``5.1.9-0+deb12u1`` -> (5, 1); ``n9.0.2-...`` -> (9, 0); a git snapshot -> None."""
    m = _RELEASE.match(version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_filters(text: str) -> frozenset[str]:
    """Filter names from ``ffmpeg -filters``."""
    return frozenset(_FILTER.findall(text))


def parse_encoders(text: str) -> frozenset[str]:
    """Encoder names from ``ffmpeg -encoders``."""
    return frozenset(_ENCODER.findall(text))


def parse_xfade(text: str) -> frozenset[str]:
    """The values of xfade's ``transition`` option from ``ffmpeg -h filter=xfade`` (not "custom")."""
    names: list[str] = []
    indent: int | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if indent is None:
            if stripped.startswith("transition ") and "<" in stripped:
                indent = depth
            continue
        if not stripped or depth <= indent:
            break
        name = stripped.split()[0]
        if name != "custom":
            names.append(name)
    return frozenset(names)


# -- reading a build (cached on disk) -------------------------------------------------------------


def _ask(exe: str, *args: str) -> str:
    """stdout of ``exe args`` (the listings go to stdout); FFmpegError when it cannot run."""
    import subprocess

    try:
        proc = subprocess.run(
            [exe, "-hide_banner", *args], capture_output=True, text=True, errors="replace", timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FFmpegError(f"asking {exe} for {' '.join(args)}", str(exc)) from exc
    if proc.returncode != 0 and not proc.stdout:
        raise FFmpegError(f"asking {exe} for {' '.join(args)}", proc.stderr)
    return proc.stdout


def inspect(exe: str, *, explicit: bool = False) -> FFmpegBuild:
    """Ask the binary at ``exe`` what it is and what it can do (four short runs, no caching)."""
    version_text = _ask(exe, "-version")
    try:
        version = parse_version(version_text)
    except ValueError:
        raise FFmpegError(f"asking {exe} for -version", "it does not answer like ffmpeg") from None
    return FFmpegBuild(
        path=exe,
        version=version,
        release=parse_release(version),
        identity=hashlib.sha256(version_text.encode("utf-8")).hexdigest(),
        filters=parse_filters(_ask(exe, "-filters")),
        encoders=parse_encoders(_ask(exe, "-encoders")),
        transitions=parse_xfade(_ask(exe, "-h", "filter=xfade")),
        explicit=explicit,
    )


def _cache_file(exe: str) -> Path:
    return env.user_cache_dir() / "ffmpeg" / (hashlib.sha256(exe.encode("utf-8")).hexdigest()[:24] + ".json")


def _stamp(exe: str) -> dict[str, Any]:
    st = os.stat(exe)
    return {"format": CAPS_FORMAT, "path": exe, "mtime_ns": st.st_mtime_ns, "size": st.st_size}


def describe(exe: str, *, explicit: bool = False) -> FFmpegBuild:
    """:func:`inspect`, remembered on disk until the binary at ``exe`` changes (path, mtime, size)."""
    from kling_render.fsutil import atomic_write_json

    try:
        stamp = _stamp(exe)
    except OSError as exc:
        raise FFmpegError(f"looking at {exe}", exc.strerror or str(exc)) from None
    cache = _cache_file(exe)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexError):
        doc = json.loads(cache.read_text(encoding="utf-8"))
        if doc.get("stamp") == stamp:
            return FFmpegBuild.from_json(doc["build"], explicit=explicit)
    build = inspect(exe, explicit=explicit)
    # Best effort: a read-only home only means the next run asks ffmpeg again.
    with contextlib.suppress(OSError):
        atomic_write_json(cache, {"stamp": stamp, "build": build.to_json()})
    return build


@functools.cache
def current() -> FFmpegBuild:
    """The ffmpeg in use (see :func:`kling_render.media.ffmpeg.ffmpeg_exe`), read once per process."""
    return describe(ffmpeg.ffmpeg_exe(), explicit=ffmpeg.is_explicit())


def reset() -> None:
    """Forget the binary chosen in this process (tests that change ``KLING_RENDER_FFMPEG``)."""
    ffmpeg.ffmpeg_exe.cache_clear()
    current.cache_clear()


# -- what a project needs ---------------------------------------------------------------------------


def needed_transitions() -> frozenset[str]:
    """Every xfade transition a project may name (the schema's list, without the plain ``cut``)."""
    from kling_render.stitch.graph import TRANSITIONS

    return TRANSITIONS - {"cut"}


def needed_filters(project: CutNeeds) -> frozenset[str]:
    """Every filter a render of ``project`` uses (the local animatics included: any project may be
    rendered with ``--provider local``)."""
    need = set(STITCH_FILTERS | LOCAL_FILTERS)
    if any(s.transition.type != "cut" for s in project.shots[1:]):
        need |= TRANSITION_FILTERS
    audio = project.audio
    if audio is not None and audio.music is not None:
        need |= MUSIC_FILTERS
        if audio.duck:
            need |= DUCK_FILTERS
    if audio is not None and audio.normalize:
        need |= NORMALIZE_FILTERS
    return frozenset(need)


def _unset_hint(build: FFmpegBuild) -> str:
    return "; unset KLING_RENDER_FFMPEG to use the bundled ffmpeg" if build.explicit else ""


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def project_issues(project: CutNeeds, doc: Document) -> list[Issue]:
    """What the ffmpeg in use lacks for ``project``, as validation issues (empty when it has it all)."""
    try:
        build = current()
    except FFmpegError as exc:
        source = "KLING_RENDER_FFMPEG" if ffmpeg.is_explicit() else "the bundled ffmpeg"
        return [Issue(doc.file, 0, "", f"{source} ({ffmpeg.ffmpeg_exe()}) cannot be used: {exc}")]
    issues: list[Issue] = []
    hint = _unset_hint(build)
    if build.too_old:
        oldest = ".".join(map(str, MIN_VERSION))
        issues.append(
            Issue(doc.file, 0, "", f"{build.label} is older than {oldest}, the oldest kling-render supports{hint}")
        )
    missing = needed_filters(project) - build.filters
    if missing:
        issues.append(Issue(doc.file, 0, "", f"{build.label} lacks the filter(s) {_listed(missing)}{hint}"))
    missing = ENCODERS - build.encoders
    if missing:
        issues.append(Issue(doc.file, 0, "", f"{build.label} lacks the encoder(s) {_listed(missing)}{hint}"))
    if "xfade" not in build.filters:
        return issues  # reported above when a transition needs it
    shots_raw = doc.data.get("shots") if isinstance(doc.data, dict) else None
    for position, shot in enumerate(project.shots):
        kind = shot.transition.type
        if position == 0 or kind == "cut" or kind in build.transitions:
            continue
        raw = shots_raw[shot.index] if isinstance(shots_raw, list) and shot.index < len(shots_raw) else {}
        own = isinstance(raw, dict) and "transition" in raw
        issues.append(
            doc.issue(
                ("shots", shot.index, "transition", "type"),
                f"{build.label} has no xfade transition '{kind}' (it has {len(build.transitions)}; "
                f"`ffmpeg -h filter=xfade` lists them){hint}",
                line_path=None if own else ("defaults", "transition", "type"),
            )
        )
    return issues
