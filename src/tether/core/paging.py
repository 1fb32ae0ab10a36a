"""Cursors of keyset pagination: every list of the API pages by the position of its last item.

A list is read in a fixed order over indexed columns (an id, an index, a time and an id); a
page ends at some item, and the next page is the items strictly after that item's *key* in
the same order. A row inserted meanwhile lands either before the cursor (it is not shown on
later pages) or after it (it is): no row is skipped or shown twice, which ``OFFSET`` cannot
promise. The cursor a client receives is the key, tagged with the list it belongs to, in an
opaque URL-safe string; the client passes it back verbatim and never reads it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Key = tuple[str | int | float, ...]
"""The position of an item in its list: the values of the columns the list is ordered by."""


class CursorError(ValueError):
    """A cursor this list did not hand out (altered, truncated, or from another list)."""


def encode_cursor(kind: str, key: Key) -> str:
    """The opaque cursor for the items after ``key`` in list ``kind``.

    Args:
        kind: the list the cursor belongs to (``runs``, ``audit``, ``journal:<run id>``...).
        key: the ordering columns' values of the last item of the page.
    """
    raw = json.dumps([kind, list(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, text: str, shape: Sequence[type]) -> Key:
    """The key a cursor of list ``kind`` carries, checked against the list's key ``shape``.

    Args:
        kind: the list being read; a cursor of another list is refused.
        text: the cursor as the client sent it.
        shape: the type of each key column (``int`` accepts no float; ``float`` accepts an int).

    Raises:
        CursorError: the text is not a cursor of this list.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        decoded: Any = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CursorError("it is not a cursor tether made") from None
    if not (isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[1], list)):
        raise CursorError("it is not a cursor tether made")
    if decoded[0] != kind:
        raise CursorError(f"it is a cursor of another list ({str(decoded[0])[:40]!r}), not of {kind!r}")
    values: list[Any] = decoded[1]
    if len(values) != len(shape):
        raise CursorError("it is not a cursor tether made")
    out: list[str | int | float] = []
    for raw, wanted in zip(values, shape, strict=True):
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise CursorError("it is not a cursor tether made")
        value = float(raw) if wanted is float and isinstance(raw, int) else raw
        if type(value) is not wanted:
            raise CursorError("it is not a cursor tether made")
        out.append(value)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its items and the cursor of the next page."""

    items: list[Any]
    next_key: Key | None
    """The key after which the next page starts; None on the last page."""


def cut(rows: Sequence[Any], limit: int, key_of: Any) -> Page:
    """A page from up to ``limit + 1`` rows read in order: the extra row only says that more follow.

    Args:
        rows: the rows read, at most ``limit + 1`` of them, in the list's order.
        limit: the page size asked for.
        key_of: a function from a row to its :data:`Key`.
    """
    if len(rows) <= limit:
        return Page(list(rows), None)
    kept = list(rows[:limit])
    return Page(kept, key_of(kept[-1]))
