"""A workflow that reads the clock stops ``stuck`` on a real server, at its line, visible in
``tether runs show`` and the worker's log; fixed code deployed and moved to finishes the run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess

APP = """
import time

import tether

app = tether.App("clock")


@app.function
async def stamp(label: str) -> str:
    return f"{label} at {time.time()}"


@app.workflow
async def report(ctx: tether.Context, label: str) -> str:
    first = await ctx.step(stamp, label)
    started = time.time()
    return f"{first}, started {started}"
"""


def test_a_clock_read_in_a_workflow_is_stuck_at_its_line_until_fixed_code_takes_the_run(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    folder = make_app("clock", APP)
    server.call(lambda c: c.deploy(folder, env="prod", isolation="process"))
    run_id = server.call(lambda c: c.start_run("report", {"label": "r"}, env="prod"))["id"]
    stuck = server.wait_for(run_id, {"stuck", "completed", "failed"})
    assert stuck["status"] == "stuck", stuck
    reason = stuck["stuck_reason"]
    line = APP.splitlines().index("    started = time.time()") + 1
    assert reason["type"] == "NonDeterministicCall"
    assert f"app.py:{line}: workflow report called time.time()" in reason["message"]
    assert "Use ctx.now()" in reason["message"]

    shown = subprocess.run(
        [sys.executable, "-m", "tether", "--url", server.url, "runs", "show", run_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and f"app.py:{line}: workflow report called time.time()" in shown.stdout
    logs = "".join(p.read_text(errors="replace") for p in (server.data_dir / "logs").glob("worker-*.log"))
    assert f"run {run_id} stuck" in logs and "time.time()" in logs

    fixed = APP.replace("started = time.time()", "started = ctx.now().timestamp()")
    server.call(lambda c: c.deploy(make_app("clock-fixed", fixed), env="prod", isolation="process"))
    server.call(lambda c: c.move(run_id, "v2", reason="read the clock through the context"))
    done = server.wait_for(run_id, {"completed", "failed", "stuck"})
    assert done["status"] == "completed", done
    assert str(done["output"]).startswith("r at ")
