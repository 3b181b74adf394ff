"""``kling-render`` as a real process started without a new interpreter.

Each pytest worker forks, once, before its first test, a *zygote*: a copy of itself that has
kling_render imported and nothing else started (no remote client, no event loop, no server). A
command is a fork of the zygote that runs the CLI's ``main`` with the given arguments, environment,
working directory and standard streams, then exits with its code. To the test it is a process like
any other: its own pid (kill -9, SIGINT and SIGTERM reach it), its own file descriptors, an exit
code, stdout and stderr through pipes or files (``Forked`` answers as a subprocess.Popen does).
What it skips is the interpreter's start and the imports: ~0.45 CPU-s a command, and the suite
runs hundreds on two cores. The stand-ins' servers (tests/stand_in_http.py) start the same way,
``popen(..., script=...)`` running their script as ``python SCRIPT ARGS`` would.

What a fork does not give, and where ``python -m kling_render`` is exec'd instead: an environment
that changes what an interpreter reads at its start (PYTHONHASHSEED, PYTHONPATH, the locale:
``needs_new_interpreter``), no zygote (a worker that had loaded the remote's client before its
first test: obstore's runtime does not survive a fork), and ``Workspace(fresh=True)`` for tests
about the interpreter itself (imports, bytes arguments).

Processes: the zygote forks a *monitor* per command, and the monitor forks the command; the
monitor writes the command's pid, then its exit status, to a pipe the test reads. The zygote only
ever forks (one thread, nothing to wait for: its monitors are reaped by the kernel), and the
command's child reset puts back what pytest changed in this worker (signal handlers, warnings
filters, stdio objects, excepthooks, the root logger, the ffmpeg choice).
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import io
import json
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["Forked", "Zygote", "needs_new_interpreter", "popen", "run"]

_RESET_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
# What a new interpreter reads once at its start and this module does the same for in the child.
_EMULATED = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING")


def needs_new_interpreter(env: dict[str, str]) -> bool:
    """Whether ``env`` sets what an interpreter reads at its start (PYTHONHASHSEED, PYTHONPATH,
    the locale, ...) otherwise than this process has it: a fork would not honour it."""
    names = {n for n in (*env, *os.environ) if n.startswith(("PYTHON", "LC_")) or n == "LANG"}
    return any(env.get(n) != os.environ.get(n) for n in names - set(_EMULATED))


# -- the command, in its own process --------------------------------------------------------------


def _fresh_streams(env: dict[str, str]) -> None:
    encoding = (env.get("PYTHONIOENCODING") or "utf-8").split(":")[0] or "utf-8"
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=encoding)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding=encoding, errors="backslashreplace", line_buffering=True
    )
    if env.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)


def _as_new_interpreter(argv: list[str], env: dict[str, str]) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # what Python ignores at its start
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; the command waits for ffmpeg
    signal.alarm(0)
    if faulthandler.is_enabled():
        faulthandler.disable()
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    sys.excepthook = sys.__excepthook__
    sys.unraisablehook = sys.__unraisablehook__
    threading.excepthook = threading.__excepthook__
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    os.environ.clear()
    os.environ.update(env)
    _fresh_streams(env)
    sys.argv = argv
    gc.enable()

    from kling_render.media import caps

    caps.reset()  # the binary is chosen once per process, from the environment


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _command(args: Sequence[str], env: dict[str, str], script: str | None) -> int:
    """Run the CLI as ``python -m kling_render ARGS`` would (or ``python SCRIPT ARGS``); its exit
    code."""
    try:
        _as_new_interpreter([script or "kling-render", *args], env)
        try:
            if script is None:
                from kling_render.cli import main

                main()
            else:
                runpy.run_path(script, run_name="__main__")
            return 0
        except SystemExit as exc:
            return _exit_code(exc)
    except KeyboardInterrupt:  # as an interpreter that dies of an unhandled Ctrl-C
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:  # an unhandled error: the traceback and 1, as `python -m` gives
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()


# -- the zygote -----------------------------------------------------------------------------------


def _serve(sock: socket.socket) -> None:
    """The zygote's loop: one request per message (JSON, with stdin, stdout, stderr and the status
    pipe's write end attached), until the worker closes its end."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped by the kernel
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 4)
        except OSError:
            return
        if not data:
            return
        request = json.loads(data)
        if os.fork() == 0:
            sock.close()
            _monitor(request, fds)
        for fd in fds:
            os.close(fd)


def _monitor(request: dict[str, Any], fds: list[int]) -> None:
    stdin, stdout, stderr, status = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
                os.dup2(fd, target)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # as exec with close_fds would leave it
            os.chdir(request["cwd"])
            code = _command(request["args"], request["env"], request["script"])
        finally:
            os._exit(code)
    for fd in (stdin, stdout, stderr):
        os.close(fd)
    os.write(status, f"{pid}\n".encode())
    _, wait_status = os.waitpid(pid, 0)
    os.write(status, f"{os.waitstatus_to_exitcode(wait_status)}\n".encode())
    os._exit(0)


