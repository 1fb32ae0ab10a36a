"""OpenAI Agents SDK and Pydantic AI agents on a real server, real workers, the scripted model.

For each framework: a run is pinned across a change of a tool's description (what its model
calls were shown is read from the model server's request log), a ``kill -9`` of the server
mid-loop repeats no journaled model call or tool call, the diff names the field, a forced
move through a changed manual ends ``stuck`` with that diff, and approvals arrive as signals.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_escape_hatches import refused
from tether.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
OLD = "Find papers about a topic."
NEW = "Find papers about a topic, newest first."

OPENAI_AGENTS_APP = '''
import json
import os

from agents import Agent, function_tool
from pydantic import BaseModel

import tether
from tether.integrations import Approval, openai_agents


class Report(BaseModel):
    topic: str
    findings: list[str]
    published: bool


def effect(line: str) -> None:
    with open(os.environ["AGENT_EFFECTS"], "a") as out:
        out.write(line + "\\n")


@function_tool
async def search_papers(topic: str) -> list[str]:
    """DESCRIPTION"""
    effect("search " + topic)
    return [topic + ": a survey", topic + ": open problems"]


@function_tool(needs_approval=True)
async def publish(topic: str, summary: str) -> str:
    """Publish a summary of the topic."""
    effect("publish " + topic)
    return "published"


research = Agent(name="research", instructions="Research, then publish.", model="researcher",
                 tools=[search_papers, publish], output_type=Report)
app = tether.App("research")
app.register(research)


@app.workflow(signals={"approval": Approval})
async def report(ctx: tether.Context, topic: str) -> Report:
    prompt = "Research " + json.dumps({"topic": topic})
    result = await openai_agents.run(ctx, research, prompt, approval_signal="approval")
    return result.final_output
'''

PYDANTIC_AI_APP = '''
import json
import os

from pydantic import BaseModel
from pydantic_ai import Agent

import tether
from tether.integrations import Approval, pydantic_ai


class Report(BaseModel):
    topic: str
    findings: list[str]
    published: bool


def effect(line: str) -> None:
    with open(os.environ["AGENT_EFFECTS"], "a") as out:
        out.write(line + "\\n")


research = Agent("openai:researcher", name="research", instructions="Research, then publish.",
                 output_type=Report, defer_model_check=True)


@research.tool_plain
async def search_papers(topic: str) -> list[str]:
    """DESCRIPTION"""
    effect("search " + topic)
    return [topic + ": a survey", topic + ": open problems"]


@research.tool_plain(requires_approval=True)
async def publish(topic: str, summary: str) -> str:
    """Publish a summary of the topic."""
    effect("publish " + topic)
    return "published"


app = tether.App("research")
app.register(research)


@app.workflow(signals={"approval": Approval})
async def report(ctx: tether.Context, topic: str) -> Report:
    prompt = "Research " + json.dumps({"topic": topic})
    result = await pydantic_ai.run(ctx, research, prompt, approval_signal="approval")
    return result.output
'''

SOURCES = {"openai-agents": OPENAI_AGENTS_APP, "pydantic-ai": PYDANTIC_AI_APP}
WAITING = [("llm", True), ("step", True), ("llm", True), ("signal", False)]


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    return tmp_path / "effects.txt"


@pytest.fixture
def agent_server(
    tmp_path: Path, model_server: tuple[str, Path], effects: Path, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    env = {"TETHER_MODEL_BASE_URL": model_server[0], "AGENT_EFFECTS": str(effects)}
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log", env=env)
    server.start()
    yield server
    server.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n--- server log ---\n{server.log_path.read_text(errors='replace')[-8000:]}")


@pytest.fixture(params=sorted(SOURCES))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def research_app(make_app: Callable[..., Path], framework: str, version: str, description: str) -> Path:
    folder = make_app(f"{framework}-{version}", SOURCES[framework].replace("DESCRIPTION", description))
    # Its tools count their calls in a host file the test reads: the app declares the variable
    # naming it, and is deployed in the process tier (a sandbox sees no host files).
    with (folder / "tether.toml").open("a") as config:
        config.write('env = ["AGENT_EFFECTS"]\n')
    return folder


def requests_of(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def shown(request: dict[str, Any], tool: str) -> str:
    return str(next(t["function"]["description"] for t in request["tools"] if t["function"]["name"] == tool))


def topic_of(request: dict[str, Any]) -> str:
    user = next(m for m in request["messages"] if m["role"] == "user")
    text = user["content"] if isinstance(user["content"], str) else json.dumps(user["content"])
    return "alpha" if "alpha" in text else "beta"


def waiting(server: ServerProcess, run_id: str) -> list[tuple[str, bool]]:
    server.wait_for(run_id, {"suspended"})
    return [(e["kind"], e["completed"]) for e in server.call(lambda c: c.journal(run_id))]


def test_a_run_is_pinned_across_a_tool_description_change(
    agent_server: ServerProcess,
    model_server: tuple[str, Path],
    make_app: Callable[..., Path],
    framework: str,
    effects: Path,
) -> None:
    server, log = agent_server, model_server[1]
    v1 = server.call(lambda c: c.deploy(research_app(make_app, framework, "v1", OLD), env="prod", isolation="process"))
    run_a = server.call(lambda c: c.start_run("report", {"topic": "alpha"}, env="prod"))
    assert waiting(server, run_a["id"]) == WAITING  # the model asked to publish: approval pending

    server.call(lambda c: c.deploy(research_app(make_app, framework, "v2", NEW), env="prod", isolation="process"))
    diff = server.call(lambda c: c.diff("v1", "v2"))
    named = [c for c in diff["changes"] if c["component"] == "research"]
    assert [c["change"] for c in named] == ["tool search_papers description changed"]
    assert OLD in named[0]["detail"] and NEW in named[0]["detail"]
    affected = {a["run_id"]: a["changed"] for a in diff["runs_affected_if_unpinned"]}
    assert "research" in affected[run_a["id"]]
    printed = CliRunner().invoke(cli, ["--url", server.url, "deployments", "diff", "v1", "v2"])
    assert printed.exit_code == 0, printed.output
    assert "research: tool search_papers description changed" in printed.stdout

    run_b = server.call(lambda c: c.start_run("report", {"topic": "beta"}, env="prod"))
    assert waiting(server, run_b["id"]) == WAITING
    for run in (run_a, run_b):
        server.call(lambda c, r=run: c.signal(r["id"], "approval", {"approved": True}))
    for run, topic in ((run_a, "alpha"), (run_b, "beta")):
        done = server.call(lambda c, r=run: c.result(r["id"], wait=60))
        assert done["status"] == "completed", done
        assert done["output"]["published"] is True and done["output"]["findings"][0] == f"{topic}: a survey"

    # Every model call of run A, the last one made after v2 shipped, was shown v1's manual.
    calls = requests_of(log)
    by_run = {topic: [shown(r, "search_papers") for r in calls if topic_of(r) == topic] for topic in ("alpha", "beta")}
    assert by_run == {"alpha": [OLD] * 3, "beta": [NEW] * 3}
    journal = server.call(lambda c: c.journal(run_a["id"]))
    manual_v1 = server.call(lambda c: c.deployment(v1["id"]))["manifest"]["components"]["research"]["manual_digest"]
    assert {e["manual_digest"] for e in journal if e["kind"] == "llm"} == {manual_v1}
    assert effects.read_text().splitlines() == ["search alpha", "search beta", "publish alpha", "publish beta"] or (
        sorted(effects.read_text().splitlines()) == ["publish alpha", "publish beta", "search alpha", "search beta"]
    )


def test_kill_9_mid_loop_repeats_no_journaled_model_call_or_tool_call(
    agent_server: ServerProcess,
    model_server: tuple[str, Path],
    make_app: Callable[..., Path],
    framework: str,
    effects: Path,
) -> None:
    server, log = agent_server, model_server[1]
    server.call(lambda c: c.deploy(research_app(make_app, framework, "v1", OLD), env="prod", isolation="process"))
    run = server.call(lambda c: c.start_run("report", {"topic": "alpha"}, env="prod"))
    assert waiting(server, run["id"]) == WAITING
    assert len(requests_of(log)) == 2 and effects.read_text().splitlines() == ["search alpha"]

    server.kill9()  # two model calls and a tool call journaled, the loop waiting for approval
    server.start()
    server.call(lambda c: c.signal(run["id"], "approval", {"approved": True}))
    done = server.call(lambda c: c.result(run["id"], wait=60))
    assert done["status"] == "completed" and done["output"]["published"] is True
    # The journaled ones were read back from the journal: each model call and tool call once.
    assert len(requests_of(log)) == 3
    assert effects.read_text().splitlines() == ["search alpha", "publish alpha"]
    kinds = [e["kind"] for e in server.call(lambda c: c.journal(run["id"]))]
    assert kinds == ["llm", "step", "llm", "signal", "step", "llm"]


def test_a_forced_replay_through_a_changed_manual_ends_stuck_with_the_diff(
    agent_server: ServerProcess,
    model_server: tuple[str, Path],
    make_app: Callable[..., Path],
    framework: str,
    effects: Path,
) -> None:
    server, log = agent_server, model_server[1]
    server.call(lambda c: c.deploy(research_app(make_app, framework, "v1", OLD), env="prod", isolation="process"))
    run = server.call(lambda c: c.start_run("report", {"topic": "alpha"}, env="prod"))
    assert waiting(server, run["id"]) == WAITING
    server.call(lambda c: c.deploy(research_app(make_app, framework, "v2", NEW), env=None, isolation="process"))

    detail = "manual of agent research: tool search_papers description changed"
    (verdict,) = server.call(lambda c: c.check("v2"))["runs"]
    assert verdict["compatible"] is False and verdict["mismatch"]["message"].endswith(detail)
    message = refused(lambda: server.call(lambda c: c.move(run["id"], "v2")), 409)
    assert "does not replay on v2" in message and "--force --reason" in message

    forced = CliRunner().invoke(
        cli, ["--url", server.url, "runs", "move", run["id"], "--to", "v2", "--force", "--reason", "try the new manual"]
    )
    assert forced.exit_code == 0, forced.output
    server.call(lambda c: c.signal(run["id"], "approval", {"approved": True}))
    stuck = server.wait_for(run["id"], {"stuck", "completed", "failed"})
    assert stuck["status"] == "stuck"
    reason = stuck["stuck_reason"]
    assert (reason["index"], reason["reason"]) == (0, "manual")
    assert reason["message"].startswith("entry 0: journal has llm research(") and reason["message"].endswith(detail)
    # Nothing ran through the other manual: no model call, no tool call beyond v1's.
    assert len(requests_of(log)) == 2 and effects.read_text().splitlines() == ["search alpha"]


def test_the_openai_agents_fraud_example_reads_8_out_of_10_on_v1(
    agent_server: ServerProcess, model_server: tuple[str, Path]
) -> None:
    server, log = agent_server, model_server[1]
    example = ROOT / "examples" / "fraud-openai-agents"
    tx = {"tx": {"id": "tx-1", "amount": 5000, "country": "US"}}
    server.call(lambda c: c.deploy(example / "v1", env="prod"))
    run_a = server.call(lambda c: c.start_run("review", tx, env="prod"))
    server.wait_for(run_a["id"], {"suspended"})
    server.call(lambda c: c.deploy(example / "v2", env="prod"))
    run_b = server.call(lambda c: c.start_run("review", tx, env="prod"))
    server.wait_for(run_b["id"], {"suspended"})
    changes = server.call(lambda c: c.diff("v1", "v2"))["changes"]
    assert ("fraud", "tool compute_risk_score description changed") in {(c["component"], c["change"]) for c in changes}
    for run in (run_a, run_b):
        server.call(lambda c, r=run: c.signal(r["id"], "review", {"approved": True}))
    done_a = server.call(lambda c: c.result(run_a["id"], wait=60))
    done_b = server.call(lambda c: c.result(run_b["id"], wait=60))
    assert done_a["output"] == {"decision": "block", "reason": "risk score 8 on a 0 to 10 scale"}
    assert done_b["output"] == {"decision": "block", "reason": "risk score 80 on a 0 to 100 scale"}
    after_tool = {
        r["messages"][-1]["content"]: shown(r, "compute_risk_score")
        for r in requests_of(log)
        if r["messages"][-1]["role"] == "tool"
    }
    assert "from 0 to 10 where" in after_tool["8"] and "from 0 to 100 where" in after_tool["80"]


def test_the_pydantic_ai_research_example_publishes_after_approval(
    agent_server: ServerProcess, model_server: tuple[str, Path]
) -> None:
    server, log = agent_server, model_server[1]
    server.call(lambda c: c.deploy(ROOT / "examples" / "research-pydantic-ai", env="prod"))
    run = server.call(lambda c: c.start_run("report", {"topic": "durable agents"}, env="prod"))
    assert waiting(server, run["id"]) == WAITING
    server.call(lambda c: c.signal(run["id"], "approval", {"approved": False, "reason": "not yet"}))
    done = server.call(lambda c: c.result(run["id"], wait=60))
    assert done["output"] == {
        "topic": "durable agents",
        "findings": ["durable agents: a survey (shelf B2)", "durable agents: open problems"],
        "published": False,
    }
    assert len(requests_of(log)) == 3
