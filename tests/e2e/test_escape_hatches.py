"""Escape hatches through a real server: pause/resume, kill, restart, fork, check, move; all audited."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tether.errors import ApiError

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("ops")

class Go(BaseModel):
    ok: bool

@app.function
async def score(effects: str, n: int) -> int:
    """Scores n (and leaves a trace)."""
    with open(effects, "a") as f:
        f.write(f"score {{n}}\\n")
    return n * 10

@app.function
async def score_v2(effects: str, n: int) -> int:
    """Scores n another way."""
    return n * 20

@app.workflow(signals={{"go": Go}})
async def flow(ctx: tether.Context, effects: str, n: int) -> dict:
    """Scores, waits for go, scores again."""
    first = await ctx.step({FIRST}, effects, n)
    await ctx.signal("go")
    second = await ctx.step(score, effects, n + 1)
    return {{"first": first, "second": second, "version": "{VERSION}"}}
'''


def app_version(make_app: Callable[..., Path], version: str, first: str = "score") -> Path:
    return make_app(f"ops-{version}", APP.format(FIRST=first, VERSION=version))


def refused(call: Callable[[], object], status: int) -> str:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.http_status == status, caught.value.message
    return caught.value.message


def test_pause_resume_kill_restart_fork(server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path) -> None:
    effects = str(tmp_path / "effects.txt")
    server.call(lambda c: c.deploy(app_version(make_app, "v1"), env="prod", isolation="process"))
    run = server.call(lambda c: c.start_run("flow", {"effects": effects, "n": 1}, env="prod"))
    server.wait_for(run["id"], {"suspended"})

    assert server.call(lambda c: c.pause(run["id"], reason="investigating"))["status"] == "paused"
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    assert server.call(lambda c: c.result(run["id"], wait=1.5))["status"] == "paused"
    resumed = server.call(lambda c: c.resume(run["id"], reason="all good"))
    assert resumed["status"] == "suspended"
    done = server.call(lambda c: c.result(run["id"], wait=30))
    assert done["output"] == {"first": 10, "second": 20, "version": "v1"}
    assert "not paused" in refused(lambda: server.call(lambda c: c.resume(run["id"])), 409)

    again = server.call(lambda c: c.restart(run["id"], reason="replay for the report"))
    assert (again["linked_from"], again["link_kind"], again["input"]) == (run["id"], "restart", run["input"])
    server.wait_for(again["id"], {"suspended"})

    assert server.call(lambda c: c.kill(again["id"], reason="not needed"))["status"] == "killed"
    assert "takes no more signals" in refused(
        lambda: server.call(lambda c: c.signal(again["id"], "go", {"ok": True})), 409
    )
    assert "already killed" in refused(lambda: server.call(lambda c: c.kill(again["id"])), 409)

    # Fork the finished run after its first two entries: step 0 and the signal are kept.
    forked = server.call(lambda c: c.fork(run["id"], from_entry=2, reason="re-run the end"))
    assert forked["link_kind"] == "fork"
    assert server.call(lambda c: c.result(forked["id"], wait=30))["output"] == {
        "first": 10,
        "second": 20,
        "version": "v1",
    }
    assert Path(effects).read_text().split("\n").count("score 1") == 2  # the run and the restart, not the fork
    waiting = server.call(lambda c: c.start_run("flow", {"effects": effects, "n": 5}, env="prod"))
    server.wait_for(waiting["id"], {"suspended"})
    message = refused(lambda: server.call(lambda c: c.fork(waiting["id"], from_entry=2)), 409)
    assert "entry 1" in message and "has not completed" in message

    actions = [(a["action"], a["target"], a["actor"]) for a in server.call(lambda c: c.audit())]
    for action, target in (
        ("run.pause", run["id"]),
        ("run.resume", run["id"]),
        ("run.restart", run["id"]),
        ("run.kill", again["id"]),
        ("run.fork", run["id"]),
    ):
        assert (action, target, "tests") in actions


def test_move_needs_a_clean_dry_run_or_force_and_rescues_stuck_runs(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    effects = str(tmp_path / "effects.txt")
    server.call(lambda c: c.deploy(app_version(make_app, "v1"), env="prod", isolation="process"))
    run = server.call(lambda c: c.start_run("flow", {"effects": effects, "n": 2}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    server.call(lambda c: c.deploy(app_version(make_app, "v2", first="score_v2"), env=None, isolation="process"))
    server.call(lambda c: c.deploy(app_version(make_app, "v3"), env=None, isolation="process"))

    report = server.call(lambda c: c.check("v2"))
    (verdict,) = [v for v in report["runs"] if v["run_id"] == run["id"]]
    assert verdict["compatible"] is False
    assert verdict["mismatch"]["message"].startswith("entry 0: journal has step score(")
    assert "code issued step score_v2(" in verdict["mismatch"]["message"]
    assert server.call(lambda c: c.check("v3"))["runs"][0]["compatible"] is True

    message = refused(lambda: server.call(lambda c: c.move(run["id"], "v2")), 409)
    assert "does not replay on v2" in message and "score_v2" in message and "--force --reason" in message
    assert "needs a reason" in refused(lambda: server.call(lambda c: c.move(run["id"], "v2", force=True)), 400)

    # Forced onto incompatible code, the run gets stuck loudly when it resumes ...
    server.call(lambda c: c.move(run["id"], "v2", force=True, reason="testing the override"))
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    stuck = server.wait_for(run["id"], {"stuck", "completed", "failed"})
    assert stuck["status"] == "stuck" and stuck["stuck_reason"]["index"] == 0
    # ... and moving it to compatible code rescues it: it resumes and finishes there.
    moved = server.call(lambda c: c.move(run["id"], "v3", reason="the fix"))
    done = server.call(lambda c: c.result(moved["id"], wait=30))
    assert (done["status"], done["output"]) == ("completed", {"first": 20, "second": 30, "version": "v3"})
    assert Path(effects).read_text().split("\n").count("score 2") == 1  # step 0 never ran again

    moves = [a for a in server.call(lambda c: c.audit()) if a["action"] == "run.move"]
    assert [m["details"]["forced"] for m in moves] == [False, True]
    assert moves[0]["details"]["check"]["compatible"] is True
    assert moves[1]["details"]["reason"] == "testing the override"
