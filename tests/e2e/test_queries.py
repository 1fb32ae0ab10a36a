"""Queries through a real server: answered by the run's pinned deployment, never the latest.

v1 and v2 of an app declare a query ``progress`` that answers differently; after ``prod``
moves to v2, a run pinned to v1 is still answered by v1's code, from its own journal and
state, and the run is left exactly as it was. A handler that issues a journaled command is
refused; a query its deployment does not declare is a 404 that names those it does.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli
from tether.errors import ApiError

APP = '''
import tether

app = tether.App("review")

@app.function
async def lookup(name: str) -> str:
    return name.upper()

@app.workflow(signals={{"go": bool}})
async def review(ctx: tether.Context, name: str) -> str:
    """Waits for go, then ends."""
    ctx.set("stage", "waiting")
    await ctx.signal("go")
    ctx.set("stage", "done")
    return name

@app.query(review)
async def progress(ctx: tether.QueryContext{PARAMS}) -> dict:
    """How far the review got."""
    return {{"version": "{VERSION}", "stage": ctx.state.get("stage"), "name": ctx.input["name"],
            "entries": len(ctx.journal){EXTRA}}}

{MORE}
'''

V1 = {
    "VERSION": "v1",
    "PARAMS": "",
    "EXTRA": "",
    "MORE": """
@app.query(review)
async def sneaky(ctx: tether.QueryContext) -> str:
    return await ctx.step(lookup, "x")

@app.query(review, name="boom")
def explode(ctx: tether.QueryContext) -> str:
    raise ValueError("no answer today")
""",
}
V2 = {"VERSION": "v2", "PARAMS": ", verbose: bool", "EXTRA": ', "verbose": verbose', "MORE": ""}


@pytest.fixture
def two_versions(server: ServerProcess, make_app: Callable[..., Path]) -> ServerProcess:
    server.call(lambda c: c.deploy(make_app("review-v1", APP.format(**V1)), env="prod"))
    return server


def refused(server: ServerProcess, run_id: str, name: str, payload: Any = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        server.call(lambda c: c.query(run_id, name, payload))
    return caught.value


def test_a_run_is_answered_by_its_pinned_deployment(two_versions: ServerProcess, make_app: Callable[..., Path]) -> None:
    server = two_versions
    old = server.call(lambda c: c.start_run("review", {"name": "ada"}, env="prod"))["id"]
    server.wait_for(old, {"suspended"})
    before = (server.call(lambda c: c.run(old)), server.call(lambda c: c.journal(old)))
    assert server.call(lambda c: c.query(old, "progress")) == {
        "version": "v1",
        "stage": "waiting",
        "name": "ada",
        "entries": 2,
    }

    server.call(lambda c: c.deploy(make_app("review-v2", APP.format(**V2)), env="prod"))
    new = server.call(lambda c: c.start_run("review", {"name": "bob"}, env="prod"))["id"]
    server.wait_for(new, {"suspended"})
    assert server.call(lambda c: c.query(new, "progress", {"verbose": True}))["version"] == "v2"
    # prod names v2 now; the v1 run is still answered by v1's code, which takes no parameter.
    answer = server.call(lambda c: c.query_answer(old, "progress"))
    assert answer["deployment_label"] == "v1"
    assert answer["output"]["version"] == "v1"
    assert refused(server, old, "progress", {"verbose": True}).http_status == 422

    shown = CliRunner().invoke(cli, ["--url", server.url, "query", old, "progress", "{}"])
    assert shown.exit_code == 0, shown.output
    assert "answered by v1" in shown.output and '"version": "v1"' in shown.output
    shown = CliRunner().invoke(cli, ["--url", server.url, "--json", "query", new, "progress", '{"verbose": false}'])
    assert json.loads(shown.output)["output"]["verbose"] is False

    # Queries leave the run as it was: same status, attempt and journal.
    assert (server.call(lambda c: c.run(old)), server.call(lambda c: c.journal(old))) == before
    server.call(lambda c: c.signal(old, "go", True))
    server.wait_for(old, {"completed"})
    done = server.call(lambda c: c.query(old, "progress"))
    assert (done["version"], done["stage"]) == ("v1", "done")


def test_refusals_say_what_to_do(two_versions: ServerProcess, make_app: Callable[..., Path]) -> None:
    server = two_versions
    run_id = server.call(lambda c: c.start_run("review", {"name": "ada"}, env="prod"))["id"]
    server.wait_for(run_id, {"suspended"})
    journal = server.call(lambda c: c.journal(run_id))

    sneaky = refused(server, run_id, "sneaky")
    assert (sneaky.http_status, sneaky.error_code) == (409, "query_refused")
    assert "ctx.step(lookup)" in sneaky.message and "read-only" in sneaky.message
    boom = refused(server, run_id, "boom")
    assert (boom.http_status, boom.error_code) == (409, "query_failed")
    assert "ValueError: no answer today" in boom.message
    missing = refused(server, run_id, "nosuch")
    assert missing.http_status == 404
    assert "declares no query 'nosuch'" in missing.message and "boom, progress, sneaky" in missing.message
    assert refused(server, "run_nosuch", "progress").http_status == 404
    not_object = httpx.post(f"{server.url}/v1/runs/{run_id}/queries/progress", json=[1], timeout=30)
    assert not_object.status_code == 400
    assert server.call(lambda c: c.journal(run_id)) == journal

    # The manifest holds each query's schemas, and the diff names what changed for callers.
    server.call(lambda c: c.deploy(make_app("review-v2", APP.format(**V2))))
    changes = {(c["component"], c["change"]) for c in server.call(lambda c: c.diff("v1", "v2"))["changes"]}
    assert ("review", "query progress signature changed") in changes
    assert ("review", "query sneaky removed") in changes
    shown = CliRunner().invoke(cli, ["--url", server.url, "deployments", "diff", "v1", "v2"])
    assert "query progress signature changed" in shown.output and "verbose" in shown.output
    # A run on v2, which no longer declares sneaky: a 404 naming v2, never another version's answer.
    on_v2 = server.call(lambda c: c.start_run("review", {"name": "cy"}, deployment="v2"))["id"]
    server.wait_for(on_v2, {"suspended"})
    gone = refused(server, on_v2, "sneaky")
    assert gone.http_status == 404 and "on v2" in gone.message


@pytest.fixture
def fast_reaping_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", tmp_path / "server.log", args=["--worker-idle-timeout", "1"])
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


def test_a_query_starts_the_pinned_deployments_worker_again(
    fast_reaping_server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server = fast_reaping_server
    server.call(lambda c: c.deploy(make_app("review-v1", APP.format(**V1)), env="prod"))
    run_id = server.call(lambda c: c.start_run("review", {"name": "ada"}, env="prod"))["id"]
    server.wait_for(run_id, {"suspended"})
    deadline = time.monotonic() + 20
    while server.call(lambda c: c.deployment("v1"))["workers"] != 0:
        assert time.monotonic() < deadline, "v1's worker should stop once idle"
        time.sleep(0.2)
    asleep = server.call(lambda c: c.deployment("v1"))["cold_starts"]
    assert server.call(lambda c: c.query(run_id, "progress"))["stage"] == "waiting"
    assert server.call(lambda c: c.deployment("v1"))["cold_starts"] == asleep + 1
    assert server.call(lambda c: c.run(run_id))["status"] == "suspended"
