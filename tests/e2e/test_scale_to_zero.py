"""Scale to zero: an idle deployment's worker exits; a later signal starts one again from the artifact."""

from __future__ import annotations

import re
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

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("fraud")

class Approval(BaseModel):
    ok: bool

@app.tool
async def compute_risk_score(amount: int) -> str:
    """Returns a risk score."""
    return "{VERSION}-score-" + str(amount)

@app.workflow(signals={{"approval": Approval}})
async def review(ctx: tether.Context, amount: int) -> dict:
    """Reviews a transaction."""
    before = await ctx.step(compute_risk_score, amount)
    approval = await ctx.signal("approval")
    after = await ctx.step(compute_risk_score, amount + 1)
    return {{"before": before, "after": after, "ok": approval.ok, "label": ctx.info.deployment_label}}
'''

REAP_WAIT = 30.0
"""The dispatcher reaps idle workers about every 5 s; with a 1 s idle timeout one is gone well within this
(a bound, not a measurement: a loaded machine may take longer than on a quiet one)."""


@pytest.fixture(params=["--warm-spares", "--no-warm-spares"])
def fast_reaping_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    args = ["--worker-idle-timeout", "1", request.param]
    proc = ServerProcess(tmp_path / "data", tmp_path / "server.log", args=args)
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


def worker_children(server_pid: int) -> list[int]:
    """Pids of live ``tether._worker`` processes whose parent is the server."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == server_pid and state != "Z" and b"tether._worker" in cmdline:
            found.append(int(entry.name))
    return found


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match is not None, text
    return float(match.group(1))


def test_signal_wakes_a_run_whose_worker_scaled_to_zero(
    fast_reaping_server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server = fast_reaping_server
    assert server.process is not None
    v1 = server.call(lambda c: c.deploy(make_app("fraud-v1", APP.format(VERSION="v1")), env="prod"))
    run = server.call(lambda c: c.start_run("review", {"amount": 8}, env="prod"))
    assert run["deployment_id"] == v1["id"]
    # prod moves on while the run waits: the run stays pinned to v1, which is now draining.
    v2 = server.call(lambda c: c.deploy(make_app("fraud-v2", APP.format(VERSION="v2")), env="prod"))
    assert v2["label"] == "v2"
    server.wait_for(run["id"], {"suspended"})
    assert worker_children(server.process.pid), "the deployments' workers should be running before the timeout"

    # Idle for longer than the timeout: every worker exits, the suspended run keeps nothing alive
    # but the warm spare (a started interpreter that is no deployment's worker), if it is on.
    spares = 0 if "--no-warm-spares" in server.args else 1
    deadline = time.monotonic() + REAP_WAIT
    while len(worker_children(server.process.pid)) != spares or metric(server, "tether_workers_alive") != 0:
        assert time.monotonic() < deadline, f"workers still alive: {worker_children(server.process.pid)}"
        time.sleep(0.1)
    assert metric(server, "tether_warm_spares") == spares
    asleep: dict[str, Any] = server.call(lambda c: c.deployment("v1"))
    assert (asleep["status"], asleep["in_flight"], asleep["runs_by_status"]) == ("draining", 1, {"suspended": 1})
    assert (asleep["workers"], asleep["worker_started_at"], asleep["cold_starts"]) == (0, None, 1)
    assert asleep["cold_start_seconds"]["last"] > 0
    assert server.call(lambda c: c.run(run["id"]))["status"] == "suspended"

    # A signal starts v1's worker again from the stored artifact and the run completes on v1.
    server.call(lambda c: c.signal(run["id"], "approval", {"ok": True}))
    done = server.wait_for(run["id"], {"completed", "failed", "stuck"})
    assert done["status"] == "completed", done
    assert done["deployment_id"] == v1["id"]
    assert done["output"] == {"before": "v1-score-8", "after": "v1-score-9", "ok": True, "label": "v1"}

    woke: dict[str, Any] = server.call(lambda c: c.deployment("v1"))
    assert (woke["status"], woke["in_flight"], woke["runs_by_status"]) == ("drained", 0, {})
    assert woke["cold_starts"] == 2
    took = woke["cold_start_seconds"]
    assert took["last"] > 0 and took["mean"] > 0
    listed = {d["label"]: d for d in server.call(lambda c: c.deployments())}
    assert (listed["v1"]["cold_starts"], listed["v2"]["cold_starts"]) == (2, 1)
    assert listed["v2"]["workers"] == 0 and listed["v2"]["status"] == "active"
    assert metric(server, "tether_worker_cold_starts_total") == 3

    shown = CliRunner().invoke(cli, ["--url", server.url, "deployments", "show", "v1"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert re.search(r"cold starts: 2 \(last \d+\.\d\ds, mean \d+\.\d\ds\)", shown.stdout), shown.stdout


def test_a_woken_run_still_proves_its_files_whoever_starts_its_worker(
    fast_reaping_server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    """Edited after it was unpacked, while its worker slept: the wake refuses the code, by a warm
    spare (which is handed a copy of the folder and proves it before importing it) as by a cold start."""
    server = fast_reaping_server
    assert server.process is not None
    v1 = server.call(lambda c: c.deploy(make_app("fraud-v1", APP.format(VERSION="v1")), env="prod"))
    run = server.call(lambda c: c.start_run("review", {"amount": 8}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    deadline = time.monotonic() + REAP_WAIT
    while metric(server, "tether_workers_alive") != 0:
        assert time.monotonic() < deadline, "the worker did not idle out"
        time.sleep(0.1)
    folder = server.data_dir / "bundles" / str(v1["bundle_digest"])
    module = folder / "app.py"
    folder.chmod(0o755)
    module.chmod(0o644)
    module.write_text(module.read_text().replace('"v1-score-"', '"forged-score-"'))

    logged = len(server.log_path.read_text(errors="replace"))
    server.call(lambda c: c.signal(run["id"], "approval", {"ok": True}))
    done = server.wait_for(run["id"], {"completed", "failed", "stuck"})
    assert done["status"] == "stuck", done
    reason = done["stuck_reason"]
    assert reason["type"] == "CodeChanged" and "app.py: changed" in reason["message"], reason
    # Nothing of the edited code ran: the journal holds the first step and the signal only.
    assert [e["kind"] for e in server.call(lambda c: c.journal(run["id"]))] == ["step", "signal"]
    took_over = "a warm spare" in server.log_path.read_text(errors="replace")[logged:]
    assert took_over == ("--warm-spares" in server.args)
