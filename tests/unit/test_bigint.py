"""Integers beyond 64 bits survive the journal unchanged (args digest, results, replay)."""

from __future__ import annotations

import asyncio

import tether
from tether.core.journal import args_digest
from tether.testing import WorkflowHarness

app = tether.App("big")


@app.function
async def echo(n: int) -> int:
    return n


@app.workflow
async def wf(ctx: tether.Context, n: int) -> int:
    return await ctx.step(echo, n)


def test_args_digest_accepts_any_json_int() -> None:
    assert len(args_digest({"n": 2**64})) == 16


def test_a_step_with_a_big_int_argument_runs() -> None:
    result = asyncio.run(WorkflowHarness(app).run("wf", {"n": 2**64}))
    assert (result.outcome, result.output) == ("completed", 2**64)
