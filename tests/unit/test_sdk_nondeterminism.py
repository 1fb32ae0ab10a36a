"""Non-deterministic calls in a workflow's own code stop the run ``stuck`` at the line that made
them, with what to use instead; steps, the standard library and tether's own calls are free."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from datetime import datetime

import pytest

import tether
from tether.testing import WorkflowHarness

HERE = __file__


def line_of(marker: str) -> int:
    """The line of this file holding ``marker`` (so the tests do not hard-code numbers)."""
    with open(HERE) as f:
        return next(i for i, text in enumerate(f, 1) if marker in text and "line_of(" not in text)


app = tether.App("nondeterminism")


@app.workflow
async def clock(ctx: tether.Context) -> float:
    return time.time()  # MARK-clock


@app.workflow
async def nap(ctx: tether.Context) -> str:
    await ctx.step(stamp)
    await asyncio.sleep(0.01)  # MARK-nap
    return "rested"


@app.workflow
async def dice(ctx: tether.Context) -> float:
    return random.random()  # MARK-dice


def helper() -> str:
    return str(uuid.uuid4())  # MARK-helper


@app.workflow
async def ident(ctx: tether.Context) -> str:
    return helper()


@app.function
async def stamp() -> str:
    """A step may do anything: read the clock, sleep, draw random numbers."""
    await asyncio.sleep(0)
    return f"{time.time()} {time.monotonic()} {random.random()} {uuid.uuid4()} {datetime.now()}"


@app.function
async def slow() -> str:
    await asyncio.sleep(0.05)
    return "done"


@app.workflow
async def fine(ctx: tether.Context) -> str:
    logging.getLogger("fine").info("the logger reads the clock, which is not the workflow's doing")
    text = await ctx.step(stamp)
    inline = await ctx.run("inline", lambda: datetime.now().isoformat())
    return f"{text} {inline} {ctx.now()} {ctx.uuid()} {ctx.random()}"


@app.workflow
async def forgets(ctx: tether.Context) -> str:
    ctx.step(slow)  # MARK-forgets
    return "returned early"


@pytest.mark.parametrize(
    ("workflow", "marker", "call", "instead"),
    [
        ("clock", "MARK-clock", "time.time()", "ctx.now()"),
        ("nap", "MARK-nap", "asyncio.sleep()", "await ctx.sleep(...)"),
        ("dice", "MARK-dice", "random.random()", "ctx.random()"),
        ("ident", "MARK-helper", "uuid.uuid4()", "ctx.uuid()"),
    ],
)
def test_a_nondeterministic_call_in_the_workflow_stops_the_run_at_its_line(
    workflow: str, marker: str, call: str, instead: str, always_replay: bool
) -> None:
    result = asyncio.run(WorkflowHarness(app, always_replay=always_replay).run(workflow))
    assert result.outcome == "stuck", result
    assert result.error is not None and result.error["type"] == "NonDeterministicCall"
    message = result.error["message"]
    assert f"{HERE}:{line_of(marker)}: workflow {workflow} called {call}" in message
    assert f"Use {instead}" in message and "tether runs move" in message


def test_steps_ctx_run_loggers_and_the_context_s_own_values_are_not_flagged(always_replay: bool) -> None:
    result = asyncio.run(WorkflowHarness(app, always_replay=always_replay).run("fine"))
    assert result.outcome == "completed", result


def test_outside_a_workflow_the_guarded_functions_behave_as_before() -> None:
    asyncio.run(WorkflowHarness(app).run("clock"))  # installs the guards
    assert abs(time.time() - datetime.now().timestamp()) < 5
    assert 0 <= random.random() < 1 and uuid.uuid4().version == 4
    assert asyncio.run(asyncio.sleep(0, result="slept")) == "slept"
    assert getattr(time.time, "__wrapped__", None) is not None, "the guard is installed"


def test_a_step_the_workflow_never_awaited_is_reported_where_it_was_started() -> None:
    result = asyncio.run(WorkflowHarness(app).run("forgets"))
    assert result.outcome == "stuck" and result.error is not None, result
    assert result.error["type"] == "UnawaitedCommand"
    assert (
        f"{HERE}:{line_of('MARK-forgets')}: workflow forgets returned while ctx.step(slow)" in result.error["message"]
    )
    assert "await ctx.step(...)" in result.error["message"]


def test_the_warning_reaches_the_worker_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tether.workflow"):
        asyncio.run(WorkflowHarness(app, run_id="run-logged").run("clock"))
    assert any("run run-logged stuck" in r.getMessage() and "time.time()" in r.getMessage() for r in caplog.records)


def test_datetime_now_in_a_workflow_body_is_refused_at_registration() -> None:
    other = tether.App("clocks")
    with pytest.raises(TypeError) as refused:

        @other.workflow
        async def today(ctx: tether.Context) -> str:
            return datetime.now().isoformat()  # MARK-now

    assert f"{HERE}:{line_of('MARK-now')}: workflow today calls datetime.now()" in str(refused.value)
    assert "use ctx.now()" in str(refused.value)

    @other.workflow
    async def inline(ctx: tether.Context) -> str:
        return str(await ctx.run("stamp", lambda: datetime.now().isoformat()))

    assert "inline" in other.components


def test_a_set_is_refused_where_it_is_declared_saying_to_use_a_list() -> None:
    other = tether.App("sets")
    with pytest.raises(TypeError) as returned:

        @other.workflow
        async def tags(ctx: tether.Context) -> set[str]:
            return {"a"}

    assert "the return type is (or holds) a set" in str(returned.value) and "list[...]" in str(returned.value)
    with pytest.raises(TypeError, match="parameter 'seen' is \\(or holds\\) a set"):

        @other.function
        async def count(seen: dict[str, frozenset[int]]) -> int:
            return len(seen)
