"""providers/transport.client_transport: the providers' connection pool (httpx's, with a stream that
finds its socket once). A connection the server closed while idle is dropped, never reused; one the
server keeps is reused; and the pool in use is the one built there (an httpx that keeps its pool
elsewhere fails here, not silently in a run)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpcore
import httpx
import pytest

from kling_render.providers import transport as net

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Server:
    """HTTP/1.1 on 127.0.0.1 that answers every request ``ok`` and, when ``close_after`` is set,
    closes the connection that long after each answer (no ``Connection: close``: as a server that
    drops idle keep-alive connections does). Counts connections."""

    def __init__(self, close_after: float | None) -> None:
        self.close_after = close_after
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    conn.sendall(RESPONSE)
                    if self.close_after is not None:
                        time.sleep(self.close_after)
                        return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing() -> Iterator[Server]:
    server = Server(close_after=0.05)
    yield server
    server.close()


def test_the_clients_pool_is_the_one_built_for_it() -> None:
    transport = net.client_transport()
    pool = transport._pool
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert isinstance(pool._network_backend, net._Backend)
    assert pool._max_keepalive_connections == net.POOL.max_keepalive_connections


def test_a_connection_the_server_closed_while_idle_is_not_reused(closing: Server) -> None:
    async def main() -> list[str]:
        async with httpx.AsyncClient(transport=net.client_transport()) as client:
            answers = []
            for _ in range(3):
                answers.append((await client.get(f"http://127.0.0.1:{closing.port}/")).text)
                await asyncio.sleep(0.3)  # the server has closed it by now
            return answers

    assert asyncio.run(main()) == ["ok", "ok", "ok"]  # a reused dead connection fails a request instead
    assert closing.connections == 3


def test_a_connection_the_server_keeps_is_reused() -> None:
    server = Server(close_after=None)
    try:

        async def main() -> list[str]:
            async with httpx.AsyncClient(transport=net.client_transport()) as client:
                return [(await client.get(f"http://127.0.0.1:{server.port}/")).text for _ in range(5)]

        assert asyncio.run(main()) == ["ok"] * 5
        assert server.connections == 1
    finally:
        server.close()
