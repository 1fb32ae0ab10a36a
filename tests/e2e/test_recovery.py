"""kill -9 the server mid-run: every run completes after a restart, nothing journaled runs twice."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess

EFFECTS_APP = '''
import asyncio
import tether

app = tether.App("effects")

@app.function
async def record(effects: str, tag: str, delay: float) -> str:
    """Appends a side effect to a file, then takes its time."""
    with open(effects, "a") as f:
        f.write(tag + "\\n")
    await asyncio.sleep(delay)
    return tag

@app.workflow
async def chain(ctx: tether.Context, effects: str, steps: int, delay: float) -> int:
    """A run of slow steps."""
    for i in range(steps):
        await ctx.step(record, effects, f"{ctx.info.run_id}:{i}", delay)
    return steps

@app.workflow
async def sleeper(ctx: tether.Context, effects: str, seconds: float) -> str:
    """A step, a durable timer, a step."""
    await ctx.step(record, effects, f"{ctx.info.run_id}:before", 0)
    await ctx.sleep(seconds)
    await ctx.step(record, effects, f"{ctx.info.run_id}:after", 0)
    return "woke"
'''


def _worker_pids(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"tether._worker" in cmdline and str(parent).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_kill_9_mid_run_loses_nothing_and_repeats_no_journaled_step(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    effects = str(tmp_path / "effects.txt")
    server.call(lambda c: c.deploy(make_app("effects", EFFECTS_APP), env="prod", isolation="process"))
    chains = [
        server.call(lambda c: c.start_run("chain", {"effects": effects, "steps": 8, "delay": 0.25}, env="prod"))["id"]
        for _ in range(4)
    ]
    sleepers = [
        server.call(lambda c: c.start_run("sleeper", {"effects": effects, "seconds": 2.0}, env="prod"))["id"]
        for _ in range(3)
    ]
    for run_id in sleepers:
        server.wait_for(run_id, {"suspended"})
    # Let the chains get some steps journaled, then crash while they are mid-step.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(len(server.call(lambda c, r=r: c.journal(r))) >= 2 for r in chains):
            break
        time.sleep(0.05)
    before = {r: server.call(lambda c, r=r: c.journal(r)) for r in chains + sleepers}
    assert server.process is not None
    server_pid = server.process.pid
    assert _worker_pids(server_pid), "a worker should be running for the deployment"
    server.kill9()
    journaled_before = {e["result"] for entries in before.values() for e in entries if e["kind"] == "step"}
    assert journaled_before, "some steps should have been journaled before the crash"

    # Workers notice their runtime died and exit: no orphan keeps executing steps.
    deadline = time.monotonic() + 5
    while _worker_pids(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _worker_pids(server_pid) == []

    server.start()
    for run_id in chains:
        done = server.call(lambda c, r=run_id: c.result(r, wait=60))
        assert (done["status"], done["output"]) == ("completed", 8), done
    for run_id in sleepers:
        done = server.call(lambda c, r=run_id: c.result(r, wait=60))
        assert (done["status"], done["output"]) == ("completed", "woke"), done

    counts = Counter(Path(effects).read_text().split())
    # A step journaled before the crash never runs again; others ran at least once.
    for tag in journaled_before:
        assert counts[tag] == 1, f"{tag} was journaled before the crash but executed {counts[tag]} times"
    for run_id in chains:
        assert all(counts[f"{run_id}:{i}"] >= 1 for i in range(8))
        journal = server.call(lambda c, r=run_id: c.journal(r))
        assert [e["result"] for e in journal] == [f"{run_id}:{i}" for i in range(8)]
    for run_id in sleepers:
        # The timer fired once: one sleep entry, one step after it.
        journal = server.call(lambda c, r=run_id: c.journal(r))
        assert [e["kind"] for e in journal] == ["step", "sleep", "step"]
        assert counts[f"{run_id}:after"] == 1 and counts[f"{run_id}:before"] == 1
    assert os.path.exists(server.data_dir / "tether.db")
