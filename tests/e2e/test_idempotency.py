"""Idempotency keys through a real server: a key names one run of one request, and a signal
sent with a key is delivered once however often it is retried."""

from __future__ import annotations

import json
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


def test_a_start_key_reused_on_another_environment_or_deployment_is_refused(deployed: ServerProcess) -> None:
    url, body = deployed.url, {"topic": "lunch"}
    first = httpx.post(f"{url}/v1/envs/prod/workflows/tally/runs", json=body, headers={"Idempotency-Key": "k-env"})
    assert first.status_code == 201, first.text
    run_id = first.json()["id"]
    deployed.wait_for(run_id, {"suspended"})
    before = deployed.table_counts()

    # staging points at the very same deployment: still another request, never prod's run.
    message = _error(
        httpx.post(f"{url}/v1/envs/staging/workflows/tally/runs", json=body, headers={"Idempotency-Key": "k-env"}),
        409,
        "conflict",
    )
    assert run_id in message and "environment prod" in message and "environment staging" in message
    assert "new Idempotency-Key" in message
    for dep in ("v1", "v2"):
        message = _error(
            httpx.post(
                f"{url}/v1/deployments/{dep}/workflows/tally/runs", json=body, headers={"Idempotency-Key": "k-env"}
            ),
            409,
            "conflict",
        )
        assert f"another target (deployment {dep})" in message
    assert deployed.table_counts() == before

    # The same key, target and input is still the original run.
    again = httpx.post(f"{url}/v1/envs/prod/workflows/tally/runs", json=body, headers={"Idempotency-Key": "k-env"})
    assert (again.status_code, again.json()["id"]) == (200, run_id)

    # Started on a deployment, the key is bound to it (by id or label alike).
    on_dep = deployed.call(lambda c: c.start_run("tally", body, deployment="v2", idempotency_key="k-dep"))
    message = _error(
        httpx.post(f"{url}/v1/deployments/v1/workflows/tally/runs", json=body, headers={"Idempotency-Key": "k-dep"}),
        409,
        "conflict",
    )
    assert on_dep["id"] in message and "on deployment v2" in message and "(deployment v1)" in message
    message = _error(
        httpx.post(f"{url}/v1/envs/prod/workflows/tally/runs", json=body, headers={"Idempotency-Key": "k-dep"}),
        409,
        "conflict",
    )
    assert "on deployment v2" in message and "(environment prod)" in message
    by_id = httpx.post(
        f"{url}/v1/deployments/{on_dep['deployment_id']}/workflows/tally/runs",
        json=body,
        headers={"Idempotency-Key": "k-dep"},
    )
    assert (by_id.status_code, by_id.json()["id"]) == (200, on_dep["id"])

    # The CLI says the same and exits 4 (refused).
    out = tether(
        deployed, "run", "tally", "--env", "staging", "--input", json.dumps(body), "--idempotency-key", "k-env"
    )
    assert out.exit_code == 4 and "new Idempotency-Key" in out.stderr
    runs = deployed.call(lambda c: c.runs())
    assert sorted(r["id"] for r in runs) == sorted([run_id, on_dep["id"]])

    # A blank or overlong key is bad input, not a key.
    for bad in ("", "k" * 256):
        refused = httpx.post(f"{url}/v1/envs/prod/workflows/tally/runs", json=body, headers={"Idempotency-Key": bad})
        assert "Idempotency-Key header must be 1 to 255 characters" in _error(refused, 400, "bad_request")
    assert len(deployed.call(lambda c: c.runs())) == 2


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
    too_long = httpx.post(url, json={"choice": "pizza"}, headers={"Idempotency-Key": "k" * 256})
    assert "Idempotency-Key header must be 1 to 255 characters" in _error(too_long, 400, "bad_request")

    # Keys are scoped to the run: another run takes the same key as a new signal.
    other_run = deployed.call(lambda c: c.start_run("tally", {"topic": "dinner"}, env="prod"))
    first_there = deployed.call(
        lambda c: c.signal(other_run["id"], "vote", {"choice": "soup"}, idempotency_key="vote-1")
    )
    assert first_there["duplicate"] is False
