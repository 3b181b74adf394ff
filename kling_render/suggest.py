""""Did you mean": the one way a message suggests the name the user probably meant.

difflib's ratio at 0.6 (its default), and at most a fifth of the characters changed, catch a
dropped, doubled or swapped letter in ids and paths (``mugg.png`` for ``mug.png``,
``image-to-vidoe``) without offering unrelated names; only the best match is offered, on the
message's own line.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

CUTOFF = 0.6
MAX_FILES = 5_000  # files looked at for a missing path: a suggestion is not worth a long walk


def close_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name`` (not ``name`` itself), or None when none is close: similar
    overall (difflib's ratio) and few characters apart, so a long shared tail such as
    ``/image-to-video`` does not make ``kling-v9-ultra`` look like a typo of ``kling-v3.0-std``."""
    options = [c for c in dict.fromkeys(candidates) if c != name]
    for near in difflib.get_close_matches(name, options, n=5, cutoff=CUTOFF):
        if _edits(name, near) <= max(2, len(name) // 5):
            return near
    return None


def _edits(a: str, b: str) -> int:
    """Characters changed, inserted or deleted between ``a`` and ``b`` (from difflib's opcodes)."""
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


def did_you_mean(name: str, candidates: Iterable[str], *, prefix: str = "") -> str:
    """``did you mean 'x'?`` (with ``prefix`` before the name, as in ``prompts.``), or ""."""
    near = close_match(name, candidates)
    return f"did you mean '{prefix}{near}'?" if near is not None else ""


def with_hint(message: str, hint: str) -> str:
    """``message (hint)``, or ``message`` alone when there is no hint."""
    return f"{message} ({hint})" if hint else message


def nearby_file(root: Path, value: str) -> str | None:
    """For a missing file ``value`` (relative to ``root``), the existing file it most likely means,
    spelled the same way (relative, forward slashes): looked for under the nearest existing
    directory of ``value`` inside ``root``, a few levels deep."""
    try:
        base = Path(os.path.realpath(root))
        wanted = Path(value)
        if wanted.is_absolute() or ".." in wanted.parts:
            return None
        start = (base / wanted).parent
        while start != base and not start.is_dir():
            start = start.parent
        if base != start and base not in start.parents:
            return None
        found: list[str] = []
        for directory, dirs, files in os.walk(start):
            depth = len(Path(directory).relative_to(start).parts)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < 3 else []
            found += [(Path(directory) / f).relative_to(base).as_posix() for f in sorted(files)]
            if len(found) >= MAX_FILES:
                break
    except (OSError, ValueError):
        return None
    return close_match(wanted.as_posix(), found)


__all__ = ["CUTOFF", "close_match", "did_you_mean", "nearby_file", "with_hint"]
