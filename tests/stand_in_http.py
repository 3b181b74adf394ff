"""What the provider stand-ins (fake_wavespeed.py, fake_fal.py) share: a threaded HTTP/1.1 server on
127.0.0.1 that joins its handler threads and cuts idle keep-alive connections when it stops, the
request handler's plumbing (connection tracking, one dispatch for GET/POST/PUT, the request's body,
writing an answer or dropping the connection without one), running one as a process until it is
signalled, and, on the tests' side, starting that process and steering it over HTTP
(``StandInProcess``). What each service answers, and its faults, stay in its own module."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

Reply = tuple[int, bytes, dict[str, str]]  # status (0: the handler wrote its answer itself), body, headers


class StandIn:
    """A stand-in service: its state's ``lock``, ``stopping`` (set when it stops: a hanging
    answer ends) and a server on ``base_url`` whose handlers are ``handler``."""

    def __init__(self, host: str, port: int, handler: type[StandInHandler], name: str) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self.httpd = _Server((host, port), handler)
        self.httpd.fake = self
        self.base_url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:  # wake handlers blocked on idle keep-alive connections
            shut(conn)
        self.httpd.server_close()  # joins the handler threads
        self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins them: no socket outlives the server
    request_queue_size = 128  # socketserver's default listen backlog of 5 drops bursts of connects
    fake: StandIn


class Drop(Exception):
    """Close the connection without an answer."""


class StandInHandler(BaseHTTPRequestHandler):
    """One connection's requests; a service's handler writes ``_dispatch``."""

    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real HTTP servers set it: http.server sends the headers and the body in two
    # writes, and with Nagle on, the body waits for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    server: _Server
    record: Any = None  # the request as recorded (its ``status`` is set when answered), if it is
    raw: bytes = b""

    def setup(self) -> None:
        super().setup()
        with self.server.fake.lock:
            self.server.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.fake.lock:
            self.server.fake._conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read the recorded requests instead

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        raise NotImplementedError

    def read_body(self) -> Any:
        """The request's body (kept in ``raw``): parsed JSON for a POST that holds it, else its size."""
        length = int(self.headers.get("Content-Length") or 0)
        self.raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(self.raw) if self.raw and self.command == "POST" else len(self.raw)
        except ValueError:
            return len(self.raw)

    def drop(self) -> None:
        """End the connection without an answer (the record says none was given)."""
        if self.record is not None:
            self.record.status = 0
        self.close_connection = True
        shut(self.connection)

    def _send(self, reply: Reply) -> None:
        status, data, headers = reply
        if status == 0:  # the handler wrote its answer itself
            return
        self._head(status, len(data), headers)
        self.wfile.write(data)

    def _head(self, status: int, length: int, headers: dict[str, str]) -> None:
        if self.record is not None:
            self.record.status = status
        self.send_response(status)
        for name, value in {"Content-Length": str(length), **headers}.items():
            self.send_header(name, value)
        self.end_headers()


def json_reply(status: int, value: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})}


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def shut(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def serve_until_signalled(server: StandIn) -> int:
    """Run ``server`` as a process: print its URL (the first stdout line), serve until SIGTERM or SIGINT."""
    print(server.base_url, flush=True)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with server:
        done.wait()
    return 0


class StandInProcess:
    """A stand-in as its own process, for tests of the real CLI: ``with Kind(api_key, latency=1.0) as
    fake: fake.base_url ...``; started with its key in ``key_variable`` (never in argv), stopped by
    its own pid. A subclass names its ``script`` and ``key_variable``."""

    script: Path
    key_variable: str
    what = "the stand-in"

    def __init__(self, api_key: str, *, latency: float = 0.3, args: tuple[str, ...] = ()) -> None:
        self.api_key, self.latency = api_key, latency
        self.args = args  # more options of the stand-in's script
        self.proc: Any = None  # a subprocess.Popen, or a cli_fork.Forked answering as one
        self.base_url = ""

    def __enter__(self) -> Self:
        prefix = self.key_variable.split("_", 1)[0] + "_"  # WAVESPEED_*, FAL_*: none of the caller's
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
        env[self.key_variable] = self.api_key
        import cli_fork  # beside this module

        self.proc = cli_fork.popen(  # a fork of this worker's zygote: no interpreter start
            ["--port", "0", "--latency", str(self.latency), *self.args],
            script=self.script,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=Path.cwd(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError(f"{self.what} did not start (first line {line!r})")
        self.base_url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fault(self, kind: str, path_prefix: str = "/", count: int = 1, **options: Any) -> None:
        self._call("/_fake/faults", {"kind": kind, "path_prefix": path_prefix, "count": count, **options})

    def clear_faults(self) -> None:
        self._call("/_fake/clear", {})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/_fake/stats")
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("/_fake/requests")
        return result
