"""Run statuses and the transitions between them (DESIGN.md, "Run statuses")."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    PAUSED = "paused"
    STUCK = "stuck"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    KILLED = "killed"

    @property
    def terminal(self) -> bool:
        """Whether the run can never change again."""
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.KILLED})
"""Statuses a run never leaves."""

IN_FLIGHT = frozenset(RunStatus) - TERMINAL
"""Statuses that hold a deployment: the run may still execute code on it."""

_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.CANCELLED, RunStatus.KILLED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.RUNNING,
            RunStatus.SUSPENDED,
            RunStatus.STUCK,
            RunStatus.PAUSED,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.KILLED,
        }
    ),
    RunStatus.SUSPENDED: frozenset({RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.CANCELLED, RunStatus.KILLED}),
    RunStatus.PAUSED: frozenset({RunStatus.PENDING, RunStatus.SUSPENDED, RunStatus.CANCELLED, RunStatus.KILLED}),
    # A stuck run goes on when an operator moves it to code that replays it.
    RunStatus.STUCK: frozenset({RunStatus.SUSPENDED, RunStatus.PENDING, RunStatus.CANCELLED, RunStatus.KILLED}),
}


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    """Whether a run in ``current`` may move to ``target``.

    Args:
        current: the run's status now.
        target: the status asked for.

    Returns:
        True when the transition is allowed by the run life cycle.
    """
    return target in _TRANSITIONS.get(current, frozenset())
