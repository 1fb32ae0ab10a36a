"""OpenAI Agents SDK agents on tether: the durable loop, the manual, approvals, misuse.

Through ``tether.testing`` (also with ``always_replay``) against the scripted model server on
loopback; the runtime's path is in tests/e2e/test_bring_your_agent.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, function_tool, handoff
from pydantic import BaseModel

import tether
from tests.unit.test_sdk_agents import ScriptedModel
from tether.integrations import Approval, current_context, openai_agents, workflow_tool
from tether.testing import WorkflowHarness, replay
from tether.testing.model_server import fraud_judge

TX = {"amount": 5000, "country": "US"}


class Verdict(BaseModel):
    decision: str
    reason: str


class Review(BaseModel):
    reviewer: str


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModel]:
    scripted = ScriptedModel()
    yield scripted
    scripted.stop()


@pytest.fixture
def model(server: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> ScriptedModel:
    server.requests.clear()
    server.script = fraud_judge
    monkeypatch.setenv("TETHER_MODEL_BASE_URL", server.url)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return server


def fraud_app(
    scale: int = 10, *, approval: bool = False, review_in_tool: bool = False
) -> tuple[tether.App, Agent[Any], list[int]]:
    calls: list[int] = []

    async def score(amount: int, country: str) -> int:
        calls.append(amount)
        value = min(10, amount // 1000 + (3 if country != "FR" else 0)) * scale // 10
        if review_in_tool:
            ctx = current_context()
            ctx.set("risk_score", value)
            await ctx.signal("review")
        return value

    score.__doc__ = f"Returns a risk score from 0 to {scale} where higher means more suspicious."
    tool = function_tool(score, name_override="compute_risk_score", needs_approval=approval)
    if review_in_tool:
        tool = workflow_tool(tool)
    fraud = Agent(
        name="fraud",
        instructions="Decide whether to block the transaction.",
        model="fraud-judge",
        tools=[tool],
        output_type=Verdict,
    )
    app = tether.App("fraud")
    app.register(fraud)

    @app.workflow(signals={"approval": Approval, "review": Review})
    async def review(ctx: tether.Context, amount: int, country: str) -> Verdict:
        prompt = "Review this transaction: " + json.dumps({"amount": amount, "country": country})
        result = await openai_agents.run(ctx, fraud, prompt, approval_signal="approval")
        verdict: Verdict = result.final_output
        return verdict

    return app, fraud, calls


def test_each_model_call_and_tool_call_is_journaled_once(model: ScriptedModel, always_replay: bool) -> None:
    app, fraud, calls = fraud_app()
    harness = WorkflowHarness(app, always_replay=always_replay)
    result = asyncio.run(harness.run("review", TX))
    assert (result.outcome, result.output) == (
        "completed",
        {"decision": "block", "reason": "risk score 8 on a 0 to 10 scale"},
    )
    assert [(e.kind, e.name) for e in harness.journal] == [
        ("llm", "fraud"),
        ("step", "compute_risk_score"),
        ("llm", "fraud"),
    ]
    assert len(model.requests) == 2 and calls == [5000]
    manual_digest = app.manifest()["components"]["fraud"]["manual_digest"]
    assert {e.manual_digest for e in harness.journal if e.kind == "llm"} == {manual_digest}
    # The model was shown the manual the manifest records, over chat completions.
    shown = model.requests[1]
    assert shown["messages"][0] == {"role": "system", "content": "Decide whether to block the transaction."}
    assert shown["tools"][0]["function"]["description"].startswith("Returns a risk score from 0 to 10 ")
    assert shown["response_format"]["json_schema"]["schema"]["required"] == ["decision", "reason"]
    step = harness.journal[1]
    assert step.args == {"arguments": TX} and step.result == 8


def test_the_manifest_records_the_agents_manual() -> None:
    app, _, _ = fraud_app(approval=True)
    entry = app.manifest()["components"]["fraud"]
    assert (entry["kind"], entry["framework"]) == ("agent", "openai-agents")
    manual = entry["manual"]
    assert manual["instructions"] == "Decide whether to block the transaction."
    assert manual["model"]["name"] == "fraud-judge"
    (tool,) = manual["tools"]
    assert tool["name"] == "compute_risk_score" and tool["approval"] is True
    assert tool["description"] == "Returns a risk score from 0 to 10 where higher means more suspicious."
    assert set(tool["parameters"]["properties"]) == {"amount", "country"}
    assert manual["output_schema"]["schema"]["title"] == "Verdict"


def test_replaying_through_a_changed_tool_description_is_a_mismatch_naming_it(model: ScriptedModel) -> None:
    app, _, _ = fraud_app()
    harness = WorkflowHarness(app)
    assert asyncio.run(harness.run("review", TX)).outcome == "completed"
    same = asyncio.run(replay(fraud_app()[0], "review", TX, harness.journal))
    assert same["outcome"] == "completed"
    changed = asyncio.run(replay(fraud_app(100)[0], "review", TX, harness.journal))
    assert changed["outcome"] == "mismatch"
    mismatch = changed["mismatch"]
    assert (mismatch["index"], mismatch["reason"]) == (0, "manual")
    assert mismatch["message"].endswith("; manual of agent fraud: tool compute_risk_score description changed")
    assert len(model.requests) == 2  # neither replay called the model


def test_a_tool_that_needs_approval_waits_for_the_signal(model: ScriptedModel, always_replay: bool) -> None:
    app, _, calls = fraud_app(approval=True)
    harness = WorkflowHarness(app, always_replay=always_replay)
    waiting = asyncio.run(harness.run("review", TX))
    assert waiting.outcome == "suspended" and calls == []
    assert [(e.kind, e.name, e.completed) for e in harness.journal] == [
        ("llm", "fraud", True),
        ("signal", "approval", False),
    ]
    harness.signal("approval", {"approved": True})
    done = asyncio.run(harness.resume())
    assert (done.outcome, done.output["decision"]) == ("completed", "block")
    assert calls == [5000] and len(model.requests) == 2


def test_a_refused_tool_call_is_never_run(model: ScriptedModel) -> None:
    app, _, calls = fraud_app(approval=True)
    harness = WorkflowHarness(app)
    asyncio.run(harness.run("review", TX))
    harness.signal("approval", {"approved": False, "reason": "not now"})
    done = asyncio.run(harness.resume())
    assert (done.outcome, done.output["decision"]) == ("completed", "allow") and calls == []
    told = model.requests[-1]["messages"][-1]
    assert told["role"] == "tool" and "not now" in told["content"]


def test_a_workflow_tool_uses_the_context_and_waits_for_a_human(model: ScriptedModel, always_replay: bool) -> None:
    app, _, calls = fraud_app(review_in_tool=True)
    harness = WorkflowHarness(app, always_replay=always_replay)
    waiting = asyncio.run(harness.run("review", TX))
    assert waiting.outcome == "suspended"
    harness.signal("review", {"reviewer": "ada"})
    done = asyncio.run(harness.resume())
    assert done.outcome == "completed" and done.output["decision"] == "block"
    assert [e.kind for e in harness.journal] == ["llm", "state", "signal", "llm"]
    assert len(model.requests) == 2


def test_a_step_tool_cannot_use_the_context(model: ScriptedModel) -> None:
    async def peek(amount: int, country: str) -> int:
        """Returns a risk score from 0 to 10 where higher means more suspicious."""
        current_context()
        return 1

    fraud = Agent(
        name="fraud", instructions="Decide.", model="fraud-judge", tools=[function_tool(peek)], output_type=Verdict
    )
    app = tether.App("fraud")
    app.register(fraud)

    @app.workflow
    async def review(ctx: tether.Context, amount: int, country: str) -> Verdict:
        result = await openai_agents.run(ctx, fraud, "Review " + json.dumps({"amount": amount, "country": country}))
        verdict: Verdict = result.final_output
        return verdict

    harness = WorkflowHarness(app)
    failed = asyncio.run(harness.run("review", TX))
    # Not turned into a message for the model: the run fails, saying what to do.
    assert failed.outcome == "failed" and failed.error is not None
    assert "mark it with @tether.integrations.workflow_tool" in failed.error["message"]
    step = harness.journal[1]
    assert step.kind == "step" and step.error is not None and step.error["type"] == "IntegrationError"


def test_handoffs_are_journaled_under_each_agents_own_manual(model: ScriptedModel, always_replay: bool) -> None:
    def script(request: dict[str, Any]) -> dict[str, Any]:
        names = [t["function"]["name"] for t in request.get("tools") or []]
        if "transfer_to_specialist" in names:
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "h1", "type": "function", "function": {"name": "transfer_to_specialist", "arguments": "{}"}}
                ],
            }
        return {"role": "assistant", "content": "specialist says hello"}

    model.script = script
    specialist = Agent(name="specialist", instructions="Answer precisely.", model="m", handoff_description="Expert.")
    triage = Agent(name="triage", instructions="Route the question.", model="m", handoffs=[specialist])
    app = tether.App("support")
    app.register(triage)

    @app.workflow
    async def ask(ctx: tether.Context, question: str) -> str:
        result = await openai_agents.run(ctx, triage, question)
        return str(result.final_output)

    harness = WorkflowHarness(app, always_replay=always_replay)
    result = asyncio.run(harness.run("ask", {"question": "why?"}))
    assert (result.outcome, result.output) == ("completed", "specialist says hello")
    assert [(e.kind, e.name) for e in harness.journal] == [("llm", "triage"), ("llm", "specialist")]
    components = app.manifest()["components"]
    assert {e.manual_digest for e in harness.journal} == {
        components["triage"]["manual_digest"],
        components["specialist"]["manual_digest"],
    }
    handoff = components["triage"]["manual"]["handoffs"][0]
    assert handoff["agent"] == "specialist" and "Expert." in handoff["description"]
    assert len(model.requests) == 2


def test_misuse_is_refused_with_what_to_do_instead(model: ScriptedModel) -> None:
    app, _, _ = fraud_app()
    stranger = Agent(name="stranger", instructions="Hi.", model="m")

    @app.workflow
    async def other(ctx: tether.Context) -> str:
        result = await openai_agents.run(ctx, stranger, "hello")
        return str(result.final_output)

    failed = asyncio.run(WorkflowHarness(app).run("other", {}))
    assert failed.outcome == "failed" and failed.error is not None
    assert "is not registered with app fraud: call app.register(agent)" in failed.error["message"]
    with pytest.raises(TypeError, match=r"register tether's own agents with app.agent"):
        app.register(object())
    with pytest.raises(ValueError, match="already registers a component named 'review'"):
        app.register(Agent(name="review", instructions="x"))

    app2, _, _ = fraud_app(approval=True)

    @app2.workflow
    async def unapproved(ctx: tether.Context) -> str:
        agent = app2.framework_agents["fraud"]
        result = await openai_agents.run(ctx, agent, "Review " + json.dumps(TX))
        return str(result.final_output)

    refused = asyncio.run(WorkflowHarness(app2).run("unapproved", {}))
    assert refused.error is not None and "needs approval: pass approval_signal='NAME'" in refused.error["message"]


def test_importing_tether_imports_no_framework_and_a_missing_extra_names_it() -> None:
    code = (
        "import sys, tether, tether.integrations\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('agents', 'pydantic_ai', 'openai')], 'imported'\n"
        "sys.modules['agents'] = None\n"
        "try:\n"
        "    import tether.integrations.openai_agents\n"
        "except tether.integrations.IntegrationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'tether[openai-agents]'" in out.stdout


def test_an_agent_used_as_a_tool_runs_inside_one_step(model: ScriptedModel, always_replay: bool) -> None:
    def script(request: dict[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        names = [t["function"]["name"] for t in request.get("tools") or []]
        if messages[-1]["role"] == "tool":
            return {"role": "assistant", "content": "top: " + messages[-1]["content"]}
        if "ask_specialist" in names:
            arguments = json.dumps({"input": "details?"})
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "ask_specialist", "arguments": arguments}}
                ],
            }
        return {"role": "assistant", "content": "inner answer"}

    model.script = script
    specialist = Agent(name="specialist", instructions="Answer precisely.", model="m")
    lead = Agent(
        name="lead",
        instructions="Ask the specialist.",
        model="m",
        tools=[specialist.as_tool(tool_name="ask_specialist", tool_description="Ask the specialist.")],
    )
    app = tether.App("support")
    app.register(lead)

    @app.workflow
    async def ask(ctx: tether.Context, question: str) -> str:
        result = await openai_agents.run(ctx, lead, question)
        return str(result.final_output)

    harness = WorkflowHarness(app, always_replay=always_replay)
    result = asyncio.run(harness.run("ask", {"question": "why?"}))
    assert (result.outcome, result.output) == ("completed", "top: inner answer")
    assert [(e.kind, e.name) for e in harness.journal] == [("llm", "lead"), ("step", "ask_specialist"), ("llm", "lead")]
    assert len(model.requests) == 3  # the specialist's call was made once, inside the step
    components = app.manifest()["components"]
    assert components["lead"]["manual"]["tools"][0]["agent"] == "specialist" and "specialist" in components


def test_a_handoff_object_is_followed_into_the_manifest_and_the_journal(model: ScriptedModel) -> None:
    def script(request: dict[str, Any]) -> dict[str, Any]:
        if any(t["function"]["name"] == "to_expert" for t in request.get("tools") or []):
            call = {"id": "h1", "type": "function", "function": {"name": "to_expert", "arguments": "{}"}}
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        return {"role": "assistant", "content": "expert says hi"}

    model.script = script
    expert = Agent(name="expert", instructions="Be precise.", model="m")
    triage = Agent(
        name="triage", instructions="Route.", model="m", handoffs=[handoff(expert, tool_name_override="to_expert")]
    )
    app = tether.App("support")
    app.register(triage)

    @app.workflow
    async def ask(ctx: tether.Context, question: str) -> str:
        result = await openai_agents.run(ctx, triage, question)
        return str(result.final_output)

    harness = WorkflowHarness(app, always_replay=True)
    assert asyncio.run(harness.run("ask", {"question": "x"})).output == "expert says hi"
    components = app.manifest()["components"]
    assert [(e.name, e.manual_digest) for e in harness.journal] == [
        ("triage", components["triage"]["manual_digest"]),
        ("expert", components["expert"]["manual_digest"]),
    ]
    assert components["triage"]["manual"]["handoffs"][0]["name"] == "to_expert"
