"""ctx.continue_as_new in the SDK: journaled once, never returns, replays identically."""

from __future__ import annotations

import asyncio

import pytest

import tether
from tether.testing import WorkflowHarness

app = tether.App("continue")
steps: list[int] = []


@app.function
async def work(n: int) -> int:
    steps.append(n)
    return n


@app.workflow
async def loop(ctx: tether.Context, n: int) -> int:
    await ctx.step(work, n)
    try:
        ctx.continue_as_new({"n": n + 1}, upgrade=False)
    except Exception:  # a broad except in user code must not swallow it
        return -1
    return -2


@app.workflow
async def bad(ctx: tether.Context, n: int) -> int:
    ctx.continue_as_new({"n": "not a number"})


@pytest.mark.parametrize("always_replay", [False, True])
def test_continue_as_new_ends_the_run_with_the_next_input(always_replay: bool) -> None:
    steps.clear()
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = asyncio.run(harness.run("loop", {"n": 1}))
    assert (result.outcome, result.output) == ("continue_as_new", {"input": {"n": 2}, "upgrade": False})
    assert [e.kind for e in harness.journal] == ["step", "continue_as_new"]
    assert steps == [1]


def test_continue_as_new_validates_the_next_input() -> None:
    result = asyncio.run(WorkflowHarness(app).run("bad", {"n": 1}))
    assert result.outcome == "failed" and result.error is not None
    assert result.error["type"] == "SchemaError" and "n: Input should be a valid integer" in result.error["message"]
