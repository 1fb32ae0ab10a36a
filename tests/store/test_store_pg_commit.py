"""PostgreSQL: a COMMIT whose answer is lost is neither applied twice nor reported failed.

A TCP proxy on loopback stands between the store and the real database and cuts a writer's
connection at its COMMIT: after forwarding it (the database commits, the answer never
arrives) or before (the database never sees it, and aborts). Either way the write returns
once, having happened exactly once: the store asks the database, on a new connection,
whether the transaction it began committed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests._postgres import fresh_schema, postgres_url
from tether.store import open_store


class CommitCutter:
    """Forwards connections to PostgreSQL; cuts the next writer's COMMIT when armed."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: str | None = None
        self.cut = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, when: str) -> None:
        """Cut the next writer's COMMIT ``before`` or ``after`` the database gets it."""
        with self.lock:
            self.armed = when

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            state = {"writer": False, "muted": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        while True:
            try:
                chunk = client.recv(65536)
            except OSError:
                return
            if not chunk:
                _close(client, server)
                return
            # The writer begins each batch with BEGIN and asks for its transaction's id.
            state["writer"] = state["writer"] or b"pg_current_xact_id" in chunk
            when = None
            if state["writer"] and chunk.startswith(b"Q") and b"COMMIT" in chunk:
                with self.lock:
                    when, self.armed = self.armed, None
            if when == "before":
                self.cut += 1
                _close(client, server)
                return
            if when == "after":
                state["muted"] = True
                self.cut += 1
            try:
                server.sendall(chunk)
            except OSError:
                return
            if when == "after":
                time.sleep(0.3)  # the database commits; its answer goes nowhere
                _close(client, server)
                return

    @staticmethod
    def _down(server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        while True:
            try:
                chunk = server.recv(65536)
            except OSError:
                return
            if not chunk or state["muted"]:
                _close(client, server)
                return
            try:
                client.sendall(chunk)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.fixture
def cutter_url() -> Iterator[tuple[CommitCutter, str, str]]:
    url, drop = fresh_schema(postgres_url())
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    cutter = CommitCutter(parts.hostname, parts.port)
    netloc = f"{parts.username}@127.0.0.1:{cutter.port}" if parts.username else f"127.0.0.1:{cutter.port}"
    try:
        yield cutter, urlunsplit(parts._replace(netloc=netloc)), url
    finally:
        cutter.close()
        drop()


@pytest.mark.parametrize("when", ["after", "before"])
def test_a_write_whose_commit_answer_is_lost_happens_exactly_once(cutter_url, when):
    cutter, through, direct = cutter_url

    async def body() -> None:
        store = open_store(through, node_id="a")
        try:
            cutter.arm(when)
            # Inserting the same key twice would fail: a batch run again after it committed
            # would raise here instead of returning.
            changed = await store.backend.write(
                lambda tx: tx.execute("INSERT INTO meta (key, value) VALUES ('cut', ?)", (when,))
            )
            assert changed == 1
            # The store goes on writing on its new connection.
            await store.backend.write(lambda tx: tx.execute("INSERT INTO meta (key, value) VALUES ('next', 'x')"))
        finally:
            await store.close()

    asyncio.run(body())
    assert cutter.cut == 1, "the proxy never cut a COMMIT: the test proved nothing"
    with psycopg.connect(direct) as conn:
        rows = conn.execute("SELECT key, value FROM meta WHERE key IN ('cut', 'next') ORDER BY key").fetchall()
    assert rows == [("cut", when), ("next", "x")]
