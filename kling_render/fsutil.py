"""The one atomic-write helper and the one file hasher."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from kling_render.masking import mask_bytes, mask_json

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (memory stays flat for large clips)."""
    with path.open("rb") as fh:
        return sha256_fileobj(fh)


def sha256_fileobj(fh: BinaryIO) -> str:
    """Hex sha256 of an open binary file from its current position, read in chunks."""
    digest = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temps(dest: Path, *, stale_after: float | None = None) -> None:
    """Remove ``dest``'s temp files (:func:`atomic_path` names them ``.<name>.<pid>.<random><suffix>.tmp``)
    left by processes that died (kill -9) before renaming them; with ``stale_after``, also those
    older than that many seconds (their pid may have been reused by another process)."""
    prefix = f".{dest.name}."
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(dest.parent) as entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            pid = entry.name[len(prefix) :].split(".", 1)[0]
            if not pid.isdigit() or not entry.is_file(follow_symlinks=False):
                continue
            try:
                old = stale_after is not None and now - entry.stat(follow_symlinks=False).st_mtime > stale_after
                dead = not pid_alive(int(pid))
            except (OSError, OverflowError):
                continue
            if dead or old:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str = "", *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success fsync it and rename it over ``dest``.

    On any exception the temp file is removed and ``dest`` is untouched. The temp file's name
    carries this pid, so a later write removes the ones of dead processes.

    ``durable=False`` skips the fsyncs, for files that are rebuilt for free from durable ones
    (the final cut, from the clip cache): the rename alone already means a crash or an
    interrupt never leaves a half-written ``dest``; the fsync only adds survival of a power
    loss, at a cost that grows with the file (18 ms for a 63 MB cut here).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result is an ordinary file (lock goes to git)
    try:
        yield tmp
        if durable:
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
        if durable:
            fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically, every known secret masked (masking.py: the door of
    every record kling-render keeps on disk)."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(mask_bytes(data))


def atomic_write_text(dest: Path, text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: Path, value: Any) -> None:
    """``value`` as JSON, its strings masked one by one first (so the file stays valid JSON)."""
    atomic_write_text(dest, json.dumps(mask_json(value), indent=2, sort_keys=True) + "\n")
