"""Agents whose manual is pinned: the fraud example through a real server, workers and model server.

A run on v1 gets a risk score of 8 and waits for a human review before the model reads it;
v2 (a 0 to 100 scale) is deployed meanwhile. The run resumes on v1 and its model is shown
v1's "0 to 10" description, so 8 means block. Read through v2's manual it would mean allow:
replaying the recorded journal against v2 is refused as a journal mismatch on the manual.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli
from tether.sdk.app import App
from tether.testing import replay

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
TX = {"tx": {"id": "tx-1", "amount": 5000, "country": "US"}}


@pytest.fixture
def agent_server(tmp_path: Path, model_server: tuple[str, Path]) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log", env={"TETHER_MODEL_BASE_URL": model_server[0]})
    server.start()
    yield server
    server.stop()


def load_app(version: str) -> App:
    spec = importlib.util.spec_from_file_location(f"fraud_{version}", EXAMPLE / version / "fraud.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: App = module.app
    return app


def requests_of(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def tool_description(request: dict[str, Any]) -> str:
    return str(request["tools"][0]["function"]["description"])


def test_a_pinned_run_reads_its_history_through_its_own_manual(
    agent_server: ServerProcess, model_server: tuple[str, Path]
) -> None:
    server, (_, log) = agent_server, model_server
    v1 = server.call(lambda c: c.deploy(EXAMPLE / "v1", env="prod"))
    run_a = server.call(lambda c: c.start_run("review", TX, env="prod"))
    server.wait_for(run_a["id"], {"suspended"})
    assert server.call(lambda c: c.state(run_a["id"])) == {"risk_score": 8}

    v2 = server.call(lambda c: c.deploy(EXAMPLE / "v2", env="prod"))
    diff = server.call(lambda c: c.diff("v1", "v2"))
    described = [c for c in diff["changes"] if c["component"] == "compute_risk_score"]
    assert described and "0 to 10 " in described[0]["detail"] and "0 to 100 " in described[0]["detail"]
    assert {
        "component": "reviewer",
        "change": "manual changed",
        "detail": "the model is shown changed tools: compute_risk_score",
    } in diff["changes"]
    affected = {a["run_id"]: a["changed"] for a in diff["runs_affected_if_unpinned"]}
    assert "reviewer" in affected[run_a["id"]]
    shown = CliRunner().invoke(cli, ["--url", server.url, "deployments", "diff", "v1", "v2"])
    assert shown.exit_code == 0, shown.output
    assert "reviewer: manual changed" in shown.stdout and run_a["id"] in shown.stdout
    run_b = server.call(lambda c: c.start_run("review", TX, env="prod"))
    assert run_b["deployment_id"] == v2["id"]
    server.wait_for(run_b["id"], {"suspended"})
    assert server.call(lambda c: c.state(run_b["id"])) == {"risk_score": 80}

    for run in (run_a, run_b):
        server.call(lambda c, r=run: c.signal(r["id"], "review", {"reviewer": "ada"}))
    done_a = server.call(lambda c: c.result(run_a["id"], wait=30))
    done_b = server.call(lambda c: c.result(run_b["id"], wait=30))
    assert done_a["output"] == {"decision": "block", "reason": "risk score 8 on a 0 to 10 scale"}
    assert done_b["output"] == {"decision": "block", "reason": "risk score 80 on a 0 to 100 scale"}

    # What each model call was shown, as the model server received it over HTTP.
    calls = requests_of(log)
    assert len(calls) == 4
    after_tool = [r for r in calls if r["messages"][-1]["role"] == "tool"]
    by_score = {r["messages"][-1]["content"]: tool_description(r) for r in after_tool}
    assert "from 0 to 10 where" in by_score["8"]
    assert "from 0 to 100 where" in by_score["80"]

    # The journal records both model calls with v1's manual digest.
    journal = server.call(lambda c: c.journal(run_a["id"]))
    assert [e["kind"] for e in journal] == ["llm", "step", "state", "signal", "llm"]
    manual_v1 = server.call(lambda c: c.deployment(v1["id"]))["manifest"]["components"]["reviewer"]["manual_digest"]
    assert {e["manual_digest"] for e in journal if e["kind"] == "llm"} == {manual_v1}
    assert all(e["result"]["usage"]["total_tokens"] > 0 for e in journal if e["kind"] == "llm")


def test_reading_a_v1_history_through_the_v2_manual_is_refused(
    agent_server: ServerProcess, model_server: tuple[str, Path]
) -> None:
    server = agent_server
    server.call(lambda c: c.deploy(EXAMPLE / "v1", env="prod"))
    run_a = server.call(lambda c: c.start_run("review", TX, env="prod"))
    server.wait_for(run_a["id"], {"suspended"})
    journal = server.call(lambda c: c.journal(run_a["id"]))

    same = asyncio.run(replay(load_app("v1"), "review", TX, journal))
    assert same["outcome"] == "suspended"
    changed = asyncio.run(replay(load_app("v2"), "review", TX, journal))
    assert changed["outcome"] == "mismatch"
    mismatch = changed["mismatch"]
    assert (mismatch["index"], mismatch["reason"]) == (0, "manual")
    assert re.fullmatch(
        r"entry 0: journal has llm reviewer\(#\w{4}\) manual #\w{8}, code issued llm reviewer\(#\w{4}\) manual #\w{8}"
        r"; manual of agent reviewer: tool compute_risk_score description changed",
        mismatch["message"],
    ), mismatch["message"]
