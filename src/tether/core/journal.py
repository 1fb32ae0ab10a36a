"""Journal entries, command identity and the comparison that detects a journal mismatch.

Everything here is pure data: no clock, no I/O. The runtime stores entries; the SDK issues
commands; :func:`compare` decides whether a re-issued command is the one the journal holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tether import _json


class EntryKind(StrEnum):
    """The kinds of journal entry (DESIGN.md, "The journal and replay")."""

    STEP = "step"
    RUN = "run"
    LLM = "llm"
    NOW = "now"
    UUID = "uuid"
    RANDOM = "random"
    SLEEP = "sleep"
    SIGNAL = "signal"
    STATE = "state"
    CHILD = "child"
    CONTINUE_AS_NEW = "continue_as_new"


WAITING_KINDS = frozenset({EntryKind.SLEEP, EntryKind.SIGNAL, EntryKind.CHILD})
"""Kinds journaled when issued and completed later, by the runtime."""


def canonical_json(value: Any) -> bytes:
    """Serialise a JSON value canonically: sorted keys, no insignificant whitespace.

    Args:
        value: a JSON-compatible value (dicts, lists, str, int, float, bool, None).

    Returns:
        The UTF-8 bytes; equal values always give equal bytes.
    """
    return _json.dumps(value, sort_keys=True)


def args_digest(args: Any) -> str:
    """Digest of a command's arguments, as stored in the journal (16 hex digits of sha256)."""
    return hashlib.sha256(canonical_json(args)).hexdigest()[:16]


MANUAL_KEY = "_manual"
"""Key of an ``llm`` entry's result holding the manual's field digests
(:func:`tether.core.manual.field_digests`); replay reads results, so a mismatch can name the
field that changed."""


@dataclass(slots=True)
class Command:
    """What the code issues at one journal index: the identity replay compares.

    A value (never mutated); not frozen because one is built for every command replayed.
    """

    kind: str
    """One of :class:`EntryKind`."""
    name: str
    """The step/function name, the signal name, the child workflow, or the value kind."""
    args_digest: str
    """:func:`args_digest` of the command's arguments."""
    manual_digest: str | None = None
    """For ``llm`` commands: digest of the manual the model is given."""
    manual_fields: dict[str, str] | None = None
    """For ``llm`` commands: :func:`tether.core.manual.field_digests` of that manual, which
    lets a mismatch name the fields that differ (not part of the identity)."""

    def describe(self) -> str:
        """Human-readable identity, e.g. ``step compute_risk_score(#ab12)``."""
        return describe(self.kind, self.name, self.args_digest, self.manual_digest)


@dataclass(slots=True)
class JournalEntry:
    """One durable record of a run's action and, once completed, its result.

    Treat it as a value: nothing mutates an entry once built. It is not frozen because a
    frozen dataclass is three times slower to build, and replaying a 10,000-entry journal
    builds 10,000 of them.
    """

    index: int
    """Position assigned when the command was issued (not when it completed)."""
    kind: str
    """One of :class:`EntryKind`."""
    name: str
    """See :attr:`Command.name`."""
    args_digest: str
    """See :attr:`Command.args_digest`."""
    completed: bool = True
    """False while a waiting command (sleep, signal, child) has no result yet."""
    result: Any = None
    """The JSON result when completed without error."""
    error: dict[str, Any] | None = None
    """``{"type", "message"}`` when the action failed (the failure is the result)."""
    manual_digest: str | None = None
    """For ``llm`` entries, the digest of the manual the model call was made with."""
    args: Any = None
    """The arguments themselves, where the runtime needs them or for display."""
    attempt: int = 0
    """The attempt that appended this entry."""
    created_at: float = 0.0
    """Seconds since the epoch, set by the runtime when the entry became durable."""
    completed_at: float | None = None
    """When a waiting entry was completed, or ``created_at`` for immediate ones."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Runtime bookkeeping shown to operators (e.g. a child's run id)."""

    @property
    def command(self) -> Command:
        """The command identity this entry records."""
        return Command(self.kind, self.name, self.args_digest, self.manual_digest)

    def describe(self) -> str:
        """Human-readable identity, e.g. ``step compute_risk_score(#ab12)``."""
        return describe(self.kind, self.name, self.args_digest, self.manual_digest)

    def to_json(self) -> dict[str, Any]:
        """The wire/API form of this entry."""
        out: dict[str, Any] = {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "args_digest": self.args_digest,
            "completed": self.completed,
            "result": self.result,
            "error": self.error,
            "attempt": self.attempt,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
        }
        if self.manual_digest is not None:
            out["manual_digest"] = self.manual_digest
        if self.args is not None:
            out["args"] = self.args
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JournalEntry:
        """Inverse of :meth:`to_json` (the runtime's own output: types are trusted)."""
        get = data.get
        return cls(
            data["index"],
            data["kind"],
            data["name"],
            data["args_digest"],
            get("completed", True),
            get("result"),
            get("error"),
            get("manual_digest"),
            get("args"),
            get("attempt", 0),
            get("created_at", 0.0),
            get("completed_at"),
            get("extra") or {},
        )


