"""core.status: the run life cycle."""

from __future__ import annotations

import pytest

from tether.core.status import IN_FLIGHT, TERMINAL, RunStatus, can_transition


def test_terminal_and_in_flight_partition_the_statuses() -> None:
    assert TERMINAL | IN_FLIGHT == set(RunStatus)
    assert not TERMINAL & IN_FLIGHT
    assert {s for s in RunStatus if s.terminal} == {"completed", "failed", "cancelled", "killed"}


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_statuses_never_change(status: RunStatus) -> None:
    assert not any(can_transition(status, target) for target in RunStatus)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("pending", "running"),
        ("running", "suspended"),
        ("suspended", "running"),
        ("running", "stuck"),
        ("stuck", "pending"),
        ("running", "completed"),
        ("paused", "pending"),
    ],
)
def test_allowed(current: str, target: str) -> None:
    assert can_transition(RunStatus(current), RunStatus(target))


@pytest.mark.parametrize(
    ("current", "target"),
    [("pending", "completed"), ("suspended", "completed"), ("stuck", "running"), ("pending", "suspended")],
)
def test_refused(current: str, target: str) -> None:
    assert not can_transition(RunStatus(current), RunStatus(target))
