"""The hello example: a workflow that greets, waits for an approval, and says how it ended."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

import tether

app = tether.App("hello")


class Approval(BaseModel):
    ok: bool


@app.function
async def greeting(name: str) -> str:
    """Builds the greeting for a person."""
    return f"hello {name}"


@app.workflow
async def greet(ctx: tether.Context, name: str) -> str:
    """Greets a person."""
    return await ctx.step(greeting, name)


@app.workflow(signals={"approval": Approval})
async def onboard(ctx: tether.Context, name: str) -> dict[str, object]:
    """Greets a person, then waits (durably, for up to a week) for a human's approval."""
    text = await ctx.step(greeting, name)
    ctx.set("stage", "waiting for approval")
    approval = await ctx.signal("approval", timeout=timedelta(days=7))
    ctx.set("stage", "done")
    return {"greeting": text, "approved": approval.ok, "version": ctx.info.deployment_label}
