"""Agents in the SDK: the durable loop, the manual, errors; model calls over real loopback HTTP.

The scripted model server runs in a thread on 127.0.0.1; the workflow runs in-process
through ``tether.testing`` (the runtime's end-to-end path is in tests/e2e/test_agents.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from pydantic import BaseModel

import tether
from tether.testing import WorkflowHarness
from tether.testing.model_server import Script, create_model_app


class ScriptedModel:
    """The scripted model server in a thread; swap ``script``; ``requests`` lists what it got."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: Script = lambda request: {"role": "assistant", "content": "hello"}

        def recorded(request: dict[str, Any]) -> dict[str, Any]:
            self.requests.append(request)
            return self.script(request)

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(create_model_app(recorded), log_level="error", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedModel]:
    server = ScriptedModel()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh(model: ScriptedModel) -> None:
    model.requests.clear()


def call_tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        ],
    }


def answer(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content if isinstance(content, str) else json.dumps(content)}


class Total(BaseModel):
    total: int


def calculator_app(url: str, *, description: str = "Adds two integers.", max_turns: int = 4) -> Any:
    app = tether.App("calc")
    calls: list[tuple[int, int]] = []

    @app.tool
    async def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    app.components["add"].description = description  # as if its docstring said so
    agent = app.agent(
        "calculator",
        model=tether.Model("openai:scripted", base_url=url, temperature=0),
        instructions="Add the numbers.",
        tools=[add],
        output_type=Total,
        max_turns=max_turns,
    )

    @app.workflow
    async def compute(ctx: tether.Context, prompt: str) -> Total:
        result: Total = await ctx.agent(agent, prompt)
        return result

    return app, agent, calls


def two_turns(request: dict[str, Any]) -> dict[str, Any]:
    last = request["messages"][-1]
    if last["role"] == "user":
        return call_tool("add", a=2, b=3)
    return answer({"total": int(last["content"])})


@pytest.mark.parametrize("always_replay", [False, True])
def test_the_agent_loop_journals_each_model_call_and_tool_call_once(model: ScriptedModel, always_replay: bool) -> None:
    model.script = two_turns
    app, agent, calls = calculator_app(model.url)
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = asyncio.run(harness.run("compute", {"prompt": "2 + 3?"}))
    assert (result.outcome, result.output) == ("completed", {"total": 5})
    assert [e.kind for e in harness.journal] == ["llm", "step", "llm"]
    # However often the body was replayed, the model was called twice and the tool once.
    assert len(model.requests) == 2 and calls == [(2, 3)]
    assert {e.manual_digest for e in harness.journal if e.kind == "llm"} == {agent.manual_digest()}
    first, second = model.requests
    assert first["model"] == "scripted" and first["temperature"] == 0
    assert first["tools"][0]["function"] == {
        "name": "add",
        "description": "Adds two integers.",
        "parameters": app.components["add"].input_model.model_json_schema(),
    }
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "5"}
    assert first["response_format"]["json_schema"]["schema"] == agent.manual()["output_schema"]


def test_the_manual_is_what_the_model_is_shown_and_a_description_changes_it(model: ScriptedModel) -> None:
    _, agent_a, _ = calculator_app(model.url, description="Adds two integers from 0 to 10.")
    _, agent_b, _ = calculator_app(model.url, description="Adds two integers from 0 to 100.")
    assert agent_a.manual_digest() != agent_b.manual_digest()
    manual = agent_a.manual()
    assert manual["instructions"] == "Add the numbers."
    assert manual["model"] == {"provider": "openai", "name": "scripted", "params": {"temperature": 0}}
    assert manual["tools"][0]["function"]["description"] == "Adds two integers from 0 to 10."
    assert manual["output_schema"]["properties"] == {"total": {"title": "Total", "type": "integer"}}


def test_replaying_under_another_manual_is_a_mismatch_naming_the_agent(model: ScriptedModel) -> None:
    model.script = two_turns
    app_a, _, _ = calculator_app(model.url, description="Adds two integers from 0 to 10.")
    harness = WorkflowHarness(app_a)
    asyncio.run(harness.run("compute", {"prompt": "2 + 3?"}))
    app_b, _, calls_b = calculator_app(model.url, description="Adds two integers from 0 to 100.")
    response = asyncio.run(tether.testing.replay(app_b, "compute", {"prompt": "2 + 3?"}, harness.journal))
    assert response["outcome"] == "mismatch"
    assert response["mismatch"]["reason"] == "manual" and "llm calculator" in response["mismatch"]["message"]
    assert calls_b == []


