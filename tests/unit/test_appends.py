"""core.appends: the append and wait rules the store and the testing sink share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.appends import (
    Start,
    TransitionError,
    Verdict,
    judge,
    outcome_status,
    plan_wait,
    transition,
)
from tether.core.status import RunStatus, can_transition
from tether.errors import FencedError
from tether.protocol import NewEntry
from tether.testing._sink import MemorySink

commands = st.tuples(
    st.sampled_from(["step", "llm", "state"]), st.sampled_from(["a", "b"]), st.sampled_from(["d0", "d1"])
)


@given(commands, commands)
def test_an_index_takes_one_command_and_acknowledges_only_that_one(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    assert judge(None, a) is Verdict.STORE
    assert judge(a, a) is Verdict.ACK
    assert (judge(a, b) is Verdict.REFUSE) == (a != b)


def _entry(index: int, command: tuple[str, str, str]) -> NewEntry:
    kind, name, digest = command
    return {"index": index, "kind": kind, "name": name, "args_digest": digest, "completed": True, "result": index}


batches = st.lists(st.lists(st.tuples(st.integers(0, 6), commands), min_size=1, max_size=4), max_size=8)


@given(batches)
def test_the_sink_never_forks_an_index_and_a_refused_batch_stores_nothing(plan: list[Any]) -> None:
    sink = MemorySink()
    first: dict[int, tuple[str, str, str]] = {}

    async def go() -> None:
        for batch in plan:
            before = dict(sink.entries)
            entries = [_entry(i, c) for i, c in batch]
            try:
                await sink.append(entries)
            except FencedError:
                assert sink.entries == before
                # Refused only for a contradiction: with the journal, or within the batch.
                seen = {i: (e.kind, e.name, e.args_digest) for i, e in before.items()}
                contradictions = [seen.setdefault(i, c) != c for i, c in batch]
                assert any(contradictions)
                continue
            for i, c in batch:
                first.setdefault(i, c)
            # A replay of the same batch is acknowledged and changes nothing.
            after = dict(sink.entries)
            await sink.append(entries)
            assert sink.entries == after

    asyncio.run(go())
    assert {i: (e.kind, e.name, e.args_digest) for i, e in sink.entries.items()} == first


@given(st.floats(-10, 10, allow_nan=False), st.booleans())
def test_a_sleep_waits_for_a_timer_unless_it_is_not_positive(seconds: float, cancelling: bool) -> None:
    plan = plan_wait("sleep", {"seconds": seconds}, cancelling=cancelling, signal_buffered=False)
    if cancelling:
        assert plan.start is Start.CANCELLED
    elif seconds <= 0:
        assert plan.start is Start.COMPLETE
    else:
        assert (plan.start, plan.delay) == (Start.TIMER, seconds)


@given(st.one_of(st.none(), st.floats(0.1, 100)), st.booleans())
def test_a_signal_wait_takes_a_buffered_signal_first(timeout: float | None, buffered: bool) -> None:
    plan = plan_wait("signal", {"timeout": timeout}, cancelling=False, signal_buffered=buffered)
    if buffered:
        assert plan.start is Start.TAKE_SIGNAL
    elif timeout is None:
        assert plan.start is Start.WAIT
    else:
        assert (plan.start, plan.delay) == (Start.TIMER, timeout)


def test_only_sleeps_signals_and_children_wait() -> None:
    assert plan_wait("child", {}, cancelling=False, signal_buffered=False).start is Start.CHILD
    assert plan_wait("step", {}, cancelling=False, signal_buffered=False).start is Start.INVALID


outcomes = st.fixed_dictionaries(
    {
        "outcome": st.sampled_from(
            ["completed", "failed", "mismatch", "stuck", "suspended", "retry", "continue_as_new"]
        ),
        "error": st.fixed_dictionaries({"type": st.sampled_from(["RunCancelledError", "ValueError"])}),
    }
)


@given(outcomes, st.booleans())
def test_every_outcome_leads_a_running_run_where_the_life_cycle_allows(outcome: dict[str, Any], cancel: bool) -> None:
    status = outcome_status(outcome, cancel_requested=cancel)
    assert can_transition(RunStatus.RUNNING, status)
    if outcome["outcome"] == "failed":
        expected = cancel and outcome["error"]["type"] == "RunCancelledError"
        assert (status is RunStatus.CANCELLED) == expected


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown attempt outcome"):
        outcome_status({"outcome": "vanished"}, cancel_requested=False)


@given(st.sampled_from(list(RunStatus)), st.sampled_from(list(RunStatus)))
def test_transition_enforces_the_life_cycle(current: RunStatus, target: RunStatus) -> None:
    if can_transition(current, target):
        assert transition(current.value, target.value) is target
    else:
        with pytest.raises(TransitionError, match=f"a {current.value} run cannot become {target.value}"):
            transition(current, target)
