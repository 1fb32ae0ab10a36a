"""tether.testing itself: the in-memory sink's store rules and the harness's edges."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

import tether
from tether.core.journal import JournalEntry
from tether.errors import FencedError
from tether.protocol import Completion, NewEntry
from tether.testing import MemorySink, WorkflowHarness, replay


def entry(
    index: int, name: str = "a", digest: str = "00", *, kind: str = "step", completed: bool = True, **more: Any
) -> NewEntry:
    new: NewEntry = {"index": index, "kind": kind, "name": name, "args_digest": digest, "completed": completed}
    return cast(NewEntry, {**new, **more})


def append(sink: MemorySink, *entries: NewEntry) -> list[Completion]:
    return asyncio.run(sink.append(list(entries)))


def test_sink_stores_by_index_with_the_attempt() -> None:
    sink = MemorySink()
    sink.attempt = 2
    append(sink, entry(1, result="b"), entry(0, result="a"))
    assert [(e.index, e.result, e.attempt) for e in sink.journal] == [(0, "a", 2), (1, "b", 2)]


def test_sink_acknowledges_an_identical_duplicate_and_keeps_the_first() -> None:
    sink = MemorySink()
    append(sink, entry(0, result="first"))
    assert append(sink, entry(0, result="second")) == []
    assert sink.journal[0].result == "first"
    assert sink.appended == 1


@pytest.mark.parametrize(
    "different", [entry(0, name="b"), entry(0, digest="11"), entry(0, kind="run")], ids=["name", "args", "kind"]
)
def test_sink_refuses_a_different_entry_and_stores_none_of_the_batch(different: NewEntry) -> None:
    sink = MemorySink()
    append(sink, entry(0))
    with pytest.raises(FencedError, match="entry 0 already holds step a"):
        append(sink, entry(1), different)
    assert [e.index for e in sink.journal] == [0]


def test_sink_completes_sleeps_at_once() -> None:
    sink = MemorySink()
    sleep = entry(0, name="sleep", kind="sleep", completed=False, args={"seconds": 5})
    assert append(sink, sleep) == [{"index": 0, "result": None, "error": None}]
    assert sink.journal[0].completed


def test_sink_hands_buffered_signals_out_in_order() -> None:
    sink = MemorySink()
    assert sink.signal("go", 1) is None
    assert sink.signal("go", 2) is None
    waits = [entry(i, name="go", kind="signal", completed=False) for i in range(3)]
    completions = append(sink, *waits)
    assert completions == [{"index": 0, "result": 1, "error": None}, {"index": 1, "result": 2, "error": None}]
    assert [e.index for e in sink.open_entries("signal")] == [2]
    assert sink.signal("go", 3) == 2
    assert sink.journal[2].result == 3
    with pytest.raises(ValueError, match="already completed"):
        sink.complete(2, 4)


def test_sink_fence_after_append_stores_then_refuses() -> None:
    sink = MemorySink()
    sink.fence_after_append = True
    with pytest.raises(FencedError, match="always_replay"):
        append(sink, entry(0))
    assert [e.index for e in sink.journal] == [0]
    assert append(sink, entry(0)) == []


app = tether.App("harness")


@app.function
async def noop(i: int) -> int:
    return i


@app.workflow
async def steps(ctx: tether.Context, n: int) -> int:
    for i in range(n):
        await ctx.step(noop, i)
    return n


@app.workflow
async def broken(ctx: tether.Context) -> None:
    raise KeyError("boom")


def test_a_harness_drives_one_run() -> None:
    async def go() -> None:
        harness = WorkflowHarness(app)
        with pytest.raises(RuntimeError, match=r"call run\(\) before resume\(\)"):
            await harness.resume()
        await harness.run("steps", {"n": 1})
        with pytest.raises(RuntimeError, match="drives one run"):
            await harness.run("steps", {"n": 1})

    asyncio.run(go())


def test_a_harness_gives_up_after_max_attempts() -> None:
    harness = WorkflowHarness(app, always_replay=True, max_attempts=3)
    with pytest.raises(RuntimeError, match="did not settle in 3 attempts"):
        asyncio.run(harness.run("steps", {"n": 5}))


def test_a_failing_workflow_reports_its_error() -> None:
    result = asyncio.run(WorkflowHarness(app).run("broken"))
    assert result.outcome == "failed"
    assert result.error is not None
    assert (result.error["type"], result.error["message"]) == ("KeyError", "'boom'")


def test_run_refuses_an_undecorated_function() -> None:
    async def plain(ctx: tether.Context) -> None:
        return None

    with pytest.raises(TypeError, match="not a registered workflow"):
        asyncio.run(WorkflowHarness(app).run(plain))


def test_time_out_needs_an_open_wait() -> None:
    with pytest.raises(LookupError, match="does not wait on signal 'x'"):
        WorkflowHarness(app).time_out("x")


def test_replay_accepts_entries_or_their_json() -> None:
    harness = WorkflowHarness(app)
    asyncio.run(harness.run("steps", {"n": 2}))
    as_json = [e.to_json() for e in harness.journal]
    assert [JournalEntry.from_json(e) for e in as_json] == harness.journal
    for journal in (harness.journal, as_json):
        assert asyncio.run(replay(app, steps, {"n": 2}, journal)) == {"outcome": "completed", "output": 2}