def test_an_agent_that_never_answers_fails_after_max_turns(model: ScriptedModel) -> None:
    model.script = lambda request: call_tool("add", a=1, b=1)
    app, _, calls = calculator_app(model.url, max_turns=3)
    result = asyncio.run(WorkflowHarness(app).run("compute", {"prompt": "loop"}))
    assert result.outcome == "failed" and result.error is not None
    assert result.error["type"] == "AgentError" and "max_turns=3" in result.error["message"]
    assert len(model.requests) == 3 and len(calls) == 3


def test_a_final_answer_that_does_not_validate_fails_the_agent(model: ScriptedModel) -> None:
    model.script = lambda request: answer("five")
    app, _, _ = calculator_app(model.url)
    result = asyncio.run(WorkflowHarness(app).run("compute", {"prompt": "2 + 3?"}))
    assert result.outcome == "failed" and result.error is not None
    assert result.error["type"] == "AgentError" and "not a valid" in result.error["message"]


def test_rate_limited_model_calls_are_retried_and_journaled_once(model: ScriptedModel) -> None:
    seen: list[int] = []

    def flaky(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(1)
        return {"status": 429} if len(seen) == 1 else two_turns(request)

    model.script = flaky
    app, agent, _ = calculator_app(model.url)
    agent.model.retry = tether.RetryPolicy(max_attempts=3, initial_interval=0.01)
    harness = WorkflowHarness(app)
    result = asyncio.run(harness.run("compute", {"prompt": "2 + 3?"}))
    assert (result.outcome, result.output) == ("completed", {"total": 5})
    assert len(model.requests) == 3
    assert [e.kind for e in harness.journal] == ["llm", "step", "llm"]


def test_a_refused_model_call_is_not_retried(model: ScriptedModel) -> None:
    model.script = lambda request: {"status": 400}
    app, _, _ = calculator_app(model.url)
    result = asyncio.run(WorkflowHarness(app).run("compute", {"prompt": "2 + 3?"}))
    assert result.outcome == "failed" and result.error is not None
    assert "refused the request (400)" in result.error["message"]
    assert len(model.requests) == 1


def test_misuse_is_refused_with_what_to_do_instead() -> None:
    app = tether.App("misuse")

    @app.function
    async def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="decorate it with @app.tool"):
        app.agent("a", model=tether.Model("openai:m"), instructions="", tools=[plain])

    @app.tool
    async def reviewed(ctx: tether.Context, x: int) -> int:
        """A tool that waits for a human."""
        return x

    assert app.components["reviewed"].takes_context
    assert list(app.manifest()["components"]["reviewed"]["input_schema"]["properties"]) == ["x"]

    @app.workflow
    async def wrong(ctx: tether.Context) -> int:
        return await ctx.step(reviewed, 1)

    result = asyncio.run(WorkflowHarness(app).run("wrong", {}))
    assert result.outcome == "failed" and result.error is not None
    assert "takes the context, so it is not a step" in result.error["message"]
    with pytest.raises(ValueError, match="provider"):
        tether.Model("anthropic:claude")


def test_model_calls_share_one_ssl_context(model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the client's SSL context loads the CA bundle (tens of ms of CPU): once per
    process, not once per model call."""
    import httpcore2  # where the openai client's HTTP library builds its default SSL context

    from tether.sdk import agents

    built: list[object] = []
    real = httpcore2.default_ssl_context

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(object())
        return real(*args, **kwargs)

    monkeypatch.setattr(httpcore2, "default_ssl_context", counted)
    agents._ssl_context.cache_clear()
    model.script = two_turns
    app, _, _ = calculator_app(model.url)
    for _ in range(2):
        result = asyncio.run(WorkflowHarness(app).run("compute", {"prompt": "2 + 3?"}))
        assert (result.outcome, result.output) == ("completed", {"total": 5})
    assert len(model.requests) == 4 and len(built) == 1
