"""Code that disagrees with a run's journal stops the run loudly: stuck, with a precise diff."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("fraud")

class Approval(BaseModel):
    ok: bool

@app.tool
async def compute_risk_score(amount: int) -> int:
    """Returns a risk score from 0 to 10."""
    return 8

@app.tool
async def compute_risk_v2(amount: int) -> int:
    """Returns a risk score from 0 to 100."""
    return 80

@app.workflow(signals={"approval": Approval})
async def review(ctx: tether.Context, amount: int) -> int:
    """Reviews a transaction."""
    score = await ctx.step(compute_risk_score, amount)
    await ctx.signal("approval")
    return score
'''


def _suspended_run_on_tampered_code(server: ServerProcess, make_app: Callable[..., Path], old: str, new: str) -> str:
    dep = server.call(lambda c: c.deploy(make_app("fraud", APP), env="prod"))
    run = server.call(lambda c: c.start_run("review", {"amount": 3}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    server.kill9()
    extracted = server.data_dir / "bundles" / dep["bundle_digest"] / "app.py"
    source = extracted.read_text()
    assert old in source
    extracted.write_text(source.replace(old, new))
    server.start()
    server.call(lambda c: c.signal(run["id"], "approval", {"ok": True}))
    return str(run["id"])


def test_replay_against_changed_code_is_stuck_with_a_diff(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    run_id = _suspended_run_on_tampered_code(
        server, make_app, "ctx.step(compute_risk_score, amount)", "ctx.step(compute_risk_v2, amount)"
    )
    stuck = server.wait_for(run_id, {"stuck", "completed", "failed"})
    assert stuck["status"] == "stuck"
    reason = stuck["stuck_reason"]
    assert (reason["index"], reason["reason"]) == (0, "name")
    assert re.fullmatch(
        r"entry 0: journal has step compute_risk_score\(#[0-9a-f]{4}\), "
        r"code issued step compute_risk_v2\(#[0-9a-f]{4}\)",
        reason["message"],
    ), reason["message"]
    # Not retried in a loop: the attempt count holds still.
    attempts = stuck["attempt"]
    time.sleep(1.5)
    again = server.call(lambda c: c.run(run_id))
    assert (again["status"], again["attempt"]) == ("stuck", attempts)
    assert [r["id"] for r in server.call(lambda c: c.runs(status="stuck"))] == [run_id]


def test_worker_serving_another_manifest_is_refused(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    run_id = _suspended_run_on_tampered_code(server, make_app, "from 0 to 10.", "from 0 to 100.")
    stuck = server.wait_for(run_id, {"stuck", "completed", "failed"})
    assert stuck["status"] == "stuck"
    assert stuck["stuck_reason"]["type"] == "ManifestMismatch"
    assert re.fullmatch(
        r"endpoint serves manifest [0-9a-f]{12}, run pinned to [0-9a-f]{12}", stuck["stuck_reason"]["message"]
    )
    assert [e["kind"] for e in server.call(lambda c: c.journal(run_id))] == ["step", "signal"]
