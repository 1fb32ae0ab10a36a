"""An in-memory journal for one run: the store's append semantics without a database."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from tether.core.appends import Start, Verdict, judge, plan_wait, refusal
from tether.core.journal import EntryKind, JournalEntry
from tether.errors import FencedError
from tether.protocol import Completion, ErrorInfo, NewEntry


class MemorySink:
    """A :class:`~tether.sdk._attempt.JournalSink` that keeps one run's journal in memory.

    It follows the runtime store's rules: entries are kept by index; an entry at an index that
    already holds the same command (kind, name, args digest) is acknowledged and the stored
    one kept; a different one raises :class:`tether.errors.FencedError`. Waiting entries are
    completed the way the harness documents: a ``sleep`` at once, whatever its duration; a
    ``signal`` from the buffer of signals sent earlier, if one is there; a ``child`` stays open
    until the harness runs the child workflow.
    """

    def __init__(self, entries: Iterable[JournalEntry] = ()) -> None:
        """Start from ``entries`` (none for a new run)."""
        self.entries: dict[int, JournalEntry] = {e.index: e for e in entries}
        """The journal, by index."""
        self.attempt = 0
        """The attempt stamped on entries appended from now on."""
        self.fence_after_append = False
        """Make the next append that stores something new end its attempt (see
        :class:`~tether.testing.WorkflowHarness`, ``always_replay``)."""
        self.appended = 0
        """How many new entries were stored since the counter was last reset."""
        self._signals: dict[str, deque[Any]] = {}

    @property
    def journal(self) -> list[JournalEntry]:
        """The entries in index order."""
        return [self.entries[i] for i in sorted(self.entries)]

    async def append(self, entries: list[NewEntry]) -> list[Completion]:
        """Store ``entries``; see the class docstring for the rules.

        Raises:
            FencedError: an entry contradicts a stored one (nothing of the batch is stored),
                or ``fence_after_append`` is set and the batch stored something new (the
                batch *is* stored then, as when an acknowledgement is lost).
        """
        # As the store does, entry by entry: an earlier entry of the batch takes its index too.
        taken = {i: (e.kind, e.name, e.args_digest) for i, e in self.entries.items()}
        for new in entries:
            existing = taken.get(new["index"])
            command = (str(new["kind"]), new["name"], new["args_digest"])
            taken.setdefault(new["index"], command)
            if judge(existing, command) is Verdict.REFUSE:
                assert existing is not None
                raise FencedError(refusal(new["index"], existing, command))
        completions: list[Completion] = []
        stored = 0
        for new in entries:
            if new["index"] in self.entries:
                continue
            stored += 1
            error = new.get("error")
            self.entries[new["index"]] = JournalEntry(
                index=new["index"],
                kind=str(new["kind"]),
                name=new["name"],
                args_digest=new["args_digest"],
                completed=new["completed"],
                result=new.get("result"),
                error=dict(error) if error else None,
                manual_digest=new.get("manual_digest"),
                args=new.get("args"),
                attempt=self.attempt,
            )
            if not new["completed"]:
                completion = self._start_waiting(self.entries[new["index"]])
                if completion is not None:
                    completions.append(completion)
        self.appended += stored
        if stored and self.fence_after_append:
            raise FencedError("always_replay: the harness ends every attempt after an append")
        return completions

    def _start_waiting(self, entry: JournalEntry) -> Completion | None:
        args = entry.args if isinstance(entry.args, dict) else None
        plan = plan_wait(entry.kind, args, cancelling=False, signal_buffered=bool(self._signals.get(entry.name)))
        if plan.start is Start.COMPLETE or (plan.start is Start.TIMER and entry.kind == EntryKind.SLEEP):
            # The harness does not wait out sleeps: a sleep completes at once, whatever its length.
            self.complete(entry.index, None)
            return {"index": entry.index, "result": None, "error": None}
        if plan.start is Start.TAKE_SIGNAL:
            payload = self._signals[entry.name].popleft()
            self.complete(entry.index, payload)
            return {"index": entry.index, "result": payload, "error": None}
        return None

    def complete(self, index: int, result: Any, error: ErrorInfo | None = None) -> None:
        """Complete the open entry at ``index`` with ``result`` (or ``error``)."""
        entry = self.entries[index]
        if entry.completed:
            raise ValueError(f"entry {index} is already completed")
        self.entries[index] = replace(
            entry, completed=True, result=None if error else result, error=dict(error) if error else None
        )

    def open_entries(self, kind: str) -> list[JournalEntry]:
        """The entries of ``kind`` still waiting for a result, in index order."""
        return [e for e in self.journal if e.kind == kind and not e.completed]

    def signal(self, name: str, payload: Any) -> int | None:
        """Deliver a signal: complete the oldest open wait for ``name``, or buffer the payload.

        Returns:
            The index of the completed wait, or ``None`` when the payload was buffered.
        """
        for entry in self.open_entries(EntryKind.SIGNAL):
            if entry.name == name:
                self.complete(entry.index, payload)
                return entry.index
        self._signals.setdefault(name, deque()).append(payload)
        return None
