"""Mistakes caught where they are made: at registration, or when a run's output contradicts
its declared return type — never as a confusing failure of every run later."""

from __future__ import annotations

import asyncio
import threading

import pytest
from pydantic import BaseModel

import tether
from tether.testing import WorkflowHarness


def test_a_workflow_without_the_context_first_is_refused_saying_what_to_write() -> None:
    app = tether.App("mistakes")
    with pytest.raises(TypeError) as refused:

        @app.workflow
        async def greet(name: str) -> str:
            return name

    assert "async def greet(ctx: tether.Context, name) -> ..." in str(refused.value)
    with pytest.raises(TypeError, match="must take the context"):

        @app.workflow
        async def nothing() -> str:
            return ""

    # Unannotated or annotated with the Context: both are the context.
    @app.workflow
    async def plain(ctx, name: str) -> str:  # type: ignore[no-untyped-def]
        return name

    assert "plain" in app.components


def test_types_that_cannot_be_json_are_refused_at_registration() -> None:
    app = tether.App("mistakes")
    with pytest.raises(TypeError) as parameter:

        @app.function
        async def lock(guard: threading.Lock) -> int:  # type: ignore[valid-type]
            return 1

    assert "parameter 'guard'" in str(parameter.value) and "pydantic model" in str(parameter.value)
    with pytest.raises(TypeError) as returned:

        @app.workflow
        async def handle(ctx: tether.Context) -> asyncio.Event:
            return asyncio.Event()

    assert "the return type is Event" in str(returned.value)


def test_a_foreign_model_object_is_refused_naming_what_to_pass() -> None:
    app = tether.App("mistakes")
    with pytest.raises(TypeError) as refused:
        app.agent("helper", model="gpt-4o-mini", instructions="Help.")  # type: ignore[arg-type]
    assert "tether.Model('openai:gpt-4o-mini')" in str(refused.value) and "app.register" in str(refused.value)


class Verdict(BaseModel):
    block: bool
    score: int


def test_an_output_its_return_type_rejects_fails_the_run_naming_the_field() -> None:
    app = tether.App("mistakes")

    @app.workflow
    async def count(ctx: tether.Context) -> int:
        return "many"  # type: ignore[return-value]

    @app.workflow
    async def decide(ctx: tether.Context) -> Verdict:
        return {"block": True, "score": "high"}  # type: ignore[return-value]

    @app.workflow
    async def fine(ctx: tether.Context) -> Verdict:
        return Verdict(block=False, score=3)

    counted = asyncio.run(WorkflowHarness(app).run("count"))
    assert counted.outcome == "failed" and counted.error is not None
    assert counted.error["type"] == "OutputInvalid" and "returned a value its declared return type rejects" in str(
        counted.error["message"]
    )
    decided = asyncio.run(WorkflowHarness(app).run("decide"))
    assert decided.outcome == "failed" and decided.error is not None
    assert "score: Input should be a valid integer" in str(decided.error["message"])
    ok = asyncio.run(WorkflowHarness(app, always_replay=True).run("fine"))
    assert (ok.outcome, ok.output) == ("completed", {"block": False, "score": 3})
