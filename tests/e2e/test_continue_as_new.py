"""continue_as_new: a long run moves to the environment's current deployment at a safe point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("long")

class Go(BaseModel):
    ok: bool

@app.workflow(signals={{"go": Go}})
async def cycle(ctx: tether.Context, n: int, until: int, upgrade: bool = True) -> dict:
    """Waits for go, then either continues as new or finishes."""
    await ctx.signal("go")
    if n < until:
        ctx.continue_as_new({{"n": n + 1, "until": until, "upgrade": upgrade}}, upgrade=upgrade)
    return {{"n": n, "version": "{VERSION}"}}
'''


def test_continue_as_new_upgrades_to_the_current_deployment(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    v1 = server.call(lambda c: c.deploy(make_app("v1", APP.format(VERSION="v1")), env="prod"))
    first = server.call(lambda c: c.start_run("cycle", {"n": 0, "until": 1}, env="prod"))
    pinned = server.call(lambda c: c.start_run("cycle", {"n": 0, "until": 1, "upgrade": False}, env="prod"))
    for run in (first, pinned):
        server.wait_for(run["id"], {"suspended"})
    v2 = server.call(lambda c: c.deploy(make_app("v2", APP.format(VERSION="v2")), env="prod"))

    followers = {}
    for run in (first, pinned):
        server.call(lambda c, r=run: c.signal(r["id"], "go", {"ok": True}))
        done = server.call(lambda c, r=run: c.result(r["id"], wait=30))
        assert done["status"] == "completed" and done["deployment_id"] == v1["id"]
        followers[run["id"]] = done["output"]["continued_as"]
        assert [e["kind"] for e in server.call(lambda c, r=run: c.journal(r["id"]))] == ["signal", "continue_as_new"]

    upgraded = server.call(lambda c: c.run(followers[first["id"]]))
    stayed = server.call(lambda c: c.run(followers[pinned["id"]]))
    assert (upgraded["linked_from"], upgraded["link_kind"]) == (first["id"], "continue_as_new")
    assert upgraded["deployment_id"] == v2["id"] and stayed["deployment_id"] == v1["id"]
    assert upgraded["input"] == {"n": 1, "until": 1, "upgrade": True}
    for follower, version in ((upgraded, "v2"), (stayed, "v1")):
        server.wait_for(follower["id"], {"suspended"})
        server.call(lambda c, f=follower: c.signal(f["id"], "go", {"ok": True}))
        assert server.call(lambda c, f=follower: c.result(f["id"], wait=30))["output"] == {"n": 1, "version": version}


def test_continue_as_new_refuses_a_deployment_without_the_workflow(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server.call(lambda c: c.deploy(make_app("v1", APP.format(VERSION="v1")), env="prod"))
    run = server.call(lambda c: c.start_run("cycle", {"n": 0, "until": 1}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    other = APP.format(VERSION="v2").replace("async def cycle(", "async def renamed(")
    server.call(lambda c: c.deploy(make_app("v2", other), env="prod"))
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    done = server.call(lambda c: c.result(run["id"], wait=30))
    assert done["status"] == "failed" and done["error"]["type"] == "ContinueAsNewRefused"
    assert done["error"]["message"] == "cannot continue as new on v2: it has no workflow 'cycle'"
    assert len(server.call(lambda c: c.runs())) == 1
