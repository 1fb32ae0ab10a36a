"""A minimal keep-alive HTTP/1.1 client for the load: a general-purpose client (httpx) spends
several milliseconds of CPU per request here, on the same 2 cores as the systems under test.

Only what the benchmark needs: JSON bodies, Content-Length or chunked answers, a pool of
persistent connections (one per request in flight), a timeout per request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

IDLE_REUSE_S = 1.0  # reconnect instead of reusing a connection idle longer than this (servers close idle ones)


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        self.status = status
        self.body = body


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    def close(self) -> None:
        self.writer.close()


class Http1Client:
    """``await client.request("POST", "/path", json_body)`` → ``(status, decoded JSON or None)``."""

    def __init__(self, base_url: str, *, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        assert parts.scheme == "http" and parts.hostname, base_url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._idle: list[_Conn] = []
        self._host_header = f"{self.host}:{self.port}".encode()

    async def _acquire(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.last_used < IDLE_REUSE_S and not conn.reader.at_eof():
                return conn
            conn.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Conn(reader, writer)

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None, ok: tuple[int, ...] = ()
    ) -> tuple[int, Any]:
        """Send one request; the status and the decoded JSON answer. Raises HttpError for a status
        of 400 or more that is not in ``ok``."""
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: ".encode()
            + self._host_header
            + b"\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
        )
        conn = await self._acquire()
        try:
            status, data, close = await asyncio.wait_for(
                self._exchange(conn, head + payload), timeout if timeout is not None else self.timeout
            )
        except BaseException:
            conn.close()
            raise
        if close:
            conn.close()
        else:
            conn.last_used = time.monotonic()
            self._idle.append(conn)
        if status >= 400 and status not in ok:
            raise HttpError(status, data)
        return status, (orjson.loads(data) if data else None)

    async def _exchange(self, conn: _Conn, message: bytes) -> tuple[int, bytes, bool]:
        conn.writer.write(message)
        await conn.writer.drain()
        reader = conn.reader
        line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        status = int(line.split(b" ", 2)[1])
        length: int | None = None
        chunked = close = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(parts)
        elif length is not None:
            data = await reader.readexactly(length)
        else:
            data = await reader.read()
            close = True
        return status, data, close

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
