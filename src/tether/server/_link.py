"""The runtime side of the framed link to a bundle worker (see :mod:`tether._frames`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tether import _frames
from tether.protocol import InvokeRequest

log = logging.getLogger("tether.link")

AppendHandler = Callable[[list[dict[str, Any]], str], Awaitable[list[dict[str, Any]]]]
"""Commits a batch of appends (one item per attempt) from the worker of a deployment (the
second argument: its id) and answers one result per item."""


class LinkClosedError(ConnectionError):
    """The worker's connection closed; what was in flight is retried by the runtime."""


class WorkerLink:
    """One persistent, multiplexed connection to a worker."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_append: AppendHandler) -> None:
        """Wrap an open connection; call :meth:`start` to begin reading."""
        self._reader = reader
        self._writer = writer
        self._on_append = on_append
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = False
        self.owner = ""
        """The deployment whose worker this is: appends are accepted only for its own attempts."""

    @classmethod
    async def open(cls, host: str, port: int, on_append: AppendHandler, *, secret: str | None = None) -> WorkerLink:
        """Connect to a worker listening on ``host:port``, authenticating with ``secret``."""
        reader, writer = await asyncio.open_connection(host, port)
        if secret is not None:
            writer.write(_frames.encode({"t": "hello", "secret": secret}))
        link = cls(reader, writer, on_append)
        link._reader_task = asyncio.create_task(link._read_loop(), name=f"tether-link-{port}")
        return link

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise LinkClosedError("the link to the worker is closed")
        message_id = self._next_id
        frame = _frames.encode({**message, "id": message_id})
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        self._writer.write(frame)
        return await future

    async def manifest(self) -> dict[str, Any]:
        """The worker's manifest and digest."""
        return await self._request({"t": "manifest"})

    async def invoke(self, request: InvokeRequest) -> dict[str, Any]:
        """Run one attempt; the answer holds ``response`` (an outcome) or ``refused``."""
        return await self._request({"t": "invoke", "request": request})

    async def _read_loop(self) -> None:
        try:
            while (message := await _frames.read(self._reader)) is not None:
                if message["t"] == "append":
                    task = asyncio.create_task(self._append(message["id"], message["items"]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    future = self._waiting.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
        except (_frames.FrameError, ConnectionError) as exc:
            log.warning("link to worker broke: %s", exc)
        finally:
            self._close_waiters()

    async def _append(self, message_id: int, items: list[dict[str, Any]]) -> None:
        try:
            results = await self._on_append(items, self.owner)
        except Exception as exc:
            # Never leave the worker waiting for an ack: each attempt ends, and is retried.
            log.exception("appends from the worker failed")
            error = {"code": "internal", "message": f"the append failed: {type(exc).__name__}: {exc}"}
            results = [{"error": error} for _ in items]
        if not self.closed:
            self._writer.write(_frames.encode({"t": "ack", "id": message_id, "results": results}))

    def _close_waiters(self) -> None:
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkClosedError("the worker closed the link"))
        self._waiting.clear()

    async def close(self) -> None:
        """Close the connection and fail whatever waits on it."""
        self._close_waiters()
        with contextlib.suppress(Exception):
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
