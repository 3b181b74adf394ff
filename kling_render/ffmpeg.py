"""The one ffmpeg runner: finds the binary and runs it without a shell.

The binary is, in order: ``KLING_RENDER_FFMPEG``, ``ffmpeg`` on PATH, the one shipped
inside the ``imageio-ffmpeg`` wheel (so ``pip install`` alone gives a working ffmpeg).
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from collections.abc import Sequence

from kling_render import env
from kling_render.errors import FFmpegError

BASE_ARGS = ("-hide_banner", "-nostdin", "-loglevel", "error")


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to use."""
    override = env.ffmpeg_override()
    if override:
        return override
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise FFmpegError("looking for ffmpeg", "ffmpeg not found: install imageio-ffmpeg") from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def run(args: Sequence[str], step: str, *, timeout: float | None = None) -> str:
    """Run ffmpeg with ``args`` (after the base flags); return stderr; raise FFmpegError on failure."""
    cmd = [ffmpeg_exe(), *BASE_ARGS, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FFmpegError(step, str(exc)) from exc
    if proc.returncode != 0:
        raise FFmpegError(step, proc.stderr)
    return proc.stderr


async def run_async(args: Sequence[str], step: str) -> str:
    """Like :func:`run` but awaitable; the process is killed if the task is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_exe(),
        *BASE_ARGS,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    stderr = err.decode(errors="replace")
    if proc.returncode != 0:
        raise FFmpegError(step, stderr)
    return stderr
