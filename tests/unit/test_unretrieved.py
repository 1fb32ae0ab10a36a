"""An attempt that ends early (fenced, mismatch) retrieves what its tasks raised: no log noise."""

from __future__ import annotations

import asyncio
import gc

import pytest

import tether
from tether.errors import FencedError
from tether.sdk._attempt import Attempt

app = tether.App("leak")


@app.function
async def work(i: int) -> int:
    return i


@app.workflow
async def wf(ctx: tether.Context) -> int:
    return await ctx.step(work, 1)


@app.workflow
async def wf_now(ctx: tether.Context) -> str:
    return ctx.now().isoformat()


class Fencing:
    async def append(self, entries):  # type: ignore[no-untyped-def]
        raise FencedError("stale")


def request(component: str, journal: list) -> dict:  # type: ignore[type-arg]
    return {
        "run_id": "r",
        "attempt": 1,
        "token": "t",
        "deployment_id": "d",
        "deployment_label": "v1",
        "manifest_digest": app.manifest_digest(),
        "component": component,
        "input": {},
        "journal": journal,
        "runtime_url": "",
    }


@pytest.mark.parametrize("case", ["fenced", "mismatch"])
def test_no_task_exception_is_left_unretrieved(case: str, caplog: pytest.LogCaptureFixture) -> None:
    if case == "fenced":
        req, sink = request("wf", []), Fencing()
    else:  # journal holds a step where the code now asks for ctx.now()
        entry = {"index": 0, "kind": "step", "name": "work", "args_digest": "00", "completed": True, "result": 1}
        req, sink = request("wf_now", [entry]), Fencing()
    response = asyncio.run(Attempt(app, req, sink).execute())  # type: ignore[arg-type]
    assert response["outcome"] == case
    gc.collect()
    assert "Task exception was never retrieved" not in caplog.text
