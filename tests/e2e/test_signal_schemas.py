"""Signal payloads against another deployment's schemas, through a real server.

A move (or a check) validates the run's buffered signals against the target's declared
schemas; a payload the pinned code rejects when it replays or takes it makes the run
``stuck``, never ``failed``, and moving it back to code that accepts it resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli
from tether.errors import ApiError

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("review")

class Go(BaseModel):
    ok: bool

class Approval(BaseModel):
    {APPROVAL}

@app.workflow(signals={SIGNALS})
async def review(ctx: tether.Context, n: int) -> dict:
    """Waits for go, takes the approval, waits for go again."""
    await ctx.signal("go")
    {TAKE}
    await ctx.signal("go")
    return {{"approval": approval, "version": "{VERSION}"}}
'''

V1 = {
    "APPROVAL": "ok: bool",
    "SIGNALS": '{"go": Go, "approval": Approval}',
    "TAKE": 'approval = (await ctx.signal("approval")).model_dump()',
}
V2 = {**V1, "APPROVAL": "decision: str"}
"""v2 renamed the approval's field: a payload sent for v1 lacks what v2 requires."""
V3 = {**V1, "SIGNALS": '{"go": Go}', "TAKE": "approval = None"}
"""v3 no longer declares the approval signal at all."""


def deploy_versions(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    for version, parts in (("v1", V1), ("v2", V2), ("v3", V3)):
        folder = make_app(f"review-{version}", APP.format(VERSION=version, **parts))
        server.call(lambda c, folder=folder, version=version: c.deploy(folder, env="prod" if version == "v1" else None))


def refused(call: Callable[[], object], status: int) -> str:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.http_status == status, caught.value.message
    return caught.value.message


def verdict(server: ServerProcess, deployment: str, run_id: str) -> dict[str, Any]:
    report = server.call(lambda c: c.check(deployment, runs=[run_id]))
    (found,) = report["runs"]
    return found


def test_a_move_refuses_buffered_signals_the_target_rejects_and_a_forced_one_ends_stuck(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    deploy_versions(server, make_app)
    run = server.call(lambda c: c.start_run("review", {"n": 1}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    sent = server.call(lambda c: c.signal(run["id"], "approval", {"ok": True}))
    assert sent["buffered"] is True

    # The journal replays on v2 and v3; the buffered approval does not fit either.
    assert verdict(server, "v1", run["id"])["compatible"] is True
    on_v2 = verdict(server, "v2", run["id"])
    assert on_v2["compatible"] is False
    assert (
        "signal approval" in on_v2["error"]["message"]
        and "'decision' is a required property" in on_v2["error"]["message"]
    )
    assert [(s["signal"], s["id"]) for s in on_v2["signals"]] == [("approval", 1)]
    on_v3 = verdict(server, "v3", run["id"])
    assert on_v3["compatible"] is False and "declares no signal 'approval'" in on_v3["error"]["message"]

    message = refused(lambda: server.call(lambda c: c.move(run["id"], "v2")), 409)
    assert "signal approval" in message and "decision" in message and "--force --reason" in message
    out = CliRunner().invoke(cli, ["--url", server.url, "runs", "move", run["id"], "--to", "v3"])
    assert out.exit_code == 4 and "declares no signal 'approval'" in out.stderr
    assert server.call(lambda c: c.run(run["id"]))["deployment_id"] == server.call(lambda c: c.deployment("v1"))["id"]

    # Forced anyway: when v2's code takes the buffered approval, the run stops stuck, not failed.
    moved = server.call(lambda c: c.move(run["id"], "v2", force=True, reason="testing the override"))
    assert moved["status"] == "suspended"
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    stuck = server.wait_for(run["id"], {"stuck", "failed", "completed"})
    assert stuck["status"] == "stuck", stuck
    reason = stuck["stuck_reason"]
    assert reason["type"] == "SignalRejected"
    for part in ("signal 'approval'", "entry 1", "decision: Field required", "v2", "tether runs move"):
        assert part in reason["message"], reason["message"]

    # Moved back to the code that accepts it, the run resumes and finishes there.
    assert verdict(server, "v1", run["id"])["compatible"] is True
    server.call(lambda c: c.move(run["id"], "v1", reason="v2 rejects the approval"))
    server.wait_for(run["id"], {"suspended"})
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    done = server.call(lambda c: c.result(run["id"], wait=30))
    assert (done["status"], done["output"]) == ("completed", {"approval": {"ok": True}, "version": "v1"})


def test_a_journaled_signal_the_pinned_code_rejects_on_replay_makes_the_run_stuck(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    deploy_versions(server, make_app)
    run = server.call(lambda c: c.start_run("review", {"n": 2}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    server.call(lambda c: c.signal(run["id"], "approval", {"ok": False}))
    deadline = time.monotonic() + 30
    while True:
        entries = server.call(lambda c: c.journal(run["id"]))
        if len(entries) == 3 and server.call(lambda c: c.run(run["id"]))["status"] == "suspended":
            break
        assert time.monotonic() < deadline, entries
        time.sleep(0.05)
    assert entries[1]["result"] == {"ok": False}

    # The dry run replays the journaled approval with v2's model and says why it cannot.
    on_v2 = verdict(server, "v2", run["id"])
    assert on_v2["compatible"] is False
    assert "signal 'approval'" in on_v2["error"]["message"] and "entry 1" in on_v2["error"]["message"]
    assert "decision: Field required" in refused(lambda: server.call(lambda c: c.move(run["id"], "v2")), 409)

    server.call(lambda c: c.move(run["id"], "v2", force=True, reason="testing the override"))
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    stuck = server.wait_for(run["id"], {"stuck", "failed", "completed"})
    assert stuck["status"] == "stuck", stuck
    assert stuck["error"] is None
    assert "entry 1" in stuck["stuck_reason"]["message"] and "decision" in stuck["stuck_reason"]["message"]

    server.call(lambda c: c.move(run["id"], "v1", reason="back to the code that took it"))
    done = server.call(lambda c: c.result(run["id"], wait=30))
    assert (done["status"], done["output"]) == ("completed", {"approval": {"ok": False}, "version": "v1"})
