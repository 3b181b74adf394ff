"""A tiny HTTP proxy in front of moto that answers the way other S3-compatible stores (or a bad
network) do, so the remote's handling of those answers is tested over real HTTP::

    with S3Proxy(moto_s3.endpoint) as proxy:
        proxy.add(Rule("rewrite-412-to-409", method="PUT"))
        ... AWS_ENDPOINT_URL=proxy.endpoint ...
        assert proxy.hits("rewrite-412-to-409") == 1

Rule kinds:
- ``rewrite-412-to-409``: forward; a 412 Precondition Failed from moto is answered as
  409 Conflict (ConditionalRequestConflict), as some S3-compatible stores do;
- ``status``: answer ``status`` without forwarding (503 SlowDown, 403 AccessDenied, ...), with
  ``body`` if given (say, a store that echoes a credential back);
- ``land-then-503``: forward (the write lands), then answer 503: a reply lost after the fact.

A rule fires ``count`` times (None: always) on requests whose method and path match.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

_BODIES = {
    403: b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    409: b"<Error><Code>ConditionalRequestConflict</Code><Message>A conflicting conditional operation is "
    b"currently in progress against this resource.</Message></Error>",
    500: b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>",
    503: b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
}


@dataclass
class Rule:
    kind: str
    method: str | None = None
    path_contains: str = ""
    status: int = 503
    count: int | None = None
    hits: int = 0
    body: bytes | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        return (self.method is None or self.method == method) and self.path_contains in path


class S3Proxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, int]] = []  # method, path, status answered
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def hits(self, kind: str) -> int:
        with self._lock:
            return sum(r.hits for r in self.rules if r.kind == kind)

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _rule_for(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    return rule
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy._rule_for(self.command, self.path)
                if rule is not None and rule.kind == "status":
                    self._fire(rule)
                    return self._answer(rule.status, {}, rule.body or _BODIES.get(rule.status, b""))
                status, headers, data = self._forward(body)
                if rule is not None and rule.kind == "rewrite-412-to-409" and status == 412:
                    self._fire(rule)
                    return self._answer(409, {}, _BODIES[409])
                if rule is not None and rule.kind == "land-then-503":
                    self._fire(rule)
                    return self._answer(503, {}, _BODIES[503])
                return self._answer(status, headers, data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def _fire(self, rule: Rule) -> None:
                with proxy._lock:
                    rule.hits += 1

            def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    keep = {
                        k: v
                        for k, v in response.getheaders()
                        if k.lower() not in ("transfer-encoding", "connection", "server", "date")
                    }
                    return response.status, keep, data
                finally:
                    conn.close()

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, status))
                self.send_response(status)
                head = self.command == "HEAD" and status == 200
                for key, value in headers.items():
                    if key.lower() != "content-length" or head:  # a HEAD answer keeps the object's length
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler
