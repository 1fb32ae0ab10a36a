"""Length-prefixed JSON frames: the transport between the runtime and its bundle workers.

One persistent loopback connection per worker carries every message of the runtime⇄deployment
protocol in both directions, multiplexed by message id: the runtime sends ``manifest`` and
``invoke`` requests and ``ack``\\ s; the worker sends ``append`` batches (entries of many runs at
once) and ``outcome``\\ s. The bodies are the same JSON as the HTTP protocol's
(:mod:`tether.protocol`); only the transport differs, because an HTTP request per journal
append cost more than the append itself.

A frame is a 4-byte big-endian length followed by that many bytes of JSON.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from tether import _json

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


class FrameError(Exception):
    """The peer sent something that is not a frame; the connection is unusable."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding ``message``."""
    body = _json.dumps(message)
    if len(body) > MAX_FRAME:
        raise FrameError(f"a frame of {len(body)} bytes is over the limit of {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the peer closed the connection cleanly.

    Raises:
        FrameError: the peer broke the framing.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("the connection closed inside a frame header") from None
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise FrameError(f"a frame of {size} bytes is over the limit of {MAX_FRAME}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError("the connection closed inside a frame") from None
    message = _json.loads(body)
    if not isinstance(message, dict) or "t" not in message:
        raise FrameError("a frame must hold a JSON object with a type 't'")
    return message
