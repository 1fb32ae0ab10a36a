"""bench/failover: kill -9 one of two tether nodes on one PostgreSQL and measure the take-over.

bench/failover [--runs 50] [--steps 5] [--step-seconds 1] [--lease-timeout 3] [--reps 3]

Per repetition: a fresh database on the project's PostgreSQL (``scripts/postgres``), two
``tether server`` nodes (``--node-id a`` and ``b``, the same ``--lease-timeout``), an app whose
step appends one line per execution to a side-effect file and then sleeps; ``--runs`` runs of
``--steps`` steps started on node a (which runs them and holds their leases); once every run has
journaled a step, node a and its workers get SIGKILL. From the kill, polling node b: the time
until node a's leases lapsed, until node b runs a new attempt of every run node a held (the
take-over), until every run completed; then the runs lost, the steps executed again (those
journaled before the kill: must be none; those in flight at the kill: at-least-once allows
them), and whether any journal has two entries at one index.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from . import procs, report
from .http1 import Http1Client
from .main import postgres_database
from .paths import BENCH, RESULTS
from .systems import TetherSystem, command_output, until

APP = '''"""bench/failover's app: a run of slow steps, each leaving one line per execution in a file."""

import asyncio

import tether

app = tether.App("failover")


@app.function
async def record(effects: str, tag: str, seconds: float) -> str:
    """Appends the step's tag to the side-effect file (one line per execution), then sleeps."""
    with open(effects, "a") as f:
        f.write(tag + "\\n")
    await asyncio.sleep(seconds)
    return tag


@app.workflow
async def chain(ctx: tether.Context, effects: str, steps: int, seconds: float) -> int:
    """``steps`` steps, one after the other."""
    for i in range(steps):
        await ctx.step(record, effects, f"{ctx.info.run_id}:{i}", seconds)
    return steps
