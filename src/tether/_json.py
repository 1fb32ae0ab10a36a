"""JSON for every path of tether: orjson where it is exact, the standard library where not.

orjson refuses to serialise integers beyond 64 bits and parses them into floats, which would
silently change a user's payload. Both directions fall back to :mod:`json` in exactly those
cases, so any JSON value round-trips unchanged and the same value always serialises to the
same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_DIGITS = bytes(ord("1") if c in b"0123456789" else ord("0") for c in range(256))
_LONG_RUN = b"1" * 19
"""19 digits in a row may exceed 64 bits: the exact parser reads such a document."""


def _has_long_number(raw: bytes) -> bool:
    # A byte translation and a substring search run in C at about 1 ns per byte, ten times
    # faster than the equivalent regular expression.
    return _LONG_RUN in raw.translate(_DIGITS)


MAX_DEPTH = 1024
"""Deepest nesting either parser reads (orjson's own limit; the exact parser stops near it)."""

JSONDecodeError = ValueError
"""What :func:`loads` raises for malformed input (both parsers' errors are ValueErrors)."""


Fragment = orjson.Fragment
"""Already-serialised JSON embedded verbatim by :func:`dumps` (e.g. stored journal results)."""


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Serialise ``value`` to compact UTF-8 JSON.

    Raises:
        TypeError: the value holds something JSON cannot represent.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        # Integers beyond 64 bits; anything truly unserialisable raises TypeError here too.
        return json.dumps(
            value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()


class DepthError(ValueError):
    """A document nested deeper than a limit allows."""

    def __init__(self, limit: int) -> None:
        """Name the limit."""
        super().__init__(f"the JSON is nested more than {limit} levels deep; the limit is {limit}")
        self.limit = limit


def check_depth(raw: bytes, value: Any, limit: int) -> None:
    """Refuse ``value`` (parsed from ``raw``) if it nests containers deeper than ``limit``.

    A document with no more than ``limit`` brackets cannot be that deep: that count runs in C,
    so ordinary bodies pay nothing more; only the others are walked, and the walk stops at the
    first container too deep.

    Raises:
        DepthError: the value is nested deeper than ``limit``.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise DepthError(limit)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON exactly (big integers stay integers).

    Raises:
        ValueError: the input is not valid JSON.
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if _has_long_number(raw):
        try:
            return json.loads(raw)
        except RecursionError:
            # orjson refuses nesting past MAX_DEPTH with a ValueError; the exact parser would
            # exhaust the interpreter's stack instead, and that must not escape as a crash.
            raise DepthError(MAX_DEPTH) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise DepthError(MAX_DEPTH) from None
        raise
