"""Pinning, identical redeploys and rollback, through a real server and real workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess

REVIEW = '''
from pydantic import BaseModel
import tether

app = tether.App("fraud")

class Approval(BaseModel):
    ok: bool

@app.tool
async def compute_risk_score(amount: int) -> str:
    """Returns a risk score from 0 to {SCALE} where higher means more suspicious."""
    return "{VERSION}-score-" + str(amount)

@app.workflow(signals={{"approval": Approval}})
async def review(ctx: tether.Context, amount: int) -> dict:
    """Reviews a transaction."""
    before = await ctx.step(compute_risk_score, amount)
    approval = await ctx.signal("approval")
    after = await ctx.step(compute_risk_score, amount + 1)
    return {{"behaviour": "{VERSION}", "before": before, "after": after, "ok": approval.ok,
            "label": ctx.info.deployment_label}}
'''


def review_app(make_app: Callable[..., Path], version: str, scale: str) -> Path:
    return make_app("fraud-" + version, REVIEW.format(VERSION=version, SCALE=scale))


def test_runs_stay_pinned_to_the_deployment_they_started_on(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    v1 = server.call(lambda c: c.deploy(review_app(make_app, "v1", "10"), env="prod"))
    assert (v1["label"], v1["created"]) == ("v1", True)
    run_a = server.call(lambda c: c.start_run("review", {"amount": 8}, env="prod"))
    server.wait_for(run_a["id"], {"suspended"})

    # v2 changes both behaviour and the tool's description; prod moves to it.
    v2 = server.call(lambda c: c.deploy(review_app(make_app, "v2", "100"), env="prod"))
    assert v2["label"] == "v2" and v2["id"] != v1["id"]
    diff = server.call(lambda c: c.diff("v1", "v2"))
    described = [ch for ch in diff["changes"] if ch["component"] == "compute_risk_score"]
    assert described and "0 to 10 " in described[0]["detail"] and "0 to 100 " in described[0]["detail"]
    affected = {a["run_id"]: a["changed"] for a in diff["runs_affected_if_unpinned"]}
    assert affected == {run_a["id"]: ["compute_risk_score"]}

    run_b = server.call(lambda c: c.start_run("review", {"amount": 8}, env="prod"))
    assert run_b["deployment_id"] == v2["id"]
    server.wait_for(run_b["id"], {"suspended"})

    server.call(lambda c: c.signal(run_a["id"], "approval", {"ok": True}))
    server.call(lambda c: c.signal(run_b["id"], "approval", {"ok": False}))
    done_a = server.call(lambda c: c.result(run_a["id"], wait=30))
    done_b = server.call(lambda c: c.result(run_b["id"], wait=30))

    assert done_a["status"] == "completed"
    assert done_a["deployment_id"] == v1["id"]
    # The step that ran after v2 was deployed still ran v1's code.
    assert done_a["output"] == {
        "behaviour": "v1",
        "before": "v1-score-8",
        "after": "v1-score-9",
        "ok": True,
        "label": "v1",
    }
    assert done_b["output"] == {
        "behaviour": "v2",
        "before": "v2-score-8",
        "after": "v2-score-9",
        "ok": False,
        "label": "v2",
    }
    journal_a = server.call(lambda c: c.journal(run_a["id"]))
    assert [e["kind"] for e in journal_a] == ["step", "signal", "step"]
    assert all(str(e["result"]).startswith("v1-") for e in journal_a if e["kind"] == "step")

    listed = {d["label"]: d for d in server.call(lambda c: c.deployments())}
    assert listed["v1"]["status"] == "drained" and listed["v2"]["status"] == "active"
    assert listed["v2"]["environments"] == ["prod"]

    # A drained deployment can be retired: its worker stops and its files go; history stays.
    extracted = server.data_dir / "bundles" / v1["bundle_digest"]
    assert extracted.is_dir()
    removed = server.call(lambda c: c.remove_deployment("v1"))
    assert removed["removed_at"] is not None and not extracted.exists()
    assert server.call(lambda c: c.deployment("v1"))["status"] == "removed"
    assert [e["kind"] for e in server.call(lambda c: c.journal(run_a["id"]))] == ["step", "signal", "step"]


def test_identical_redeploy_is_the_same_deployment(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    path = review_app(make_app, "v1", "10")
    first = server.call(lambda c: c.deploy(path, env="prod"))
    (path / "__pycache__").mkdir()
    (path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"noise that must not count")
    path.joinpath("app.py").touch()
    second = server.call(lambda c: c.deploy(path, env="prod"))
    assert (second["id"], second["label"], second["created"]) == (first["id"], "v1", False)
    assert [d["label"] for d in server.call(lambda c: c.deployments())] == ["v1"]


def test_rollback_routes_new_runs_back_and_leaves_pinned_runs(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    v1 = server.call(lambda c: c.deploy(review_app(make_app, "v1", "10"), env="prod"))
    v2 = server.call(lambda c: c.deploy(review_app(make_app, "v2", "100"), env="prod"))
    on_v2 = server.call(lambda c: c.start_run("review", {"amount": 1}, env="prod"))
    assert on_v2["deployment_id"] == v2["id"]
    server.wait_for(on_v2["id"], {"suspended"})

    rolled = server.call(lambda c: c.rollback_env("prod", reason="v2 misbehaves"))
    assert rolled["targets"] == [{"deployment_id": v1["id"], "weight": 100}]
    history = server.call(lambda c: c.env_history("prod"))
    assert [h["action"] for h in history] == ["rollback", "deploy", "deploy"]
    assert history[0]["reason"] == "v2 misbehaves" and history[1]["undone"] is True

    fresh = server.call(lambda c: c.start_run("review", {"amount": 1}, env="prod"))
    assert fresh["deployment_id"] == v1["id"]
    server.call(lambda c: c.signal(on_v2["id"], "approval", {"ok": True}))
    assert server.call(lambda c: c.result(on_v2["id"], wait=30))["output"]["behaviour"] == "v2"
    audit = server.call(lambda c: c.audit())
    assert any(a["action"] == "env.rollback" and a["actor"] == "tests" for a in audit)
