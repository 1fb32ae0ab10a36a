"""Pydantic AI agents on tether: the durable loop, the manual, approvals, misuse.

Through ``tether.testing`` (also with ``always_replay``) against the scripted model server on
loopback; the runtime's path is in tests/e2e/test_bring_your_agent.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext

import tether
from tests.unit.test_sdk_agents import ScriptedModel
from tether.integrations import Approval, current_context, pydantic_ai, workflow_tool
from tether.testing import WorkflowHarness, replay
from tether.testing.model_server import researcher

TOPIC = {"topic": "durable agents"}


class Report(BaseModel):
    topic: str
    findings: list[str]
    published: bool


@dataclass
class Library:
    shelf: str
    calls: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModel]:
    scripted = ScriptedModel()
    yield scripted
    scripted.stop()


@pytest.fixture
def model(server: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> ScriptedModel:
    server.requests.clear()
    server.script = researcher
    monkeypatch.setenv("TETHER_MODEL_BASE_URL", server.url)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return server


def research_app(
    search_doc: str = "Find papers about a topic.", *, approval: bool = True
) -> tuple[tether.App, list[str]]:
    calls: list[str] = []
    research = Agent(
        "openai:researcher",
        name="research",
        instructions="Research the topic, then publish a summary.",
        output_type=Report,
        deps_type=Library,
        defer_model_check=True,
    )

    async def search_papers(ctx: RunContext[Library], topic: str) -> list[str]:
        calls.append("search")
        ctx.deps.calls.append("search")
        return [f"{topic}: a survey ({ctx.deps.shelf})", f"{topic}: new results"]

    search_papers.__doc__ = search_doc
    research.tool(search_papers)

    @research.tool_plain(requires_approval=approval)
    async def publish(topic: str, summary: str) -> str:
        """Publish the summary of a topic."""
        calls.append("publish")
        return "published"

    app = tether.App("research")
    app.register(research)

    @app.workflow(signals={"approval": Approval})
    async def report(ctx: tether.Context, topic: str) -> Report:
        library = Library(shelf="B2", calls=[])
        result = await pydantic_ai.run(
            ctx, research, "Research " + json.dumps({"topic": topic}), deps=library, approval_signal="approval"
        )
        output: Report = result.output
        return output

    return app, calls


def test_each_request_and_tool_call_is_journaled_once_and_approval_waits_for_a_signal(
    model: ScriptedModel, always_replay: bool
) -> None:
    app, calls = research_app()
    harness = WorkflowHarness(app, always_replay=always_replay)
    waiting = asyncio.run(harness.run("report", TOPIC))
    assert waiting.outcome == "suspended" and calls == ["search"]
    assert [(e.kind, e.name, e.completed) for e in harness.journal] == [
        ("llm", "research", True),
        ("step", "search_papers", True),
        ("llm", "research", True),
        ("signal", "approval", False),
    ]
    harness.signal("approval", {"approved": True})
    done = asyncio.run(harness.resume())
    assert done.outcome == "completed"
    assert done.output == {
        "topic": "durable agents",
        "findings": ["durable agents: a survey (B2)", "durable agents: new results"],
        "published": True,
    }
    assert calls == ["search", "publish"] and len(model.requests) == 3
    assert [e.kind for e in harness.journal][4:] == ["step", "llm"]
    manual_digest = app.manifest()["components"]["research"]["manual_digest"]
    assert {e.manual_digest for e in harness.journal if e.kind == "llm"} == {manual_digest}
    # The model was shown the registered manual: instructions, both tools, the output tool.
    shown = model.requests[0]
    assert shown["messages"][0] == {"role": "system", "content": "Research the topic, then publish a summary."}
    assert [t["function"]["name"] for t in shown["tools"]] == ["search_papers", "publish", "final_result"]


def test_a_denied_call_is_never_run(model: ScriptedModel) -> None:
    app, calls = research_app()
    harness = WorkflowHarness(app)
    asyncio.run(harness.run("report", TOPIC))
    harness.signal("approval", {"approved": False, "reason": "refused by the editor"})
    done = asyncio.run(harness.resume())
    assert done.outcome == "completed" and done.output["published"] is False
    assert calls == ["search"]


def test_the_manifest_records_the_manual() -> None:
    app, _ = research_app()
    entry = app.manifest()["components"]["research"]
    assert (entry["kind"], entry["framework"]) == ("agent", "pydantic-ai")
    manual = entry["manual"]
    assert manual["instructions"] == ["Research the topic, then publish a summary."]
    assert [(t["name"], t["approval"]) for t in manual["tools"]] == [("search_papers", False), ("publish", True)]
    assert manual["tools"][0]["description"] == "Find papers about a topic."
    assert manual["output_schema"]["schema"]["title"] == "Report"
    assert manual["model"]["name"] == "openai:researcher"


def test_replaying_through_a_changed_tool_description_is_a_mismatch_naming_it(model: ScriptedModel) -> None:
    app, _ = research_app(approval=False)
    harness = WorkflowHarness(app)
    assert asyncio.run(harness.run("report", TOPIC)).outcome == "completed"
    same = asyncio.run(replay(research_app(approval=False)[0], "report", TOPIC, harness.journal))
    assert same["outcome"] == "completed"
    changed = asyncio.run(
        replay(research_app("Find recent papers.", approval=False)[0], "report", TOPIC, harness.journal)
    )
    assert changed["outcome"] == "mismatch"
    assert changed["mismatch"]["reason"] == "manual"
    assert changed["mismatch"]["message"].endswith("manual of agent research: tool search_papers description changed")
    assert len(model.requests) == 3


def test_tools_reach_the_context_only_as_workflow_tools(model: ScriptedModel, always_replay: bool) -> None:
    agent = Agent("openai:researcher", name="notes", instructions="Take notes.", defer_model_check=True)

    @agent.tool_plain
    @workflow_tool
    async def remember(topic: str) -> str:
        """Remember a topic."""
        current_context().set("topic", topic)
        return "noted"

    @agent.tool_plain
    async def peek(topic: str) -> str:
        """Peek at the run."""
        current_context()
        return "never"

    app = tether.App("notes")
    app.register(agent)

    @app.workflow
    async def take_notes(ctx: tether.Context, topic: str) -> str:
        result = await pydantic_ai.run(ctx, agent, "Note " + json.dumps({"topic": topic}))
        return str(result.output)

    harness = WorkflowHarness(app, always_replay=always_replay)
    failed = asyncio.run(harness.run("take_notes", TOPIC))
    assert [e.kind for e in harness.journal] == ["llm", "state", "llm", "step"]
    assert harness.journal[1].result == "durable agents"
    assert failed.outcome == "failed" and failed.error is not None
    assert "tool peek runs as a step" in failed.error["message"]
    assert "@tether.integrations.workflow_tool" in failed.error["message"]


def test_misuse_is_refused_with_what_to_do_instead(model: ScriptedModel) -> None:
    app, _ = research_app()
    with pytest.raises(ValueError, match=r"needs a name: Agent\(..., name='research'\)"):
        app.register(Agent("openai:x", defer_model_check=True))
    stranger = Agent("openai:x", name="stranger", defer_model_check=True)
    agent = app.framework_agents["research"]

    @app.workflow
    async def bad(ctx: tether.Context, which: str) -> str:
        if which == "stranger":
            await pydantic_ai.run(ctx, stranger, "hi")
        elif which == "output":
            await pydantic_ai.run(ctx, agent, "hi", output_type=str)
        else:
            await pydantic_ai.run(ctx, agent, "Research " + json.dumps(TOPIC), deps=Library("A", []))
        return "unreachable"

    def error(which: str) -> str:
        result = asyncio.run(WorkflowHarness(app).run("bad", {"which": which}))
        assert result.outcome == "failed" and result.error is not None
        return result.error["message"]

    assert "not registered with app research: call app.register(agent)" in error("stranger")
    assert "does not take output_type=: it is part of the agent's manual" in error("output")
    assert "needs approval: pass approval_signal='NAME'" in error("approval")


def test_a_missing_extra_names_it() -> None:
    code = (
        "import sys, tether.integrations\n"
        "sys.modules['pydantic_ai'] = None\n"
        "try:\n"
        "    import tether.integrations.pydantic_ai\n"
        "except tether.integrations.IntegrationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'tether[pydantic-ai]'" in out.stdout


def test_an_approval_payload_without_approved_fails_saying_what_it_needs(model: ScriptedModel) -> None:
    app, calls = research_app()
    agent = app.framework_agents["research"]

    @app.workflow(signals={"loose": dict})
    async def loosely(ctx: tether.Context, topic: str) -> str:
        prompt = "Research " + json.dumps({"topic": topic})
        await pydantic_ai.run(ctx, agent, prompt, deps=Library("A", []), approval_signal="loose")
        return "unreachable"

    harness = WorkflowHarness(app)
    assert asyncio.run(harness.run("loosely", TOPIC)).outcome == "suspended"
    harness.signal("loose", {"ok": True})
    failed = asyncio.run(harness.resume())
    assert failed.outcome == "failed" and failed.error is not None
    assert "needs a boolean 'approved'" in failed.error["message"] and calls == ["search"]
