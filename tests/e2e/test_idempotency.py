"""Idempotency keys through a real server: a key names one run of one request, and a signal
sent with a key is delivered once however often it is retried."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("votes")

class Vote(BaseModel):
    choice: str

@app.workflow(signals={{"vote": Vote}})
async def tally(ctx: tether.Context, topic: str) -> dict:
    """Takes the first vote, then any further vote that arrives within a second."""
    votes = [(await ctx.signal("vote")).choice]
    try:
        votes.append((await ctx.signal("vote", timeout=1)).choice)
    except tether.SignalTimeoutError:
        pass
    return {{"topic": topic, "votes": votes, "version": "{VERSION}"}}
'''


def tether(server: ServerProcess, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", server.url, *args], catch_exceptions=False)


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    return str(body["error"]["message"])


@pytest.fixture
def deployed(server: ServerProcess, make_app: Callable[..., Path]) -> ServerProcess:
    """v1 behind prod and staging, v2 deployed without routing."""
    server.call(lambda c: c.deploy(make_app("votes-v1", APP.format(VERSION="v1")), env="prod"))
    server.call(lambda c: c.set_env("staging", "v1"))
    server.call(lambda c: c.deploy(make_app("votes-v2", APP.format(VERSION="v2"))))
    return server


def test_a_retried_signal_is_delivered_once(deployed: ServerProcess) -> None:
    run = deployed.call(lambda c: c.start_run("tally", {"topic": "lunch"}, env="prod"))
    deployed.wait_for(run["id"], {"suspended"})
    sent = deployed.call(lambda c: c.signal(run["id"], "vote", {"choice": "pizza"}, idempotency_key="vote-1"))
    assert (sent["delivered_to_entry"], sent["duplicate"]) == (0, False)

    # The client retries (a lost answer, say): the same key and payload deliver nothing new.
    url = f"{deployed.url}/v1/runs/{run['id']}/signals/vote"
    retried = httpx.post(url, json={"choice": "pizza"}, headers={"Idempotency-Key": "vote-1"})
    assert retried.status_code == 200, retried.text
    assert retried.json() | {"woken": None} == {
        "run_id": run["id"],
        "signal": "vote",
        "delivered_to_entry": 0,
        "buffered": False,
        "woken": None,
        "duplicate": True,
    }
    out = tether(deployed, "signal", run["id"], "vote", '{"choice": "pizza"}', "--idempotency-key", "vote-1")
    assert out.exit_code == 0 and "already sent" in out.stdout and "not delivered again" in out.stdout

    # The same key with another payload, or for another signal name, is refused.
    other = httpx.post(url, json={"choice": "sushi"}, headers={"Idempotency-Key": "vote-1"})
    message = _error(other, 409, "conflict")
    assert "'vote-1' was already used" in message and "pizza" in message and "new Idempotency-Key" in message
    out = tether(deployed, "signal", run["id"], "vote", '{"choice": "sushi"}', "--idempotency-key", "vote-1")
    assert out.exit_code == 4 and "already used" in out.stderr
    renamed = httpx.post(
        f"{deployed.url}/v1/runs/{run['id']}/signals/veto",
        json={"choice": "pizza"},
        headers={"Idempotency-Key": "vote-1"},
    )
    assert "this request sends signal 'veto'" in _error(renamed, 409, "conflict")

    # The run saw exactly one vote: its second wait timed out instead of taking a copy.
    done = deployed.call(lambda c: c.result(run["id"], wait=30))
    assert (done["status"], done["output"]["votes"]) == ("completed", ["pizza"])
    assert [(s["name"], s["payload"]) for s in deployed.call(lambda c: c.signals(run["id"]))] == [
        ("vote", {"choice": "pizza"})
    ]
    # Even now that the run has ended, the retry is answered as the duplicate it is.
    late = httpx.post(url, json={"choice": "pizza"}, headers={"Idempotency-Key": "vote-1"})
    assert (late.status_code, late.json()["duplicate"]) == (200, True)
    assert "takes no more signals" in _error(httpx.post(url, json={"choice": "pizza"}), 409, "conflict")

    # Keys are scoped to the run: another run takes the same key as a new signal.
    other_run = deployed.call(lambda c: c.start_run("tally", {"topic": "dinner"}, env="prod"))
    first_there = deployed.call(
        lambda c: c.signal(other_run["id"], "vote", {"choice": "soup"}, idempotency_key="vote-1")
    )
    assert first_there["duplicate"] is False
