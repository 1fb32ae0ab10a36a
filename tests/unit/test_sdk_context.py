"""The Context as workflows use it, driven by tether.testing.WorkflowHarness.

Most tests run twice (the ``always_replay`` fixture): straight through, and with a full replay
after every new entry, which must not change what the workflow observes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import tether
from tether.core.journal import args_digest
from tether.testing import RunResult, WorkflowHarness, replay

app = tether.App("sdk")
calls: list[str] = []
"""Every function call, by name: the counting idiom's counter."""
bodies: list[str] = []
"""Every time a workflow body starts."""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    calls.clear()
    bodies.clear()
    yield


@app.function
async def add(x: int, y: int) -> int:
    calls.append("add")
    return x + y


@app.function
async def slow(name: str, delay: float) -> str:
    calls.append(name)
    await asyncio.sleep(delay)
    return name


@app.function(retry=tether.RetryPolicy(max_attempts=3, initial_interval=0))
async def flaky(succeed_on: int) -> str:
    calls.append("flaky")
    if len(calls) < succeed_on:
        raise ConnectionError(f"try {len(calls)} failed")
    return f"ok after {len(calls)}"


@app.function(retry=tether.RetryPolicy(max_attempts=5, initial_interval=0))
async def refuse(reason: str) -> str:
    calls.append("refuse")
    raise tether.TerminalError(reason)


@app.workflow
async def chain(ctx: tether.Context, n: int) -> int:
    bodies.append("chain")
    total = 0
    for i in range(n):
        total = await ctx.step(add, total, i)
    return total


def run(workflow: str, input: dict[str, Any] | None = None, *, always_replay: bool = False) -> RunResult:
    return asyncio.run(WorkflowHarness(app, always_replay=always_replay).run(workflow, input))


def harness_run(harness: WorkflowHarness, workflow: str, input: dict[str, Any] | None = None) -> RunResult:
    return asyncio.run(harness.run(workflow, input))


# --- determinism --------------------------------------------------------------------------


def test_counting_idiom_each_step_executes_once(always_replay: bool) -> None:
    result = run("chain", {"n": 4}, always_replay=always_replay)
    assert (result.outcome, result.output) == ("completed", 0 + 1 + 2 + 3)
    assert calls == ["add"] * 4
    assert len(bodies) == (5 if always_replay else 1)
    assert result.attempts == len(bodies)


@app.workflow
async def pair(ctx: tether.Context) -> list[str]:
    return list(await asyncio.gather(ctx.step(slow, "a", 0.03), ctx.step(slow, "b", 0.0)))