'''

ENV = "failover"
TERMINAL = {"completed", "failed", "cancelled", "killed", "stuck"}
POLL_S = 0.05


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/failover", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs started on node a (default 50)")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (default 5)")
    parser.add_argument("--step-seconds", type=float, default=1.0, help="how long each step sleeps (default 1)")
    parser.add_argument(
        "--lease-timeout", type=float, default=3.0, help="both nodes' --lease-timeout in seconds (default 3)"
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions, each on a fresh database (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the markdown table")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, side-effect files)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.steps < 2 or args.reps < 1:
        parser.error("--runs and --reps must be at least 1 and --steps at least 2 (the kill comes after a step)")
    if args.step_seconds <= 0 or args.lease_timeout < 0.5:
        parser.error("--step-seconds must be positive and --lease-timeout at least 0.5")
    return args


def log(text: str) -> None:
    print(f"failover [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def deploy(node: TetherSystem, app_dir: Path) -> None:
    """Deploy the app to ``ENV`` with process isolation: the steps write a file outside any jail."""
    from tether.client import Client

    async with Client(node.url, actor="bench", timeout=120.0) as client:
        await client.deploy(app_dir, env=ENV, isolation="process")


async def runs_now(http: Http1Client, limit: int) -> dict[str, dict[str, Any]]:
    _, answer = await http.request("GET", f"/v1/runs?env={ENV}&limit={limit}")
    return {run["id"]: run for run in answer["runs"]}


async def journal(http: Http1Client, run_id: str) -> list[dict[str, Any]]:
    _, answer = await http.request("GET", f"/v1/runs/{run_id}/journal?limit=1000")
    return list(answer["entries"])


def kill_node(node: TetherSystem) -> list[int]:
    """SIGKILL the node's server and every process below it (its workers and warm spares), at once."""
    assert node.server is not None
    server = node.server.pid
    below = procs.descendants([server])
    for pid in [server, *below]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [server, *below]


async def one_rep(args: argparse.Namespace, reaper: procs.Reaper, workdir: Path, rep: int) -> dict[str, Any]:
    url, drop = postgres_database()
    a = TetherSystem(reaper, workdir / "node-a", store=url, node_id="a", lease_timeout=args.lease_timeout)
    b = TetherSystem(reaper, workdir / "node-b", store=url, node_id="b", lease_timeout=args.lease_timeout)
    effects = workdir / "effects.txt"
    app_dir = workdir / "app"
    app_dir.mkdir(parents=True)
    (app_dir / "tether.toml").write_text('app = "failover:app"\n')
    (app_dir / "failover.py").write_text(APP)
    try:
        log(f"repetition {rep}: starting nodes a and b (lease timeout {args.lease_timeout:g} s)")
        await a.start(deploy=False)
        await b.start(deploy=False)
        await deploy(a, app_dir)
        assert a.http is not None and b.http is not None
        http_a, http_b = a.http, b.http
        body = {"effects": str(effects), "steps": args.steps, "seconds": args.step_seconds}

        async def start(_: int) -> str:
            status, run = await http_a.request("POST", f"/v1/envs/{ENV}/workflows/chain/runs", body)
            if status != 201:
                raise RuntimeError(f"starting a run on node a: {status} {run}")
            return str(run["id"])

        log(f"repetition {rep}: starting {args.runs} runs of {args.steps} steps ({args.step_seconds:g} s each) on a")
        run_ids = list(await asyncio.gather(*(start(i) for i in range(args.runs))))

        pending = set(run_ids)

        async def each_journaled_a_step() -> bool:
            journals = await asyncio.gather(*(journal(http_b, r) for r in sorted(pending)))
            for run_id, entries in zip(sorted(pending), journals, strict=True):
                if any(e["completed"] for e in entries):
                    pending.discard(run_id)
            return not pending

        await until(each_journaled_a_step, 120, "every run to journal a step", interval=0.1)

        # Just before the kill: who runs what, at which attempt.
        before = await runs_now(http_b, args.runs + 10)
        held_by_a = {r for r, run in before.items() if run["node"] == "a" and run["status"] == "running"}
        attempt_at_kill = {r: int(run["attempt"]) for r, run in before.items()}
        killed_pids = kill_node(a)
        killed = time.monotonic()
        log(f"repetition {rep}: kill -9 node a ({len(killed_pids)} processes) holding {len(held_by_a)} leases")
        assert a.server is not None
        await until(lambda: a.server is not None and a.server.popen.poll() is not None, 10, "node a to exit")
        executed_at_kill = set(effects.read_text().split()) if effects.exists() else set()

        lapsed_s: float | None = None
        takeover_s: float | None = None
        done_s: float | None = None
        node_a_dead_s: float | None = None
        deadline = killed + 60 + args.lease_timeout * 3 + args.steps * args.step_seconds * 2
        while done_s is None:
            if time.monotonic() > deadline:
                break
            runs = await runs_now(http_b, args.runs + 10)
            now = time.monotonic() - killed
            if lapsed_s is None and not any(runs[r]["node"] == "a" for r in held_by_a):
                lapsed_s = now
            # Taken over: node b runs a new attempt of it (or already finished it).
            if takeover_s is None and all(
                runs[r]["attempt"] > attempt_at_kill[r] and (runs[r]["node"] == "b" or runs[r]["status"] in TERMINAL)
                for r in held_by_a
            ):
                takeover_s = now
            if node_a_dead_s is None:
                _, nodes = await http_b.request("GET", "/v1/nodes")
                if any(n["id"] == "a" and not n["alive"] for n in nodes["nodes"]):
                    node_a_dead_s = time.monotonic() - killed
            if all(run["status"] in TERMINAL for run in runs.values()):
                done_s = now
            await asyncio.sleep(POLL_S)

        runs = await runs_now(http_b, args.runs + 10)
        lost = sorted(r for r in run_ids if runs[r]["status"] != "completed" or runs[r]["output"] != args.steps)
        counts = Counter(effects.read_text().split())
        journals = dict(zip(run_ids, await asyncio.gather(*(journal(http_b, r) for r in run_ids)), strict=True))
        forked = []
        journaled_by_a: set[str] = set()
        for run_id, entries in journals.items():
            indexes = [e["index"] for e in entries]
            if indexes != list(range(len(entries))) or len(set(indexes)) != len(indexes):
                forked.append(run_id)
            # An entry of an attempt up to the one running at the kill was journaled by node a
            # before it died: its step must never run again.
            journaled_by_a |= {str(e["result"]) for e in entries if e["attempt"] <= attempt_at_kill[run_id]}
        again = {tag: n - 1 for tag, n in counts.items() if n > 1}
        journaled_again = {tag: n for tag, n in again.items() if tag in journaled_by_a}
        in_flight = executed_at_kill - journaled_by_a
        never_ran = [f"{r}:{i}" for r in run_ids for i in range(args.steps) if counts[f"{r}:{i}"] == 0]
        row = {
            "runs": len(run_ids),
            "held_by_a": len(held_by_a),
            "steps_journaled_by_a": len(journaled_by_a),
            "lease_lapsed_s": lapsed_s,
            "node_a_dead_s": node_a_dead_s,
            "takeover_s": takeover_s,
            "all_completed_s": done_s,
            "runs_lost": len(lost),
            "lost": lost[:10],
            "steps_in_flight_at_kill": len(in_flight),
            "steps_executed_again": sum(again.values()),
            "journaled_steps_executed_again": sum(journaled_again.values()),
            "in_flight_steps_executed_again": sum(n for tag, n in again.items() if tag in in_flight),
            "other_steps_executed_again": sum(
                n for tag, n in again.items() if tag not in in_flight and tag not in journaled_by_a
            ),
            "steps_never_executed": len(never_ran),
            "forked_journals": len(forked),
            "attempts": dict(Counter(int(run["attempt"]) for run in runs.values())),
        }
        log(
            f"repetition {rep}: take-over {_s(takeover_s)}, all completed {_s(done_s)}, lost {len(lost)}, "
            f"steps executed again {row['steps_executed_again']} (journaled before the kill: "
            f"{row['journaled_steps_executed_again']})"
        )
        return row
    finally:
        log(f"repetition {rep}: stopping node b")
        for node in (a, b):
            await node.stop()
        log(f"repetition {rep}: dropping the database")
        drop()
        log(f"repetition {rep}: done")


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def violations(row: dict[str, Any]) -> list[str]:
    """What must never happen, in words (empty: the repetition kept every promise)."""
    out = []
    if row["runs_lost"]:
        out.append(f"{row['runs_lost']} runs not completed: {row['lost']}")
    if row["journaled_steps_executed_again"]:
        out.append(f"{row['journaled_steps_executed_again']} steps journaled before the kill executed again")
    if row["forked_journals"]:
        out.append(f"{row['forked_journals']} journals with two entries at one index (or a gap)")
    if row["steps_never_executed"]:
        out.append(f"{row['steps_never_executed']} steps never executed")
    if row["takeover_s"] is None:
        out.append("node b never ran a new attempt of every run node a held")
    if row["held_by_a"] != row["runs"]:
        out.append(f"only {row['held_by_a']} of {row['runs']} runs were held by node a at the kill")
    return out


def render(run: dict[str, Any]) -> str:
    cfg = run["config"]
    rows = [r for r in run["reps"] if isinstance(r, dict)]
    out: list[str] = []
    add = out.append
    add(f"# Failover: kill -9 one of two tether nodes on PostgreSQL — {run['date']} on {run['machine']['host']}")
    add("")
    add(
        f"Command: `{cfg['command']}` · repetitions: {cfg['reps']} · values are the median (min..max) over "
        f"the repetitions · tether {run['tether']} · wall time {run['elapsed_s']:.0f} s"
    )
    add("")
    add(
        f"Each repetition: a fresh database on the PostgreSQL of `scripts/postgres`; two nodes, `tether server "
        f"--store postgresql://… --node-id a` and `--node-id b`, both `--lease-timeout {cfg['lease_timeout']:g}` "
        f"(a node renews its leases every {cfg['lease_timeout'] / 3:.2g} s); {cfg['runs']} runs of {cfg['steps']} "
        f"steps started on node a, which runs them and holds their leases; each step appends one line to a "
        f"side-effect file, then sleeps {cfg['step_seconds']:g} s. Once every run has journaled a step, node a "
        "and its workers get SIGKILL at once; node b is polled every 50 ms (`GET /v1/runs`, `GET /v1/nodes`). "
        f"Machine: {run['machine']['cores']} cores ({run['machine']['cpu']}), shared with PostgreSQL and "
        "this process."
    )
    add("")
    add("| measure (from the kill) | value |")
    add("| --- | --- |")

    def col(key: str, fmt: str = "{:.2f}") -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        missing = len(rows) - len(values)
        text = report.med(values, fmt)
        return text + (f"; never in {missing} repetitions" if missing else "")

    add(f"| node a's leases lapsed: no run shows node a as its node, s | {col('lease_lapsed_s')} |")
    add(f"| node b lists node a as not alive (`GET /v1/nodes`), s | {col('node_a_dead_s')} |")
    add(f"| **time to take over**: node b runs a new attempt of every run node a held, s | **{col('takeover_s')}** |")
    add(f"| **time until every run completed**, s | **{col('all_completed_s')}** |")
    add(f"| runs held by node a at the kill | {col('held_by_a', '{:.0f}')} |")
    add(f"| **runs lost** (not completed) | **{col('runs_lost', '{:.0f}')}** |")
    add(f"| steps journaled by node a before the kill | {col('steps_journaled_by_a', '{:.0f}')} |")
    add(f"| **of these, executed again** (must be 0) | **{col('journaled_steps_executed_again', '{:.0f}')}** |")
    add(
        "| steps in flight at the kill (their line written, not journaled) "
        f"| {col('steps_in_flight_at_kill', '{:.0f}')} |"
    )
    add(
        f"| **steps executed again** (all of them in flight at the kill: at-least-once) "
        f"| **{col('steps_executed_again', '{:.0f}')}** |"
    )
    add(f"| journals with two entries at one index | {col('forked_journals', '{:.0f}')} |")
    add("")
    add(
        "| repetition | lease lapsed s | take-over s | all completed s | runs lost | steps executed again "
        "(journaled before the kill) | steps in flight at the kill | forked journals |"
    )
    add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, r in enumerate(run["reps"], 1):
        if isinstance(r, str):
            add(f"| {i} | error: {r} | | | | | | |")
            continue
        add(
            f"| {i} | {_n(r['lease_lapsed_s'])} | {_n(r['takeover_s'])} | {_n(r['all_completed_s'])} "
            f"| {r['runs_lost']} | {r['steps_executed_again']} ({r['journaled_steps_executed_again']}) "
            f"| {r['steps_in_flight_at_kill']} | {r['forked_journals']} |"
        )
    add("")
    lease = cfg["lease_timeout"]
    add(
        f"Expected take-over: node a's last renewal was up to {lease / 3:.2g} s before the kill, its leases lapse "
        f"{lease:g} s after it, and node b's heartbeat (every {lease / 3:.2g} s) takes them: between "
        f"{lease * 2 / 3:.2g} and {lease * 4 / 3:.2g} s, plus the claim and the worker's start. A step "
        "executed again was executing when node a died (its line written, its result not journaled); "
        "node b's attempt replays what node a journaled and runs that step again."
    )
    add("")
    if run["errors"]:
        add("## Errors")
        add("")
        for err in run["errors"]:
            add(f"- {err}")
        add("")
    return "\n".join(out)


def _n(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = datetime.datetime.now().astimezone()
    import tether

    sha = command_output(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"])
    run: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "machine": report.machine(),
        "tether": f"{tether.__version__} (git {sha})",
        "config": {
            "runs": args.runs,
            "steps": args.steps,
            "step_seconds": args.step_seconds,
            "lease_timeout": args.lease_timeout,
            "reps": args.reps,
            "command": ("bench/failover " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
        },
        "reps": [],
        "errors": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="tether-failover-"))
    reaper = procs.Reaper()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    t0 = time.monotonic()
    interrupted = False
    try:
        for rep in range(1, args.reps + 1):
            try:
                row = asyncio.run(one_rep(args, reaper, tmp / f"rep-{rep}", rep))
            except (KeyboardInterrupt, _Interrupted):
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
                print(f"failover: repetition {rep} failed: {message}", file=sys.stderr)
                traceback.print_exc()
                run["errors"].append(f"repetition {rep}: {message}")
                run["reps"].append(message[:200])
                continue
            run["reps"].append(row)
            run["errors"].extend(f"repetition {rep}: {v}" for v in violations(row))
    except (KeyboardInterrupt, _Interrupted):
        interrupted = True
        run["errors"].append("interrupted: partial results")
    finally:
        reaper.close()
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"failover: node logs and side-effect files kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    run["elapsed_s"] = time.monotonic() - t0
    summary = [r for r in run["reps"] if isinstance(r, dict)]
    run["summary"] = {
        key: statistics.median(values)
        for key in ("takeover_s", "all_completed_s", "lease_lapsed_s", "runs_lost", "steps_executed_again")
        if (values := [r[key] for r in summary if r.get(key) is not None])
    }
    text = render(run)
    out = args.out or RESULTS / f"{run['date']}-failover.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    print(text)
    print(f"\nfailover: wrote {out}", file=sys.stderr)
    return 130 if interrupted else (1 if run["errors"] else 0)


class _Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Interrupted(f"signal {signum}")
