"""The moto S3 server the remote's tests use starts, stops cleanly, and never outlives its test process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from moto_s3 import MotoS3

TESTS = Path(__file__).resolve().parents[1]


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_start_serves_on_loopback_and_stop_is_a_clean_exit(tmp_path: Path) -> None:
    server = MotoS3.start(log=tmp_path / "moto.log")
    try:
        bucket = server.new_bucket()
        server.put_raw(bucket, "a/b.txt", b"hello")
        assert server.get_raw(bucket, "a/b.txt") == b"hello"
        assert server.endpoint.startswith("http://127.0.0.1:")
    finally:
        server.stop()
    assert server.proc.returncode == 0  # it shut down on stdin EOF, it was not killed
    assert not port_open(server.port)


def test_the_server_dies_with_a_test_process_killed_hard() -> None:
    """kill -9 of the process that started moto (no teardown runs): the kernel closes the pipe,
    and moto stops by itself."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(TESTS)!r}); from moto_s3 import MotoS3; "
        "s = MotoS3.start(); print(s.proc.pid, s.port, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    line = parent.stdout.readline().split()
    try:
        moto_pid, port = int(line[0]), int(line[1])
        assert running(moto_pid) and port_open(port)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
    assert wait_until(lambda: not running(moto_pid)), "moto outlived the process that started it"
    assert not port_open(port)
