"""The replay decision: for each command the code issues, answer from the journal or execute.

Pure and synchronous. The SDK's attempt feeds commands in issue order; the replayer answers
with a :class:`Decision` and never raises. Issue order is deterministic because a command's
index is assigned when it is issued, not when it completes, so ``asyncio.gather`` over context
calls replays identically.

The journal may have gaps: entries are appended as commands complete, so a crash can leave
index 3 durable while index 2 never was. A gap is simply executed again on replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from tether.core.journal import Command, JournalEntry, Mismatch, compare


class Action(StrEnum):
    """What the SDK must do with an issued command."""

    REPLAY = "replay"
    """The journal holds a completed result: return it, execute nothing."""
    WAIT = "wait"
    """The journal holds the command but it has not completed: wait for the runtime."""
    EXECUTE = "execute"
    """Nothing journaled at this index: execute (or, for waiting kinds, journal) it now."""
    MISMATCH = "mismatch"
    """The code disagrees with the journal: stop the attempt."""


class Decision:
    """The replayer's answer for one issued command (a value, built per command)."""

    __slots__ = ("_entry", "_wire", "action", "mismatch")

    def __init__(
        self,
        action: Action,
        entry: JournalEntry | None = None,
        mismatch: Mismatch | None = None,
        *,
        wire: Mapping[str, Any] | None = None,
    ) -> None:
        """Build a decision from an entry, or from the entry's wire form (read lazily)."""
        self.action = action
        """What to do."""
        self.mismatch = mismatch
        """The diff for ``MISMATCH``."""
        self._entry = entry
        self._wire = wire

    @property
    def entry(self) -> JournalEntry | None:
        """The journaled entry for ``REPLAY`` and ``WAIT``."""
        if self._entry is None and self._wire is not None:
            self._entry = JournalEntry.from_json(dict(self._wire))
        return self._entry

    @property
    def result(self) -> Any:
        """The journaled result (``REPLAY``)."""
        if self._wire is not None:
            return self._wire.get("result")
        return None if self._entry is None else self._entry.result

    @property
    def error(self) -> Any:
        """The journaled failure, ``{"type", "message"}`` (``REPLAY``), else None."""
        if self._wire is not None:
            return self._wire.get("error")
        return None if self._entry is None else self._entry.error

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (self.action, self.entry, self.mismatch) == (other.action, other.entry, other.mismatch)

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, entry={self.entry!r}, mismatch={self.mismatch!r})"


class Replayer:
    """Matches the commands of one attempt against the run's journal so far."""

    def __init__(self, journal: Iterable[JournalEntry] = (), *, wire: Iterable[Mapping[str, Any]] = ()) -> None:
        """Index the journal by position.

        Args:
            journal: the run's entries, in any order; indexes must be unique.
            wire: more entries in their protocol form (:meth:`JournalEntry.to_json`); they are
                compared as they are and turned into entries only when a mismatch needs one,
                which keeps replaying a long journal cheap.
        """
        self._entries: dict[int, JournalEntry] = {e.index: e for e in journal}
        self._wire: dict[int, Mapping[str, Any]] = {w["index"]: w for w in wire}
        self._issued: set[int] = set()
        self.mismatch: Mismatch | None = None
        """The first mismatch found; once set, every later decision repeats it."""

    @property
    def journal_length(self) -> int:
        """One past the highest journaled index (0 for an empty journal)."""
        return max(max(self._entries, default=-1), max(self._wire, default=-1)) + 1

    def is_replaying(self, index: int) -> bool:
        """Whether the journal holds anything at or beyond ``index``."""
        return index < self.journal_length

    def _entry(self, index: int) -> JournalEntry | None:
        entry = self._entries.get(index)
        if entry is None and index in self._wire:
            entry = JournalEntry.from_json(dict(self._wire[index]))
        return entry

    def issue(self, index: int, command: Command) -> Decision:
        """Decide what happens to ``command`` issued at ``index``.

        Args:
            index: the position the SDK assigned when the code issued the command.
            command: the command's identity.

        Returns:
            The decision; ``MISMATCH`` when the journal holds a different command there.
        """
        if self.mismatch is not None:
            return Decision(Action.MISMATCH, mismatch=self.mismatch)
        self._issued.add(index)
        entry = self._entries.get(index)
        if entry is None:
            raw = self._wire.get(index)
            if raw is None:
                return Decision(Action.EXECUTE)
            if (
                raw["kind"] == command.kind
                and raw["name"] == command.name
                and raw["args_digest"] == command.args_digest
                and raw.get("manual_digest") == command.manual_digest
            ):
                return Decision(Action.REPLAY if raw.get("completed", True) else Action.WAIT, wire=raw)
            entry = JournalEntry.from_json(dict(raw))
        mismatch = compare(entry, command)
        if mismatch is not None:
            self.mismatch = mismatch
            return Decision(Action.MISMATCH, mismatch=mismatch)
        if not entry.completed:
            return Decision(Action.WAIT, entry=entry)
        return Decision(Action.REPLAY, entry=entry)

    def record(self, entry: JournalEntry) -> None:
        """Remember an entry the attempt itself journaled or had completed."""
        self._entries[entry.index] = entry

    def finish(self) -> Mismatch | None:
        """Check, when the code has finished, that it re-issued every journaled command.

        Returns:
            The mismatch for the lowest journaled index the code never issued, if any.
        """
        if self.mismatch is not None:
            return self.mismatch
        for index in sorted(self._entries.keys() | self._wire.keys()):
            if index not in self._issued:
                entry = self._entry(index)
                assert entry is not None
                self.mismatch = Mismatch(index, entry.describe(), None, "missing")
                return self.mismatch
        return None


def replay(journal: Iterable[JournalEntry], commands: Sequence[Command]) -> list[Decision]:
    """Replay a whole sequence of commands, as issued at indexes 0, 1, 2, ...

    Used by tests and by dry-run compatibility checks. Stops at the first mismatch (the last
    decision returned is then the mismatch). When every command was decided without a
    mismatch, the unconsumed journal is *not* checked: call :meth:`Replayer.finish` for that.

    Args:
        journal: the recorded entries.
        commands: the commands the code issues, in issue order.

    Returns:
        One decision per command, up to and including the first mismatch.
    """
    replayer = Replayer(journal)
    decisions: list[Decision] = []
    for index, command in enumerate(commands):
        decision = replayer.issue(index, command)
        decisions.append(decision)
        if decision.action is Action.MISMATCH:
            break
    return decisions
