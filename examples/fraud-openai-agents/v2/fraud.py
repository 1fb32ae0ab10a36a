"""The fraud example written with the OpenAI Agents SDK, v2: a finer risk score, from 0 to 100.

The agent is plain OpenAI Agents SDK code; tether adds two lines (``app.register(fraud)`` and
``openai_agents.run`` in place of ``Runner.run``). Pulling the risk score needs a human's
approval (the tool's ``needs_approval``), which arrives as the workflow's ``review`` signal.
"""

from __future__ import annotations

from agents import Agent, function_tool
from pydantic import BaseModel

import tether
from tether.integrations import Approval, openai_agents


class Transaction(BaseModel):
    id: str
    amount: int
    country: str


class Verdict(BaseModel):
    decision: str
    reason: str


@function_tool(needs_approval=True)
async def compute_risk_score(amount: int, country: str) -> int:
    """Returns a risk score from 0 to 100 where higher means more suspicious."""
    return min(100, amount // 100 + (30 if country != "FR" else 0))


fraud = Agent(
    name="fraud",
    instructions="Decide whether to block the transaction. Answer as JSON: decision (block or allow), reason.",
    model="fraud-judge",
    tools=[compute_risk_score],
    output_type=Verdict,
)

app = tether.App("fraud")
app.register(fraud)


@app.workflow(signals={"review": Approval})
async def review(ctx: tether.Context, tx: Transaction) -> Verdict:
    """Reviews a transaction with the agent; a human approves pulling the risk score."""
    prompt = f"Review this transaction: {tx.model_dump_json()}"
    result = await openai_agents.run(ctx, fraud, prompt, approval_signal="review")
    verdict: Verdict = result.final_output
    return verdict