class Zygote:
    """This worker's zygote: ``start`` forks it, ``spawn`` asks it for a command, ``stop`` ends it."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> bool:
        """Fork the zygote now; False when this process cannot give one (the remote's client is
        loaded: its runtime's threads and event fd do not survive a fork)."""
        if "obstore" in sys.modules:
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the zygote: nothing of the worker's runs here again
            code = 0
            try:
                gc.freeze()  # the worker's objects are never finalized here (they hold its fds)
                gc.disable()
                keep = theirs.fileno()  # and none of its fds stays open (pipes, sockets, servers)
                os.closerange(3, keep)
                os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
                _serve(theirs)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self._sock = ours
        return True

    @property
    def running(self) -> bool:
        return self._sock is not None

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the zygote reads the end and exits
            self._sock = None

    def spawn(
        self, cmd: list[str], script: str | None, env: dict[str, str], cwd: Path, fds: tuple[int, int, int]
    ) -> Forked:
        assert self._sock is not None
        status_r, status_w = os.pipe()
        args = cmd[2:] if script else cmd[3:]  # after `python SCRIPT` or `python -m kling_render`
        request = json.dumps({"args": args, "script": script, "env": env, "cwd": str(cwd)}).encode()
        try:
            with self._lock:
                socket.send_fds(self._sock, [request], [*fds, status_w])
        finally:
            os.close(status_w)
        return Forked(cmd, status_r)


ZYGOTE = Zygote()


class Forked:
    """A command forked by the zygote, as a subprocess.Popen answers: pid, poll, wait, kill,
    terminate, send_signal, communicate, returncode; stdout/stderr when they were pipes."""

    def __init__(self, args: list[str], status_fd: int) -> None:
        self.args = args
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self.returncode: int | None = None
        self._status = os.fdopen(status_fd, "r")
        self.pid = int(self._status.readline())
        self._done = threading.Event()
        self._readers: list[threading.Thread] | None = None
        self._outputs: dict[str, Any] = {}
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        line = self._status.readline()
        self._status.close()
        self.returncode = int(line) if line.strip() else -signal.SIGKILL  # the monitor itself died
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        """Read stdout and stderr to their end and wait; called again after a TimeoutExpired (and a
        kill), it goes on with the same readers."""
        if self._readers is None:
            self._readers = [
                threading.Thread(target=self._drain, args=(name, stream), daemon=True)
                for name, stream in (("out", self.stdout), ("err", self.stderr))
                if stream is not None
            ]
            for reader in self._readers:
                reader.start()
        self.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return self._outputs.get("out"), self._outputs.get("err")

    def _drain(self, name: str, stream: IO[Any]) -> None:
        self._outputs[name] = stream.read()
        stream.close()

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._readers is None:
            for stream in (self.stdout, self.stderr):
                if stream is not None:
                    stream.close()
        self.wait()


def _fd(target: Any, default: int) -> tuple[int, IO[Any] | None, int | None]:
    """(the fd for the child, the parent's read end when a pipe, the parent's copy to close)."""
    if target is subprocess.PIPE:
        read, write = os.pipe()
        return write, os.fdopen(read, "r", encoding="utf-8", errors="replace"), write
    if target is None:
        return default, None, None
    if target is subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        return fd, None, fd
    if isinstance(target, int):
        return target, None, None
    return target.fileno(), None, None


def popen(
    args: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdout: Any = None,
    stderr: Any = None,
    script: Path | None = None,
) -> Forked | subprocess.Popen[str]:
    """``kling-render ARGS`` (``script``: ``python SCRIPT ARGS``, a stand-in) as its own process:
    forked by this worker's zygote, or exec'd when a fork cannot stand for it (the module's
    docstring). Pipes are text, as with ``text=True``."""
    cmd = [sys.executable, *([str(script)] if script else ["-m", "kling_render"]), *args]
    if not ZYGOTE.running or needs_new_interpreter(env):
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, stderr=stderr, text=True)
    stdin_fd = os.open(os.devnull, os.O_RDONLY)
    out_fd, out_r, out_close = _fd(stdout, 1)
    err_fd, err_r, err_close = _fd(stderr, 2)
    try:
        proc = ZYGOTE.spawn(cmd, str(script) if script else None, env, cwd, (stdin_fd, out_fd, err_fd))
    finally:
        for fd in (stdin_fd, out_close, err_close):
            if fd is not None:
                os.close(fd)
    proc.stdout, proc.stderr = out_r, err_r
    return proc


def run(args: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(..., capture_output=True, text=True, timeout=timeout)`` of ``popen``."""
    with popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
