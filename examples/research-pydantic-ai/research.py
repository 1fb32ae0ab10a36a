"""A Pydantic AI research agent on tether: two tools, one of which needs an editor's approval.

The agent is plain Pydantic AI code; tether adds ``app.register(research)`` and
``pydantic_ai.run`` in place of ``research.run``. ``search_papers`` runs as a step (its result
journaled, never searched again on replay); ``publish`` is registered with
``requires_approval=True``, so the run waits, with no process kept, for the workflow's
``approval`` signal before it publishes (or is told it may not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel
from pydantic_ai import Agent, RunContext

import tether
from tether.integrations import Approval, pydantic_ai


class Report(BaseModel):
    topic: str
    findings: list[str]
    published: bool


@dataclass
class Library:
    """The agent's dependencies (``deps``): where it searches."""

    shelf: str


research = Agent(
    "openai:researcher",
    name="research",
    instructions="Research the topic with search_papers, then publish a short summary with publish.",
    output_type=Report,
    deps_type=Library,
    defer_model_check=True,  # the model is resolved when a run calls it, not at import
)


@research.tool
async def search_papers(ctx: RunContext[Library], topic: str) -> list[str]:
    """Find papers about a topic."""
    return [f"{topic}: a survey (shelf {ctx.deps.shelf})", f"{topic}: open problems"]


@research.tool_plain(requires_approval=True)
async def publish(topic: str, summary: str) -> str:
    """Publish a summary of the topic on the team's page."""
    return f"published the summary of {topic}"


app = tether.App("research")
app.register(research)


@app.workflow(signals={"approval": Approval})
async def report(ctx: tether.Context, topic: str) -> Report:
    """Researches a topic; an editor approves publishing."""
    result = await pydantic_ai.run(
        ctx, research, "Research " + json.dumps({"topic": topic}), deps=Library(shelf="B2"), approval_signal="approval"
    )
    output: Report = result.output
    return output
