"""Cooperative cancellation: the workflow sees RunCancelledError at its wait and may compensate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("orders")

class Approval(BaseModel):
    ok: bool

@app.function
async def record(effects: str, what: str) -> str:
    """Leaves a trace of a side effect."""
    with open(effects, "a") as f:
        f.write(what + "\\n")
    return what

@app.workflow(signals={"approval": Approval})
async def order(ctx: tether.Context, effects: str) -> str:
    """Reserves stock, waits for approval; releases the stock if cancelled."""
    await ctx.step(record, effects, "reserve")
    try:
        await ctx.signal("approval")
    except tether.RunCancelledError:
        await ctx.step(record, effects, "release")
        raise
    return "shipped"

@app.workflow
async def napper(ctx: tether.Context) -> str:
    """Sleeps for an hour."""
    await ctx.sleep(3600)
    return "woke"
'''


def test_cancel_lets_the_workflow_compensate_then_ends_it(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    server.call(lambda c: c.deploy(make_app("orders", APP), env="prod", isolation="process"))
    run = server.call(lambda c: c.start_run("order", {"effects": str(effects)}, env="prod"))
    nap = server.call(lambda c: c.start_run("napper", {}, env="prod"))
    for r in (run, nap):
        server.wait_for(r["id"], {"suspended"})

    server.call(lambda c: c.cancel(run["id"], reason="customer changed their mind"))
    server.call(lambda c: c.cancel(nap["id"]))
    done = server.call(lambda c: c.result(run["id"], wait=30))
    assert done["status"] == "cancelled" and done["error"]["type"] == "RunCancelledError"
    assert effects.read_text().split() == ["reserve", "release"]
    journal = server.call(lambda c: c.journal(run["id"]))
    assert [(e["kind"], (e["error"] or {}).get("type")) for e in journal] == [
        ("step", None),
        ("signal", "Cancelled"),
        ("step", None),
    ]
    assert server.call(lambda c: c.result(nap["id"], wait=30))["status"] == "cancelled"
    assert server.table_counts()["timers"] == 0
    cancels = [a for a in server.call(lambda c: c.audit()) if a["action"] == "run.cancel"]
    assert {a["target"] for a in cancels} == {run["id"], nap["id"]}
