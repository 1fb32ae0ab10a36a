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


def test_replay_against_changed_code_is_stuck_with_a_diff(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    # Code can no longer be changed under a pinned run (tests/e2e/test_snapshot.py): the only
    # way a run meets other code is an operator's forced move, which this test uses.
    server.call(lambda c: c.deploy(make_app("fraud", APP), env="prod"))
    run = server.call(lambda c: c.start_run("review", {"amount": 3}, env="prod"))
    run_id = run["id"]
    server.wait_for(run_id, {"suspended"})
    changed = APP.replace("ctx.step(compute_risk_score, amount)", "ctx.step(compute_risk_v2, amount)")
    server.call(lambda c: c.deploy(make_app("fraud-v2", changed)))
    server.call(lambda c: c.move(run_id, "v2", force=True, reason="testing a mismatch"))
    server.call(lambda c: c.signal(run_id, "approval", {"ok": True}))
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
