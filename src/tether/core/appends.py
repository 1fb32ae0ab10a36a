"""The journal's append and wait rules, shared by the store (every backend) and the testing sink.

Pure decisions, no I/O: what to do with an entry appended at an index, how a waiting entry
starts, and which status an attempt's outcome leads to. The store applies them inside one
transaction (the run's row locked where several nodes write); :class:`tether.testing.MemorySink`
applies them to a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tether.core.journal import EntryKind
from tether.core.status import RunStatus, can_transition


class Verdict(Enum):
    """What an append does with one entry."""

    STORE = "store"
    """The index is free: store the entry."""
    ACK = "ack"
    """The index holds the same command: acknowledge, keep the stored entry."""
    REFUSE = "refuse"
    """The index holds another command: refuse the whole batch."""


Command = tuple[str, str, str]
"""An entry's identity: (kind, name, args digest)."""


def judge(existing: Command | None, new: Command) -> Verdict:
    """The verdict on appending ``new`` at an index that holds ``existing`` (None: free)."""
    if existing is None:
        return Verdict.STORE
    return Verdict.ACK if tuple(existing) == tuple(new) else Verdict.REFUSE


def refusal(index: int, existing: Command, new: Command) -> str:
    """Why an append at ``index`` is refused."""
    return f"entry {index} already holds {existing[0]} {existing[1]}; refusing {new[0]} {new[1]}"


class Start(Enum):
    """How a waiting entry starts."""

    CANCELLED = "cancelled"
    """The run is being cancelled: the wait completes at once with a Cancelled error."""
    COMPLETE = "complete"
    """Nothing to wait for (a sleep of zero or less): completes at once, no result."""
    TAKE_SIGNAL = "take_signal"
    """A signal of that name is buffered: take the oldest, complete with its payload."""
    TIMER = "timer"
    """Wait for a timer (a sleep, or a signal wait with a timeout)."""
    WAIT = "wait"
    """Wait for a signal with no timeout."""
    CHILD = "child"
    """Create the child run; the entry completes when it ends."""
    INVALID = "invalid"
    """This kind of entry cannot wait."""


@dataclass(frozen=True, slots=True)
class WaitPlan:
    """How to start one waiting entry: ``start``, and the timer's delay for ``TIMER``."""

    start: Start
    delay: float | None = None


def plan_wait(kind: str, args: Mapping[str, Any] | None, *, cancelling: bool, signal_buffered: bool) -> WaitPlan:
    """How a waiting entry of ``kind`` starts.

    Args:
        kind: the entry kind (sleep, signal, child).
        args: the entry's arguments (``seconds``; ``timeout``; ``workflow``/``input``).
        cancelling: the run has been asked to cancel.
        signal_buffered: for a signal wait, a signal of its name waits in the inbox.
    """
    args = args or {}
    if cancelling:
        return WaitPlan(Start.CANCELLED)
    if kind == EntryKind.SLEEP:
        seconds = float(args.get("seconds", 0))
        return WaitPlan(Start.COMPLETE) if seconds <= 0 else WaitPlan(Start.TIMER, seconds)
    if kind == EntryKind.SIGNAL:
        if signal_buffered:
            return WaitPlan(Start.TAKE_SIGNAL)
        timeout = args.get("timeout")
        return WaitPlan(Start.WAIT) if timeout is None else WaitPlan(Start.TIMER, float(timeout))
    if kind == EntryKind.CHILD:
        return WaitPlan(Start.CHILD)
    return WaitPlan(Start.INVALID)


def outcome_status(outcome: Mapping[str, Any], *, cancel_requested: bool) -> RunStatus:
    """The status an attempt's ``outcome`` (as the protocol reports it) moves a running run to.

    ``suspended`` may leave the run ``running`` instead when a wait completed meanwhile, and
    ``retry`` keeps it ``running`` with a later ``ready_at``: the store decides those; a
    ``continue_as_new`` whose successor cannot start fails instead.

    Raises:
        ValueError: for an outcome the protocol does not define.
    """
    kind = outcome.get("outcome")
    if kind in ("completed", "continue_as_new"):
        return RunStatus.COMPLETED
    if kind == "failed":
        error = outcome.get("error") or {}
        cancelled = cancel_requested and error.get("type") == "RunCancelledError"
        return RunStatus.CANCELLED if cancelled else RunStatus.FAILED
    if kind in ("mismatch", "stuck"):
        return RunStatus.STUCK
    if kind == "suspended":
        return RunStatus.SUSPENDED
    if kind == "retry":
        return RunStatus.RUNNING
    raise ValueError(f"unknown attempt outcome {kind!r}")


class TransitionError(ValueError):
    """A status change the run life cycle does not allow."""


def transition(current: RunStatus | str, target: RunStatus | str) -> RunStatus:
    """``target``, once checked against the life cycle.

    Raises:
        TransitionError: ``current`` may not move to ``target``.
    """
    now, then = RunStatus(current), RunStatus(target)
    if not can_transition(now, then):
        raise TransitionError(f"a {now.value} run cannot become {then.value}")
    return then
