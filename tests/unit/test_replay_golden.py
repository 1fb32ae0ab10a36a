"""core.replay against golden journals, then the same journals against real workflow code.

Each ``tests/fixtures/journals/*.json`` holds a recorded journal, the commands the code issues
when replaying it, the expected decision for each, and (for the mismatch) the exact diff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import tether
from tether.core.journal import Command, JournalEntry, args_digest
from tether.core.replay import Action, Replayer, replay
from tether.testing import replay as replay_code

Golden = Callable[[str], dict[str, Any]]
NAMES = ["completed_three_steps", "pending_signal", "crash_gap", "mismatch_renamed_step"]

app = tether.App("golden")
fetched: list[str] = []


@app.function
async def fetch(tx_id: str) -> dict[str, Any]:
    fetched.append(tx_id)
    return {"tx_id": tx_id, "amount": 120}


@app.function
async def score(amount: int) -> float:
    return amount / 40


@app.function
async def decide(score: float) -> str:
    return "block" if score > 2 else "allow"


@app.workflow(signals={"approval": bool})
async def review(ctx: tether.Context, tx_id: str) -> str:
    tx = await ctx.step(fetch, tx_id)
    risk = await ctx.step(score, tx["amount"])
    return await ctx.step(decide, risk)


@app.workflow(signals={"approval": bool})
async def approve(ctx: tether.Context, tx_id: str) -> str:
    tx = await ctx.step(fetch, tx_id)
    ok = await ctx.signal("approval")
    return f"{tx['tx_id']}: {'approved' if ok else 'rejected'}"


@app.workflow
async def fan_out(ctx: tether.Context, ids: list[str]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(ctx.step(fetch, i) for i in ids)))


app_v2 = tether.App("golden")


@app_v2.function(name="fetch")
async def fetch_v2(tx_id: str) -> dict[str, Any]:
    return {"tx_id": tx_id, "amount": 120}


@app_v2.function
async def score_v2(amount: int) -> float:
    return amount / 40


@app_v2.workflow(name="review")
async def review_v2(ctx: tether.Context, tx_id: str) -> str:
    tx = await ctx.step(fetch_v2, tx_id)
    risk = await ctx.step(score_v2, tx["amount"])
    return "block" if risk > 2 else "allow"


def entries(doc: dict[str, Any]) -> list[JournalEntry]:
    return [JournalEntry.from_json(e) for e in doc["journal"]]


def commands(doc: dict[str, Any]) -> list[Command]:
    return [Command(c["kind"], c["name"], args_digest(c["args"])) for c in doc["commands"]]


@pytest.mark.parametrize("name", NAMES)
def test_golden_journal_digests_match_their_args(golden: Golden, name: str) -> None:
    for entry in entries(golden(name)):
        assert entry.args_digest == args_digest(entry.args), entry


@pytest.mark.parametrize("name", NAMES)
def test_golden_decisions(golden: Golden, name: str) -> None:
    doc = golden(name)
    decisions = replay(entries(doc), commands(doc))
    assert [d.action.value for d in decisions] == doc["decisions"]
    by_index = {e.index: e for e in entries(doc)}
    for index, decision in enumerate(decisions):
        if decision.action in (Action.REPLAY, Action.WAIT):
            assert decision.entry == by_index[index]
        else:
            assert decision.entry is None


def test_golden_mismatch_diff_text(golden: Golden) -> None:
    doc = golden("mismatch_renamed_step")
    decision = replay(entries(doc), commands(doc))[-1]
    assert decision.mismatch is not None
    assert decision.mismatch.render() == ("entry 1: journal has step score(#468b), code issued step score_v2(#468b)")
    assert decision.mismatch.to_json() == {
        **doc["mismatch"],
        "expected": "step score(#468b)",
        "issued": "step score_v2(#468b)",
    }


def test_golden_gap_executes_and_then_finishes_clean(golden: Golden) -> None:
    doc = golden("crash_gap")
    replayer = Replayer(entries(doc))
    assert replayer.journal_length == 3
    for index, command in enumerate(commands(doc)):
        decision = replayer.issue(index, command)
        if decision.action is Action.EXECUTE:
            replayer.record(JournalEntry(index, command.kind, command.name, command.args_digest, result={}))
    assert replayer.finish() is None


def test_golden_completed_run_finishes_clean(golden: Golden) -> None:
    doc = golden("completed_three_steps")
    replayer = Replayer(entries(doc))
    for index, command in enumerate(commands(doc)):
        replayer.issue(index, command)
    assert replayer.finish() is None


# --- the same journals against the workflow code, through tether.testing.replay -----------


def test_code_replays_completed_run_without_executing(golden: Golden) -> None:
    doc = golden("completed_three_steps")
    fetched.clear()
    response = asyncio.run(replay_code(app, doc["workflow"], doc["input"], doc["journal"]))
    assert response == {"outcome": "completed", "output": doc["output"]}
    assert fetched == []


def test_code_replaying_pending_signal_suspends(golden: Golden) -> None:
    doc = golden("pending_signal")
    response = asyncio.run(replay_code(app, doc["workflow"], doc["input"], doc["journal"]))
    assert response == {"outcome": "suspended", "waiting_on": doc["waiting_on"]}


def test_code_replaying_gap_executes_only_the_gap(golden: Golden) -> None:
    doc = golden("crash_gap")
    fetched.clear()
    response = asyncio.run(replay_code(app, doc["workflow"], doc["input"], doc["journal"]))
    assert response == {"outcome": "completed", "output": doc["output"]}
    assert fetched == ["tx-b"]


def test_changed_code_replaying_old_journal_is_a_mismatch(golden: Golden) -> None:
    doc = golden("mismatch_renamed_step")
    response = asyncio.run(replay_code(app_v2, doc["workflow"], doc["input"], doc["journal"]))
    assert response["outcome"] == "mismatch"
    assert response["mismatch"]["index"] == 1
    assert response["mismatch"]["message"] == doc["mismatch"]["message"]
