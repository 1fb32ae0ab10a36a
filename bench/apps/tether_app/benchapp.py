"""The benchmark's workflows on tether; the same shapes as bench/peers/restate_endpoint.py and
bench/peers/dbos_driver.py. Every step returns a small value."""

from __future__ import annotations

from pydantic import BaseModel

import tether

VARIANT = 0  # bench/run rewrites this constant to make distinct bundles (workload 4)

app = tether.App("bench")


class Go(BaseModel):
    ok: bool = True


@app.function
async def work(i: int) -> int:
    """One step: returns a small value."""
    return i + 1


@app.workflow
async def steps(ctx: tether.Context, n: int) -> int:
    """Workloads 1 and 2: ``n`` sequential steps."""
    total = 0
    for i in range(n):
        total += await ctx.step(work, i)
    return total


@app.workflow(signals={"go": Go})
async def long(ctx: tether.Context, n: int) -> int:
    """Workload 3: ``n`` steps, a signal, then one more step (which replays the ``n`` entries)."""
    for i in range(n):
        await ctx.step(work, i)
    await ctx.signal("go")
    return await ctx.step(work, n)


@app.workflow(signals={"go": Go})
async def idle(ctx: tether.Context) -> int:
    """Workloads 4 and 5: wait for a signal, then one step."""
    await ctx.signal("go")
    return await ctx.step(work, VARIANT)


# --- Workload 6: an agent ---------------------------------------------------------------------


class Report(BaseModel):
    topic: str
    findings: list[str]
    published: bool


@app.tool
async def lookup(topic: str) -> list[str]:
    """Find what is known about a topic."""
    return [f"{topic}: a survey", f"{topic}: open problems"]


@app.tool
async def publish(summary: str) -> str:
    """Publish a summary on the team's page."""
    return f"published {len(summary)} characters"


researcher = app.agent(
    "researcher",
    model=tether.Model("openai:researcher"),
    instructions="Look the topic up with lookup, then publish a summary with publish, then report.",
    tools=[lookup, publish],
    output_type=Report,
)


@app.workflow
async def agent(ctx: tether.Context, topic: str) -> Report:
    """Workload 6: a 3-turn agent (model, lookup, model, publish, model) against the scripted
    model server's ``researcher``."""
    report: Report = await ctx.agent(researcher, f'Research this: {{"topic": "{topic}"}}')
    return report
