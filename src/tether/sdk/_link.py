"""The worker side of the framed link (see :mod:`tether._frames`).

A bundle worker serves its app to the runtime over one persistent connection. Attempts run
concurrently; their journal appends are coalesced: every append issued in one turn of the
event loop leaves in a single ``append`` frame, which the runtime commits in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Any

from tether import _frames
from tether.errors import FencedError
from tether.protocol import PROTOCOL_VERSION, Completion, InvokeRequest, NewEntry, manifest_refusal
from tether.sdk._attempt import Attempt
from tether.sdk._query import answer_query
from tether.sdk.app import App

HELLO_TIMEOUT = 5.0
"""Seconds a new connection has to authenticate."""


class LinkServer:
    """Serves one app on framed connections from the runtime."""

    def __init__(self, app: App, *, environment: dict[str, Any] | None = None, secret: str | None = None) -> None:
        """Freeze the app's manifest once; ``environment`` is the fingerprint reported with it.

        With ``secret`` (handed over by the runtime at spawn, never through a file) a
        connection must open with ``{"t": "hello", "secret": ...}``; any other is dropped, so
        no other local process can invoke attempts or read the manifest through the port.
        """
        self.app = app
        self.manifest = app.manifest()
        self.digest = app.manifest_digest()
        self.environment = environment
        self.secret = secret

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until the runtime closes it."""
        await _Connection(self, reader, writer).serve()


class _Connection:
    def __init__(self, server: LinkServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._batch: list[tuple[dict[str, Any], asyncio.Future[list[Completion]]]] = []
        self._flush_scheduled = False
        self._pending: dict[int, list[asyncio.Future[list[Completion]]]] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def serve(self) -> None:
        try:
            if self._server.secret is not None:
                hello = await asyncio.wait_for(_frames.read(self._reader), HELLO_TIMEOUT)
                offered = hello.get("secret") if hello is not None and hello.get("t") == "hello" else None
                if not isinstance(offered, str) or not hmac.compare_digest(offered, self._server.secret):
                    return
            while (message := await _frames.read(self._reader)) is not None:
                kind = message["t"]
                if kind == "ack":
                    self._acked(message)
                elif kind == "invoke":
                    task = asyncio.ensure_future(self._invoke(message["id"], message["request"]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif kind == "manifest":
                    self._send(
                        {
                            "t": "manifest",
                            "id": message["id"],
                            "manifest": self._server.manifest,
                            "digest": self._server.digest,
                            "protocol": PROTOCOL_VERSION,
                            "environment": self._server.environment,
                        }
                    )
                else:
                    raise _frames.FrameError(f"unknown message type {kind!r}")
        except (_frames.FrameError, ConnectionError, TimeoutError):
            pass
        finally:
            self._closed = True
            lost = ConnectionError("the runtime closed the link")
            for futures in self._pending.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(lost)
            for _, future in self._batch:
                if not future.done():
                    future.set_exception(lost)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                self._writer.close()

    def _send(self, message: dict[str, Any]) -> None:
        if not self._closed:
            self._writer.write(_frames.encode(message))

    async def _invoke(self, message_id: int, request: InvokeRequest) -> None:
        refusal = manifest_refusal(self._server.digest, request)
        if refusal is not None:
            self._send({"t": "outcome", "id": message_id, "refused": refusal})
            return
        if "query" in request:
            response = await answer_query(self._server.app, request)
        else:
            response = await Attempt(self._server.app, request, _LinkSink(self, request)).execute()
        self._send({"t": "outcome", "id": message_id, "response": response})

    def append(self, item: dict[str, Any]) -> asyncio.Future[list[Completion]]:
        """Queue one attempt's entries; they leave with everything else queued this turn."""
        future: asyncio.Future[list[Completion]] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ConnectionError("the runtime closed the link"))
            return future
        self._batch.append((item, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        message_id = self._next_id
        self._next_id += 1
        self._pending[message_id] = [future for _, future in batch]
        self._send({"t": "append", "id": message_id, "items": [item for item, _ in batch]})

    def _acked(self, message: dict[str, Any]) -> None:
        futures = self._pending.pop(message["id"], [])
        for future, result in zip(futures, message["results"], strict=False):
            if future.done():
                continue
            error = result.get("error")
            if error is None:
                future.set_result(result["completions"])
            elif error.get("code") == "fenced":
                future.set_exception(FencedError(error["message"]))
            else:
                future.set_exception(RuntimeError(f"{error.get('code')}: {error.get('message')}"))


class _LinkSink:
    """The :class:`tether.sdk._attempt.JournalSink` of an attempt invoked over the link."""

    def __init__(self, connection: _Connection, request: InvokeRequest) -> None:
        self._connection = connection
        self._run_id = request["run_id"]
        self._attempt = request["attempt"]
        self._token = request["token"]

    async def append(self, entries: list[NewEntry]) -> list[Completion]:
        return await self._connection.append(
            {"run_id": self._run_id, "attempt": self._attempt, "token": self._token, "entries": entries}
        )
