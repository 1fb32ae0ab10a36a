"""tether's pytest plugin, used by the project's own tests: async tests run as they are, and the
scripted model answers agents in this process (and says so when its script runs out)."""

from __future__ import annotations

import os

import tether
from tether.testing import ScriptedModel

app = tether.App("plugin")


@app.tool
async def lookup(city: str) -> str:
    """The forecast for a city."""
    return f"sun in {city}"


helper = app.agent("helper", model=tether.Model("openai:scripted"), instructions="Say the forecast.", tools=[lookup])


@app.workflow
async def ask(ctx: tether.Context, city: str) -> str:
    answer: str = await ctx.agent(helper, f"Forecast for {city}?")
    return answer


async def test_an_agent_runs_against_queued_replies(tether_harness, scripted_model) -> None:  # type: ignore[no-untyped-def]
    assert os.environ["TETHER_MODEL_BASE_URL"] == scripted_model.url
    scripted_model.reply(ScriptedModel.tool_call("lookup", {"city": "Oslo"}), ScriptedModel.answer("sunny"))
    result = await tether_harness(app).run("ask", {"city": "Oslo"})
    assert (result.outcome, result.output) == ("completed", "sunny")
    shown = scripted_model.requests[1]["messages"]
    assert shown[0] == {"role": "system", "content": "Say the forecast."}
    assert shown[-1]["role"] == "tool" and shown[-1]["content"] == '"sun in Oslo"'


async def test_a_model_request_beyond_the_script_fails_saying_so(tether_harness, scripted_model) -> None:  # type: ignore[no-untyped-def]
    scripted_model.reply(ScriptedModel.tool_call("lookup", {"city": "Oslo"}))
    result = await tether_harness(app, always_replay=False).run("ask", {"city": "Oslo"})
    assert result.outcome == "failed" and result.error is not None
    assert "the scripted model has no reply left for request 2" in result.error["message"]
    assert len(scripted_model.requests) == 2, "a 400 is not retried"


def test_the_model_stops_with_its_fixture_and_the_variable_is_restored() -> None:
    before = os.environ.get("TETHER_MODEL_BASE_URL")
    with ScriptedModel(script=lambda request: ScriptedModel.answer("scripted")) as model:
        assert os.environ["TETHER_MODEL_BASE_URL"] == model.url
    assert os.environ.get("TETHER_MODEL_BASE_URL") == before