def describe(kind: str, name: str, digest: str, manual_digest: str | None = None) -> str:
    """Render a command identity the way mismatch diffs show it."""
    text = f"{kind} {name}(#{digest[:4]})"
    if manual_digest is not None:
        text += f" manual #{manual_digest[:8]}"
    return text


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The first place where code and journal disagree."""

    index: int
    """The journal index of the disagreement."""
    expected: str | None
    """What the journal holds there (``None``: the code issued more than was journaled)."""
    issued: str | None
    """What the code issued there (``None``: the code finished without issuing it)."""
    reason: str
    """Which part differs: ``kind``, ``name``, ``args``, ``manual`` or ``missing``."""
    detail: str | None = None
    """For ``manual``: what differs, e.g. ``manual of agent fraud: tool compute_risk_score
    description changed`` (when the journal recorded the manual's fields)."""

    def render(self) -> str:
        """The one-line diff operators read."""
        if self.issued is None:
            return f"entry {self.index}: journal has {self.expected}, code finished without issuing it"
        text = f"entry {self.index}: journal has {self.expected}, code issued {self.issued}"
        return text if self.detail is None else f"{text}; {self.detail}"

    def to_json(self) -> dict[str, Any]:
        """The wire/API form, including the rendered message."""
        return {
            "index": self.index,
            "expected": self.expected,
            "issued": self.issued,
            "reason": self.reason,
            "message": self.render(),
            **({"detail": self.detail} if self.detail is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mismatch:
        """Inverse of :meth:`to_json`."""
        return cls(
            index=int(data["index"]),
            expected=data.get("expected"),
            issued=data.get("issued"),
            reason=str(data["reason"]),
            detail=data.get("detail"),
        )


def compare(entry: JournalEntry, command: Command) -> Mismatch | None:
    """Compare a journaled entry with the command re-issued at its index.

    Args:
        entry: what the journal holds at the index.
        command: what the code issued at the same index.

    Returns:
        ``None`` when they are the same command, else the :class:`Mismatch`, naming the
        first differing part in the order kind, name, arguments, manual.
    """
    if entry.kind != command.kind:
        reason = "kind"
    elif entry.name != command.name:
        reason = "name"
    elif entry.args_digest != command.args_digest:
        reason = "args"
    elif entry.manual_digest != command.manual_digest:
        return Mismatch(entry.index, entry.describe(), command.describe(), "manual", _manual_detail(entry, command))
    else:
        return None
    return Mismatch(entry.index, entry.describe(), command.describe(), reason)


def _manual_detail(entry: JournalEntry, command: Command) -> str | None:
    """Name the manual fields that differ, when both sides recorded them."""
    from tether.core.manual import changed_fields

    recorded = entry.result.get(MANUAL_KEY) if isinstance(entry.result, dict) else None
    if not isinstance(recorded, dict) or command.manual_fields is None:
        return None
    changes = [label for label, _ in changed_fields(recorded, command.manual_fields)]
    if not changes:
        return None
    return f"manual of agent {entry.name}: " + ", ".join(changes)
