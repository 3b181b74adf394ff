"""Helpers for the remote's tests: opening a remote from the environment with a fast retry policy."""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from kling_render.errors import RemoteTransientError
from kling_render.retry import RetryPolicy
from kling_render.store.remote.claims import Owner
from kling_render.store.remote.connect import Remote, open_remote, resolve_remote_url

T = TypeVar("T")


async def _no_sleep(_: float) -> None:
    return None


def fast_policy(attempts: int = 4) -> RetryPolicy:
    """The remote's retry policy without the waiting (tests count attempts, not seconds)."""
    return RetryPolicy(
        attempts=attempts, base_delay=0.0, max_delay=0.0, retry_on=(RemoteTransientError,), sleep=_no_sleep
    )


def open_env_remote(run_id: str = "test-run", *, attempts: int = 4) -> Remote:
    """The remote named by the environment (KLING_RENDER_REMOTE + AWS variables), as a run opens it."""
    url = resolve_remote_url(None)
    assert url is not None, "KLING_RENDER_REMOTE is not set"
    return open_remote(url, owner=Owner.here(run_id), policy=fast_policy(attempts))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@functools.cache
def _tiny_clip() -> bytes:
    """One real, tiny MP4 per test session (pulls check a clip's structure)."""
    from mediagen import make_clip

    return make_clip(Path(tempfile.mkdtemp(prefix="kling-remote-kit-")) / "tiny.mp4", width=64, height=36).read_bytes()


def clip_file(path: Path, size: int, seed: int = 0) -> Path:
    """A stand-in clip: a real tiny MP4 padded with a ``free`` box to exactly ``size`` bytes that
    differ per ``seed`` (a pull checks the structure; nothing decodes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clip = _tiny_clip()
    pad = size - len(clip)
    if pad < 8:
        raise ValueError(f"a stand-in clip needs at least {len(clip) + 8} bytes")
    pattern = bytes((i * 131 + seed * 17 + 7) % 251 for i in range(4093)) + seed.to_bytes(4, "big")
    with path.open("wb") as fh:
        fh.write(clip)
        fh.write(pad.to_bytes(4, "big") + b"free")
        written = 8
        while written < pad:
            chunk = pattern[: min(len(pattern), pad - written)]
            fh.write(chunk)
            written += len(chunk)
    return path
