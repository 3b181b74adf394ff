"""A real S3 API for the remote's tests: moto's server in a child process on 127.0.0.1.

In tests, through the session fixture ``moto_s3`` (conftest.py)::

    bucket = moto_s3.new_bucket()
    moto_s3.put_raw(bucket, "path/in/bucket", b"...")    # tamper behind kling-render's back

As a process (the first stdout line is the port; it stops when its stdin closes)::

    python tests/moto_s3.py

The store's clock can be moved (``set_clock(seconds)``: objects written from then on carry a
Last-Modified that many seconds off), to stand for objects written long ago.

The child handles one request at a time (``_atomic``): real S3 applies a conditional write
(If-None-Match: *, If-Match: <etag>) atomically, and moto checks the condition and then writes,
so two requests handled at once on a loaded machine could both pass one condition. The claim and
spend race tests test kling-render against S3's guarantee, not against moto's timing.

The child serves until its stdin reaches EOF. The test process holds the only write end of
that pipe, so the child stops with it however the test process ends: a finished session,
Ctrl-C, or kill -9 (the kernel closes the pipe). Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve()
START_TIMEOUT = 60.0  # moto imports a lot; a loaded 2-core machine takes a while


class MotoS3:
    """A running moto server (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=self.endpoint, timeout=30.0)
        self._s3: Any = None

    @classmethod
    def start(cls, log: Path | None = None) -> MotoS3:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(log or os.devnull, "wb") as stderr:  # the child keeps its own copy of the handle
            proc = subprocess.Popen(
                [sys.executable, str(HERE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                break
        if not line.strip().isdigit():
            _stop(proc)
            raise RuntimeError(f"moto did not start (exit {proc.poll()}); see {log}")
        server = cls(proc, int(line))
        server._wait_ready(deadline)
        return server

    def _wait_ready(self, deadline: float) -> None:
        while True:
            try:
                self._http.get("/")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @property
    def s3(self) -> Any:
        """A boto3 client of this server (moto's own dependency), for access behind kling-render's back."""
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id="moto-admin",
                aws_secret_access_key="moto-admin",
                region_name="us-east-1",
            )
        return self._s3

    def new_bucket(self) -> str:
        name = f"kling-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=name)
        return name

    def put_raw(self, bucket: str, key: str, data: bytes) -> None:
        """Overwrite an object directly (no conditions, no kling-render): for tampering."""
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    def get_raw(self, bucket: str, key: str) -> bytes:
        data: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def delete_raw(self, bucket: str, key: str) -> None:
        self.s3.delete_object(Bucket=bucket, Key=key)

    def list_raw(self, bucket: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def set_clock(self, offset: float) -> None:
        """Objects written from now on get a Last-Modified ``offset`` seconds off the real time
        (0: the real clock again); waits until the server has applied it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"clock {offset}\n".encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.strip() == b"ok", line

    def stop(self) -> None:
        self._http.close()
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()  # EOF: the child shuts its server down and exits
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)
    if proc.stdout is not None:
        proc.stdout.close()


def _atomic(app: Any) -> Any:
    """The WSGI app, one request at a time. The body is read before the lock is taken, so a
    client that stalls mid-upload holds up no one but itself."""
    import io
    import threading

    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit():
            environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(int(length)))
        elif environ.get("wsgi.input_terminated"):
            environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read())
        with lock:
            return list(app(environ, start_response))

    return serve


def main() -> int:
    import datetime
    import threading

    import moto.s3.models
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    real_now = moto.s3.models.utcnow
    offset = [0.0]
    moto.s3.models.utcnow = lambda: real_now() + datetime.timedelta(seconds=offset[0])  # the store's clock

    # moto's ThreadedMotoServer, with its dispatcher made atomic
    app = _atomic(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin.buffer:  # commands, until EOF: the test process is gone
            words = line.split()
            if len(words) == 2 and words[0] == b"clock":
                offset[0] = float(words[1])
                sys.stdout.write("ok\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
