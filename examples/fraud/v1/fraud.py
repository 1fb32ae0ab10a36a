"""The fraud example, v1: an agent reviews a transaction with a risk score from 0 to 10."""

from __future__ import annotations

from pydantic import BaseModel

import tether

app = tether.App("fraud")


class Transaction(BaseModel):
    id: str
    amount: int
    country: str


class Review(BaseModel):
    reviewer: str


class Verdict(BaseModel):
    decision: str
    reason: str


@app.function
async def score_transaction(amount: int, country: str) -> int:
    """The v1 risk model."""
    return min(10, amount // 1000 + (3 if country != "FR" else 0))


@app.tool
async def compute_risk_score(ctx: tether.Context, amount: int, country: str) -> int:
    """Returns a risk score from 0 to 10 where higher means more suspicious."""
    score = await ctx.step(score_transaction, amount, country)
    ctx.set("risk_score", score)
    await ctx.signal("review")  # a human checks the score before the model reads it
    return score


reviewer = app.agent(
    "reviewer",
    model=tether.Model("openai:fraud-judge"),
    instructions="Decide whether to block the transaction. Answer as JSON: decision (block or allow), reason.",
    tools=[compute_risk_score],
    output_type=Verdict,
)


@app.workflow(signals={"review": Review})
async def review(ctx: tether.Context, tx: Transaction) -> Verdict:
    """Reviews a transaction with the agent; a human looks at the risk score first."""
    verdict: Verdict = await ctx.agent(reviewer, f"Review this transaction: {tx.model_dump_json()}")
    return verdict
