"""The one ffmpeg runner: finds the binary and runs it without a shell.

The binary is the one shipped inside the ``imageio-ffmpeg`` wheel (its version is pinned in
``pyproject.toml``, so one kling-render version means one ffmpeg build and the same cut bytes on
every machine), unless ``KLING_RENDER_FFMPEG`` names another. PATH is never searched: whatever
``ffmpeg`` a machine happens to have must not change the cut. What a chosen binary can do is
checked by :mod:`kling_render.media.caps`.

``run`` takes an optional progress callback: ffmpeg then reports ``-progress`` blocks on stdout,
each handed over as a :class:`Progress` while the process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kling_render import env
from kling_render.errors import FFmpegError

BASE_ARGS = ("-hide_banner", "-nostdin", "-loglevel", "error")


@dataclass(frozen=True)
class Progress:
    """One ``-progress`` block: how far the output has got."""

    out_seconds: float  # output timestamp reached (``out_time_us``)
    frame: int | None  # video frames written so far (None for audio-only outputs)
    speed: float | None  # multiple of real time, when ffmpeg knows it
    done: bool  # ``progress=end``: the last block


ProgressFn = Callable[[Progress], None]


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to use: ``KLING_RENDER_FFMPEG``, else the bundled one.

    A bare name in ``KLING_RENDER_FFMPEG`` (``ffmpeg``) is looked up on PATH, as the user asked;
    nothing else ever is."""
    override = env.ffmpeg_override()
    if override:
        override = os.path.expanduser(override)
        if os.sep not in override:
            return shutil.which(override) or override
        return override
    return bundled_exe()


def bundled_exe() -> str:
    """The ffmpeg shipped inside the imageio-ffmpeg wheel."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise FFmpegError("looking for ffmpeg", "ffmpeg not found: install imageio-ffmpeg") from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def is_explicit() -> bool:
    """True when the user chose the binary (``KLING_RENDER_FFMPEG``) rather than the bundled one."""
    return env.ffmpeg_override() is not None


def run(
    args: Sequence[str],
    step: str,
    *,
    timeout: float | None = None,
    progress: ProgressFn | None = None,
) -> str:
    """Run ffmpeg with ``args`` (after the base flags); return stderr; raise FFmpegError on failure.

    With ``progress``, ffmpeg writes ``-progress`` blocks to stdout (so ``args`` must not write
    media there) and each block is passed to ``progress`` as it arrives.
    """
    if progress is None:
        cmd = [ffmpeg_exe(), *BASE_ARGS, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FFmpegError(step, str(exc), ran=False) from exc
        if proc.returncode != 0:
            raise FFmpegError(step, proc.stderr)
        return proc.stderr
    return _run_with_progress(args, step, timeout, progress)


def _run_with_progress(args: Sequence[str], step: str, timeout: float | None, progress: ProgressFn) -> str:
    cmd = [ffmpeg_exe(), *BASE_ARGS, "-nostats", "-progress", "pipe:1", *args]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise FFmpegError(step, str(exc), ran=False) from exc
    assert proc.stdout is not None and proc.stderr is not None
    stderr_pipe = proc.stderr
    err_chunks: list[str] = []
    # stderr is drained by a thread, so a chatty ffmpeg never blocks on a full pipe while the
    # progress lines are read here.
    drain = threading.Thread(target=lambda: err_chunks.append(stderr_pipe.read()), daemon=True)
    drain.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        block: dict[str, str] = {}
        for line in proc.stdout:
            key, sep, value = line.strip().partition("=")
            if not sep:
                continue
            block[key] = value
            if key == "progress":
                parsed = parse_progress(block)
                block = {}
                if parsed is not None:
                    progress(parsed)
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        drain.join()
        with contextlib.suppress(OSError):
            proc.stdout.close()
            proc.stderr.close()
    stderr = "".join(err_chunks)
    if proc.returncode != 0:
        if timed_out.is_set():
            raise FFmpegError(step, f"timed out after {timeout:g} s", ran=False)
        raise FFmpegError(step, stderr)
    return stderr


def parse_progress(block: dict[str, str]) -> Progress | None:
    """A :class:`Progress` from one ``-progress`` block's ``key=value`` pairs (None if unreadable)."""
    out_us = block.get("out_time_us") or block.get("out_time_ms")  # both are microseconds
    try:
        seconds = max(0.0, int(out_us) / 1e6) if out_us and out_us.lstrip("-").isdigit() else 0.0
    except ValueError:  # pragma: no cover - isdigit above
        return None
    frame_text = block.get("frame", "")
    frame = int(frame_text) if frame_text.isdigit() else None
    speed_text = block.get("speed", "").rstrip("x").strip()
    try:
        speed = float(speed_text) if speed_text not in ("", "N/A") else None
    except ValueError:
        speed = None
    return Progress(seconds, frame, speed, block.get("progress") == "end")


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