def test_gather_assigns_indexes_at_issue(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = harness_run(harness, "pair")
    assert (result.outcome, result.output) == ("completed", ["a", "b"])
    assert [(e.index, e.name, e.result) for e in harness.journal] == [(0, "slow", "a"), (1, "slow", "b")]
    assert harness.journal[1].args == {"name": "b", "delay": 0.0}


@app.workflow
async def values(ctx: tether.Context) -> list[Any]:
    await ctx.step(add, 1, 2)
    return [ctx.now().isoformat(), str(ctx.uuid()), ctx.random()]


def test_now_uuid_random_come_back_identical_on_replay(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = harness_run(harness, "values")
    assert result.outcome == "completed"
    assert [e.kind for e in harness.journal] == ["step", "now", "uuid", "random"]
    assert result.output[1] == harness.journal[2].result
    assert result.output[2] == harness.journal[3].result
    again = asyncio.run(replay(app, "values", {}, harness.journal))
    assert again == {"outcome": "completed", "output": result.output}
    assert calls == ["add"]


# --- steps and retries --------------------------------------------------------------------


@app.workflow
async def retrying(ctx: tether.Context, succeed_on: int) -> str:
    try:
        return await ctx.step(flaky, succeed_on)
    except tether.StepFailedError as exc:
        return f"gave up: {exc.error_type}: {exc.reason}"


def test_a_step_is_retried_until_it_succeeds(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = harness_run(harness, "retrying", {"succeed_on": 3})
    assert result.output == "ok after 3"
    assert calls == ["flaky"] * 3
    assert [(e.kind, e.name, e.result, e.error) for e in harness.journal] == [("step", "flaky", "ok after 3", None)]


def test_exhausted_retries_journal_the_failure(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = harness_run(harness, "retrying", {"succeed_on": 99})
    assert result.output == "gave up: ConnectionError: try 3 failed"
    assert calls == ["flaky"] * 3
    assert harness.journal[0].error == {"type": "ConnectionError", "message": "try 3 failed"}


@app.workflow
async def refusing(ctx: tether.Context, catch: bool) -> str:
    try:
        return await ctx.step(refuse, "no")
    except tether.StepFailedError as exc:
        if not catch:
            raise
        return f"{exc.name}: {exc.error_type}: {exc.reason}"


def test_terminal_error_is_not_retried_and_surfaces_as_step_failed(always_replay: bool) -> None:
    result = run("refusing", {"catch": True}, always_replay=always_replay)
    assert result.output == "refuse: TerminalError: no"
    assert calls == ["refuse"]


def test_an_uncaught_step_failure_fails_the_run() -> None:
    result = run("refusing", {"catch": False})
    assert result.outcome == "failed"
    assert result.error is not None
    assert (result.error["type"], result.error["message"]) == (
        "StepFailedError",
        "step refuse failed: TerminalError: no",
    )
    assert "Traceback" in result.error.get("traceback", "")


def roll() -> int:
    calls.append("roll")
    return 4


@app.workflow
async def inline(ctx: tether.Context) -> int:
    bodies.append("inline")
    value = await ctx.run("roll", roll)
    await ctx.step(add, 0, 0)
    return int(value)


def test_run_journals_an_inline_side_effect_once(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    assert harness_run(harness, "inline").output == 4
    assert calls == ["roll", "add"]
    assert (harness.journal[0].kind, harness.journal[0].name, harness.journal[0].result) == ("run", "roll", 4)


@app.workflow
async def unregistered(ctx: tether.Context) -> int:
    async def helper() -> int:
        return 1

    return await ctx.step(helper)


def test_stepping_an_unregistered_function_is_a_type_error() -> None:
    result = run("unregistered")
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error["type"] == "TypeError"
    assert "'helper' is not a registered function or tool" in result.error["message"]


# --- mismatch -----------------------------------------------------------------------------

app_v2 = tether.App("sdk")


@app_v2.function(name="add")
async def add_v2(x: int, y: int) -> int:
    return x + y


@app_v2.workflow(name="chain")
async def chain_v2(ctx: tether.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total = await ctx.step(add_v2, total, i * 10 if i == 2 else i)
    return total


@app_v2.workflow(name="values")
async def values_v2(ctx: tether.Context) -> list[Any]:
    await ctx.step(add_v2, 1, 2)
    return [ctx.now().isoformat()]


def test_changed_code_is_a_mismatch_at_the_changed_index() -> None:
    harness = WorkflowHarness(app)
    harness_run(harness, "chain", {"n": 4})
    response = asyncio.run(replay(app_v2, "chain", {"n": 4}, harness.journal))
    assert response["outcome"] == "mismatch"
    old, new = args_digest({"x": 1, "y": 2}), args_digest({"x": 1, "y": 20})
    assert response["mismatch"] == {
        "index": 2,
        "expected": f"step add(#{old[:4]})",
        "issued": f"step add(#{new[:4]})",
        "reason": "args",
        "message": f"entry 2: journal has step add(#{old[:4]}), code issued step add(#{new[:4]})",
    }


def test_code_that_stops_early_is_a_mismatch() -> None:
    harness = WorkflowHarness(app)
    harness_run(harness, "values")
    response = asyncio.run(replay(app_v2, "values", {}, harness.journal))
    assert response["outcome"] == "mismatch"
    assert response["mismatch"]["index"] == 2
    no_args = args_digest(None)[:4]
    assert (
        response["mismatch"]["message"]
        == f"entry 2: journal has uuid uuid(#{no_args}), code finished without issuing it"
    )


# --- signals, sleeps, state, children -----------------------------------------------------


@app.workflow(signals={"approval": bool})
async def gated(ctx: tether.Context, who: str) -> str:
    bodies.append("gated")
    await ctx.step(add, 1, 1)
    ok = await ctx.signal("approval")
    return f"{who}: {'approved' if ok else 'rejected'}"


def test_a_signal_wait_suspends_and_the_signal_resumes_it(always_replay: bool) -> None:
    async def go() -> None:
        harness = WorkflowHarness(app, always_replay=always_replay)
        first = await harness.run(gated, {"who": "ada"})
        assert (first.outcome, first.waiting_on) == ("suspended", [1])
        assert harness.journal[1].completed is False
        harness.signal("approval", True)
        second = await harness.resume()
        assert (second.outcome, second.output) == ("completed", "ada: approved")
        assert harness.responses[-2:] == [{"outcome": "suspended", "waiting_on": [1]}, second_response(second)]

    asyncio.run(go())
    assert calls == ["add"]


def second_response(result: RunResult) -> dict[str, Any]:
    return {"outcome": result.outcome, "output": result.output}


def test_a_signal_sent_early_is_buffered() -> None:
    harness = WorkflowHarness(app)
    harness.signal("approval", False)
    result = harness_run(harness, "gated", {"who": "bob"})
    assert (result.outcome, result.output, result.attempts) == ("completed", "bob: rejected", 1)


def test_harness_validates_signals_like_the_runtime() -> None:
    async def go() -> None:
        harness = WorkflowHarness(app)
        await harness.run("gated", {"who": "ada"})
        with pytest.raises(tether.TetherError, match="declares no signal 'nope'") as not_found:
            harness.signal("nope", 1)
        assert not_found.value.code == "not_found"
        with pytest.raises(tether.TetherError, match="signal approval: ") as bad:
            harness.signal("approval", {"not": "a bool"})
        assert bad.value.code == "schema_violation"

    asyncio.run(go())


@app.workflow(signals={"approval": bool})
async def asks_undeclared(ctx: tether.Context) -> Any:
    return await ctx.signal("nope")


def test_waiting_on_an_undeclared_signal_is_a_type_error() -> None:
    result = run("asks_undeclared")
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error["type"] == "TypeError"
    assert "does not declare signal 'nope'" in result.error["message"]


@app.workflow(signals={"approval": bool})
async def patient(ctx: tether.Context) -> str:
    try:
        await ctx.signal("approval", timeout=60)
    except tether.SignalTimeoutError as exc:
        return f"timed out: {exc.name}"
    return "signalled"


def test_a_signal_timeout_raises_in_the_workflow() -> None:
    async def go() -> RunResult:
        harness = WorkflowHarness(app)
        assert (await harness.run("patient")).outcome == "suspended"
        harness.time_out("approval")
        return await harness.resume()

    assert asyncio.run(go()).output == "timed out: approval"


@app.workflow
async def napping(ctx: tether.Context) -> int:
    await ctx.sleep(3600)
    return await ctx.step(add, 2, 3)


def test_sleep_completes_at_once_in_the_harness(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    assert harness_run(harness, "napping").output == 5
    sleep = harness.journal[0]
    assert (sleep.kind, sleep.args, sleep.completed) == ("sleep", {"seconds": 3600.0}, True)


@app.workflow
async def stateful(ctx: tether.Context) -> str:
    ctx.set("phase", "scoring")
    await ctx.step(add, 1, 1)
    ctx.set("phase", {"done": True})
    return "ok"


def test_set_journals_state_entries(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    assert harness_run(harness, "stateful").output == "ok"
    assert [(e.kind, e.name, e.result) for e in harness.journal] == [
        ("state", "phase", "scoring"),
        ("step", "add", 2),
        ("state", "phase", {"done": True}),
    ]
    assert harness.journal[2].args_digest == args_digest({"done": True})


@app.workflow
async def kid(ctx: tether.Context, x: int) -> int:
    bodies.append("kid")
    if x < 0:
        raise ValueError("negative")
    return await ctx.step(add, x, 100)


@app.workflow
async def parent(ctx: tether.Context, x: int) -> str:
    try:
        value = await ctx.child(kid, {"x": x})
    except tether.ChildFailedError as exc:
        return f"child failed: {exc.error_type}: {exc.reason}"
    return f"child said {value}"


def test_a_child_runs_and_completes_the_parent_entry(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = harness_run(harness, "parent", {"x": 1})
    assert (result.outcome, result.output) == ("completed", "child said 101")
    assert calls == ["add"]
    entry = harness.journal[0]
    assert (entry.kind, entry.name, entry.args, entry.result) == (
        "child",
        "kid",
        {"workflow": "kid", "input": {"x": 1}},
        101,
    )
    assert harness.children[0].run_id == "run-1.0"
    assert [e.kind for e in harness.children[0].journal] == ["step"]


def test_a_failed_child_raises_child_failed(always_replay: bool) -> None:
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = harness_run(harness, "parent", {"x": -1})
    assert result.output == "child failed: ValueError: negative"
    assert harness.journal[0].error == {"type": "ValueError", "message": "negative"}


@app.workflow
async def introspective(ctx: tether.Context) -> dict[str, Any]:
    info = ctx.info
    await ctx.step(add, 0, 0)
    return {"run": info.run_id, "dep": info.deployment_id, "label": info.deployment_label, "wf": info.workflow}


def test_info_describes_the_run() -> None:
    result = run("introspective")
    assert result.output == {"run": "run-1", "dep": "dep_test", "label": "v1", "wf": "introspective"}
