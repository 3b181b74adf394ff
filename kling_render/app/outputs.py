"""Where kling-render may write a file it makes (final cut, report, saved plan): never over what it
reads or keeps (SPEC §8).

A target is refused when it is, or lies inside, something protected: the project file, its lock
file, any input the project reads (images, video, music), the state directory ``.kling-render/``
and the clip cache (wherever ``KLING_RENDER_CACHE`` points). Also when it names a directory
(trailing slash, or an existing directory) or sits under a regular file.

One file has many names, so names are not compared as typed: each side is resolved
(``os.path.realpath``: symlinks and ``..``), and existing files are compared by device and inode
(hard links, and case on case-insensitive filesystems). Paths that do not exist yet (a lock file
before the first render) are compared by their resolved, case-folded text, so ``PROJECT.LOCK``
is refused beside ``project.lock`` even where the filesystem would keep them apart: a false
refusal costs a rename, a false acceptance costs the project.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Protected:
    """A path no output may be or lie inside; ``what`` names it in messages."""

    path: Path
    what: str
    tree: bool = False  # a directory whose whole content is protected


def protected_for(
    project_path: Path,
    lock_path: Path,
    inputs: Iterable[tuple[Path, str]],
    *,
    extra: Iterable[Protected] = (),
) -> list[Protected]:
    """Everything a project reads or keeps: its file, lock, inputs, state directory and clip cache."""
    from kling_render.records.state import work_dir_for
    from kling_render.store.cache import cache_root_for

    found = [
        Protected(project_path, "the project file"),
        Protected(lock_path, "the project's lock file"),
        Protected(work_dir_for(project_path), "kling-render's state directory", tree=True),
        Protected(cache_root_for(project_path), "the clip cache", tree=True),
    ]
    found += [Protected(path, what) for path, what in inputs]
    found += list(extra)
    return found


def _real(path: Path | str) -> str:
    return os.path.realpath(path)


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _folded(path: str) -> str:
    return os.path.normcase(path).casefold()


def _inside(child: str, parent: str) -> bool:
    a, b = _folded(child), _folded(parent)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _ancestors(path: str) -> list[str]:
    """``path`` and each directory above it, nearest first."""
    out = [path]
    while True:
        parent = os.path.dirname(out[-1])
        if parent == out[-1]:
            return out
        out.append(parent)


def output_problem(raw: str | Path, protected: Iterable[Protected]) -> str | None:
    """Why writing a file at ``raw`` (as given) is refused, or None when it is safe."""
    return Guard(protected).problem(raw)


class Guard:
    """``protected`` resolved once, to check many targets (a rows: project has a cut per row, and
    each must be checked against every row's inputs): a lookup per target, not a scan."""

    def __init__(self, protected: Iterable[Protected]) -> None:
        self.trees: list[tuple[int, Protected, str, tuple[int, int] | None]] = []
        self.by_text: dict[str, tuple[int, Protected]] = {}
        self.by_ident: dict[tuple[int, int], tuple[int, Protected]] = {}
        for n, guard in enumerate(protected):
            real = _real(guard.path)
            ident = _ident(real)
            if guard.tree:
                self.trees.append((n, guard, real, ident))
                continue
            self.by_text.setdefault(_folded(real), (n, guard))
            if ident is not None:
                self.by_ident.setdefault(ident, (n, guard))

    def problem(self, raw: str | Path) -> str | None:
        """Why writing a file at ``raw`` (as given) is refused, or None when it is safe."""
        text = os.fspath(raw)
        if not text or text.endswith(("/", os.sep)) or os.path.basename(text) in ("", ".", ".."):
            return "names a directory, not a file"
        real = _real(text)
        chain = _ancestors(real)
        idents = {p: _ident(p) for p in chain}
        if os.path.isdir(real):
            return "is an existing directory, not a file"
        for above in chain[1:]:
            if idents[above] is not None and not os.path.isdir(above):
                return f"lies under {above}, which is a file, not a directory"
        hits: list[tuple[int, Protected]] = []
        for n, guard, guard_real, guard_id in self.trees:
            if _inside(real, guard_real) or (guard_id is not None and any(idents[p] == guard_id for p in chain)):
                hits.append((n, guard))
        same = self.by_text.get(_folded(real))
        if same is not None:
            hits.append(same)
        ident = idents[real]
        if ident is not None and ident in self.by_ident:
            hits.append(self.by_ident[ident])
        if not hits:
            return None
        _, guard = min(hits, key=lambda hit: hit[0])  # the first protected path that matches, as listed
        where = "inside " if guard.tree else ""
        return f"is {where}{guard.what} ({guard.path}); choose another path"
