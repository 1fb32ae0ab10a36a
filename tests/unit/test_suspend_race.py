"""An attempt never suspends on a wait whose entry is not yet appended (it would never wake)."""

from __future__ import annotations

import asyncio

import tether
from tether.sdk._attempt import Attempt
from tether.testing import MemorySink

app = tether.App("race")


@app.function
async def work(i: int) -> int:
    return i


@app.workflow
async def wf(ctx: tether.Context) -> str:
    await ctx.step(work, 0)
    await ctx.sleep(1)
    await ctx.step(work, 2)
    await ctx.sleep(3)
    return "done"


def test_suspend_never_names_an_entry_that_was_not_appended() -> None:
    sink = MemorySink()
    request = {
        "run_id": "r",
        "attempt": 1,
        "token": "t",
        "deployment_id": "d",
        "deployment_label": "v1",
        "manifest_digest": app.manifest_digest(),
        "component": "wf",
        "input": {},
        "journal": [],
        "runtime_url": "",
    }
    response = asyncio.run(Attempt(app, request, sink).execute())  # type: ignore[arg-type]
    assert response == {"outcome": "completed", "output": "done"}
