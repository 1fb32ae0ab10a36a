"""bench/run: every workload on tether and each peer, one system at a time; writes the table.

bench/run [--quick] [--only tether,restate,dbos,tether-pg,tether-pg2,dbos-pg] [--workloads 1,2,3,4,5,6] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import procs, report, workloads
from .paths import BENCH, PEER_PYTHON, PROJECT, RESTATE_SERVER, RESULTS
from .systems import ModelServer, RestateSystem, TetherCluster, TetherSystem, run_dbos

SYSTEMS = ("tether", "restate", "dbos", "tether-pg", "tether-pg2", "dbos-pg")
ALL_WORKLOADS = {1, 2, 3, 4, 5, 6}
QUIET_BUSY = 0.10  # before each system, wait (up to --wait-quiet s) until other load is below this

FULL = {
    "w1_calls": 500,
    "w1_warmup": 50,
    "w2_runs": 2000,
    "w2_steps": 10,
    "w2_concurrency": 64,
    "w2_warmup": 100,
    "w3_sizes": [100, 1000, 10000],
    "w4_runs": 10000,
    "w4_deployments": 50,
    "w6_runs": 500,
    "w6_concurrency": 32,
    "w6_warmup": 20,
    "w6_sequential": 20,
    "w6_delay_s": 0.02,
}
QUICK = {
    "w1_calls": 50,
    "w1_warmup": 5,
    "w2_runs": 200,
    "w2_steps": 10,
    "w2_concurrency": 64,
    "w2_warmup": 10,
    "w3_sizes": [10, 100, 1000],
    "w4_runs": 200,
    "w4_deployments": 5,
    "w6_runs": 32,
    "w6_concurrency": 32,
    "w6_warmup": 2,
    "w6_sequential": 3,
    "w6_delay_s": 0.02,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a result")
    parser.add_argument("--only", default=",".join(SYSTEMS), help=f"systems, comma-separated ({','.join(SYSTEMS)})")
    parser.add_argument(
        "--workloads", default="1,2,3,4,5,6", help="workloads, comma-separated (1..6; 3 to 6 run on tether only)"
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each workload (default 3)")
    parser.add_argument("--w4-reps", type=int, default=None, help="repetitions of W4 (default: --reps)")
    parser.add_argument("--w4-runs", type=int, default=None, help="suspended runs in W4 (default 10000)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the markdown table")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="before each system, wait up to this many seconds for other load to drop below 10%% CPU "
        "(default 120, 0 with --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs) for inspection")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.only.split(",") if s.strip()]
    args.workload_set = {int(w) for w in args.workloads.split(",") if w.strip()}
    if unknown := set(args.systems) - set(SYSTEMS):
        parser.error(f"unknown systems {sorted(unknown)}; choose from {','.join(SYSTEMS)}")
    if unknown_w := args.workload_set - ALL_WORKLOADS:
        parser.error(f"unknown workloads {sorted(unknown_w)}")
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 120.0
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


class Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


async def bench(args: argparse.Namespace, reaper: procs.Reaper, tmp: Path, run: dict[str, Any]) -> None:
    cfg = run["config"]
    res: dict[str, Any] = run["results"]
    wl = args.workload_set
    reps = args.reps

    def fail(section: str, system: str | None, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}".strip()
        print(f"bench: {system or ''} W{section[1:]} failed: {message}", file=sys.stderr)
        traceback.print_exc()
        run["errors"].append(f"{system or 'tether'} {section.upper()}: {message.splitlines()[0][:300]}")
        if system is None:
            res[section] = message.splitlines()[0][:200]
        else:
            res.setdefault(section, {})[system] = message.splitlines()[0][:200]

    def log(text: str) -> None:
        print(f"bench [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    async def w1_w2(name: str, system: Any) -> None:
        """W1 and W2 (those asked for) on an HTTP system that is up, recorded under ``name``;
        a workload that fails is reported and the next one still runs."""
        if 1 in wl:
            log(f"{name}: W1")
            try:
                res.setdefault("w1", {})[name] = await workloads.w1_latency(
                    system, calls=cfg["w1_calls"], reps=reps, warmup=cfg["w1_warmup"]
                )
            except Exception as exc:
                fail("w1", name, exc)
        if 2 in wl:
            log(f"{name}: W2")
            try:
                res.setdefault("w2", {})[name] = await workloads.w2_throughput(
                    system,
                    runs=cfg["w2_runs"],
                    steps=cfg["w2_steps"],
                    concurrency=cfg["w2_concurrency"],
                    reps=reps,
                    warmup=cfg["w2_warmup"],
                )
            except Exception as exc:
                fail("w2", name, exc)

    for system in args.systems:
        run["background"][system] = await quiet(args.wait_quiet, log)
        if system == "tether":
            if wl & {1, 2, 3, 6}:
                model: ModelServer | None = None
                env: dict[str, str] = {}
                if 6 in wl:
                    # W6's agent calls the scripted model; its base URL reaches the workers through
                    # the server's environment (PASSED_ENV).
                    model = ModelServer(reaper, tmp / "model", delay=cfg["w6_delay_s"])
                    try:
                        log("tether: starting the model server for W6")
                        await model.start()
                        env["TETHER_MODEL_BASE_URL"] = model.url
                    except Exception as exc:
                        fail("w6", None, exc)
                        model.stop()
                        model = None
                tether = TetherSystem(reaper, tmp / "tether-main", idle_timeout=300, env=env)
                run["call_notes"]["tether"] = tether.call_note
                try:
                    log("tether: starting the server")
                    await tether.start()
                    await w1_w2("tether", tether)
                    if 3 in wl:
                        log("tether: W3")
                        try:
                            res["w3"] = await workloads.w3_long_journal(tether, sizes=cfg["w3_sizes"], reps=reps)
                        except Exception as exc:
                            fail("w3", None, exc)
                    if model is not None:
                        log("tether: W6")
                        try:
                            res["w6"] = await workloads.w6_agents(
                                tether,
                                model,
                                runs=cfg["w6_runs"],
                                concurrency=cfg["w6_concurrency"],
                                reps=reps,
                                warmup=cfg["w6_warmup"],
                                sequential=cfg["w6_sequential"],
                            )
                        except Exception as exc:
                            fail("w6", None, exc)
                except Exception as exc:
                    for w in sorted(wl & {1, 2, 3, 6}):
                        if f"w{w}" not in res or (w in (1, 2) and "tether" not in res.get(f"w{w}", {})):
                            fail(f"w{w}", None if w in (3, 6) else "tether", exc)
                finally:
                    await tether.stop()
                if model is not None:
                    try:
                        if isinstance(res.get("w6"), dict):
                            # The same agent without tether, with tether stopped: a plain loop.
                            log("tether: W6 baseline (the agent loop without tether)")
                            res["w6"]["baseline"] = await workloads.w6_baseline(
                                model,
                                runs=cfg["w6_runs"],
                                concurrency=cfg["w6_concurrency"],
                                reps=reps,
                                warmup=cfg["w6_warmup"],
                                sequential=cfg["w6_sequential"],
                            )
                    except Exception as exc:
                        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
                        print(f"bench: W6 baseline failed: {message}", file=sys.stderr)
                        traceback.print_exc()
                        run["errors"].append(f"tether W6 baseline: {message[:300]}")
                        res["w6"]["baseline"] = message[:200]
                    finally:
                        model.stop()
            if 5 in wl:
                log("tether: W5")
                tether = TetherSystem(reaper, tmp / "tether-w5", idle_timeout=3)
                try:
                    await tether.start()
                    res["w5"] = await workloads.w5_cold_wake(tether, reps=max(3, reps))
                    res["w5_deploy"] = await workloads.w5_deploy(tether, tmp / "w5-apps", reps=max(3, reps))
                    # The same cold wake on a deployment with its own (uv-built) environment.
                    tether.deployment = await tether.deploy(tmp / "w5-apps" / "lock_reused_env-0", env="bench")
                    res["w5_locked"] = await workloads.w5_cold_wake(tether, reps=max(3, reps))
                except Exception as exc:
                    fail("w5", None, exc)
                finally:
                    await tether.stop()
            if 4 in wl:
                w4_rows = []
                for rep in range(cfg["w4_reps"]):
                    log(f"tether: W4 repetition {rep + 1}/{cfg['w4_reps']} ({cfg['w4_runs']} runs)")
                    tether = TetherSystem(reaper, tmp / f"tether-w4-{rep}", idle_timeout=3)
                    try:
                        await tether.start(deploy=False)
                        w4_rows.append(
                            await workloads.w4_idle_scale(
                                tether,
                                tmp / f"w4-bundles-{rep}",
                                runs=cfg["w4_runs"],
                                deployments=cfg["w4_deployments"],
                            )
                        )
                    except Exception as exc:
                        fail("w4", None, exc)
                        break
                    finally:
                        await tether.stop()
                if w4_rows:
                    res["w4"] = w4_rows
        elif system in ("tether-pg", "tether-pg2") and wl & {1, 2}:
            try:
                url, drop = postgres_database()
            except Exception as exc:
                for w in sorted(wl & {1, 2}):
                    fail(f"w{w}", system, exc)
                continue
            pg: TetherSystem | TetherCluster = (
                TetherSystem(reaper, tmp / system, idle_timeout=300, store=url)
                if system == "tether-pg"
                else TetherCluster(reaper, tmp / system, store=url, idle_timeout=300)
            )
            run["call_notes"][system] = pg.call_note
            try:
                log(f"{system}: starting {'two nodes' if system == 'tether-pg2' else 'the server'} on PostgreSQL")
                await pg.start()
                await w1_w2(system, pg)
            except Exception as exc:
                for w in sorted(wl & {1, 2}):
                    if system not in res.get(f"w{w}", {}):
                        fail(f"w{w}", system, exc)
            finally:
                await pg.stop()
                drop()
        elif system == "dbos-pg" and wl & {1, 2}:
            run["call_notes"]["dbos-pg"] = (
                "in process: `await DBOS.start_workflow_async(...)` + `handle.get_result()`; system database on "
                "the PostgreSQL of scripts/postgres"
            )
            for w in sorted(wl & {1, 2}):
                log(f"dbos-pg: W{w}")
                try:
                    url, drop = postgres_database()
                except Exception as exc:
                    fail(f"w{w}", "dbos-pg", exc)
                    continue
                try:
                    sizes = (
                        ["--n", str(cfg["w1_calls"]), "--warmup", str(cfg["w1_warmup"])]
                        if w == 1
                        else ["--n", str(cfg["w2_runs"]), "--steps", str(cfg["w2_steps"])]
                        + ["--concurrency", str(cfg["w2_concurrency"]), "--warmup", str(cfg["w2_warmup"])]
                    )
                    answer = await run_dbos(
                        reaper,
                        tmp / f"dbos-pg-w{w}",
                        ["--workload", str(w), "--reps", str(reps), "--database-url", url, *sizes],
                        timeout=3600,
                    )
                    run["dbos_pg_durability"] = answer["durability"]
                    if w == 1:
                        res.setdefault("w1", {})["dbos-pg"] = [
                            workloads.latency_stats(rep["latencies"]) for rep in answer["reps"]
                        ]
                    else:
                        res.setdefault("w2", {})["dbos-pg"] = [
                            {
                                "wall_s": rep["wall"],
                                "runs_per_s": rep["runs"] / rep["wall"],
                                "steps_per_s": rep["steps"] / rep["wall"],
                                "cpu_server_per_1k": rep["cpu_process"] / rep["runs"] * 1000,
                            }
                            for rep in answer["reps"]
                        ]
                except Exception as exc:
                    fail(f"w{w}", "dbos-pg", exc)
                finally:
                    drop()
        elif system == "restate" and wl & {1, 2}:
            restate = RestateSystem(reaper, tmp / "restate")
            run["call_notes"]["restate"] = restate.call_note
            try:
                log("restate: starting restate-server and the SDK endpoint")
                await restate.start()
                await w1_w2("restate", restate)
            except Exception as exc:
                for w in sorted(wl & {1, 2}):
                    if "restate" not in res.get(f"w{w}", {}):
                        fail(f"w{w}", "restate", exc)
            finally:
                await restate.stop()
        elif system == "dbos" and wl & {1, 2}:
            run["call_notes"]["dbos-sqlite"] = (
                "in process: `await DBOS.start_workflow_async(...)` + `handle.get_result()`"
            )
            if 1 in wl:
                log("dbos: W1")
                try:
                    answer = await run_dbos(
                        reaper,
                        tmp / "dbos-w1",
                        ["--workload", "1", "--n", str(cfg["w1_calls"]), "--reps", str(reps)]
                        + ["--warmup", str(cfg["w1_warmup"])],
                        timeout=900,
                    )
                    res.setdefault("w1", {})["dbos-sqlite"] = [
                        workloads.latency_stats(rep["latencies"]) for rep in answer["reps"]
                    ]
                    run["dbos_durability"] = answer["durability"]
                except Exception as exc:
                    fail("w1", "dbos-sqlite", exc)
            if 2 in wl:
                log("dbos: W2")
                try:
                    answer = await run_dbos(
                        reaper,
                        tmp / "dbos-w2",
                        ["--workload", "2", "--n", str(cfg["w2_runs"]), "--steps", str(cfg["w2_steps"])]
                        + ["--concurrency", str(cfg["w2_concurrency"]), "--reps", str(reps)]
                        + ["--warmup", str(cfg["w2_warmup"])],
                        timeout=3600,
                    )
                    res.setdefault("w2", {})["dbos-sqlite"] = [
                        {
                            "wall_s": rep["wall"],
                            "runs_per_s": rep["runs"] / rep["wall"],
                            "steps_per_s": rep["steps"] / rep["wall"],
                            "cpu_server_per_1k": rep["cpu_process"] / rep["runs"] * 1000,
                        }
                        for rep in answer["reps"]
                    ]
                    run["dbos_durability"] = answer["durability"]
                except Exception as exc:
                    fail("w2", "dbos-sqlite", exc)


def postgres_database() -> tuple[str, Any]:
    """A fresh database on the project's PostgreSQL (``scripts/postgres start``): its URL, and a
    function dropping it."""
    import psycopg

    base = subprocess.run(
        [str(PROJECT / "scripts" / "postgres"), "start"], check=True, capture_output=True, text=True
    ).stdout.strip()
    name = "bench_" + secrets.token_hex(4)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return base.rsplit("/", 1)[0] + "/" + name, drop


async def quiet(limit: float, log: Any) -> float:
    """Wait (up to ``limit`` seconds) for the machine to be quiet; the CPU busy fraction then."""
    deadline = time.monotonic() + limit
    busy = await asyncio.to_thread(report.cpu_busy)
    while busy > QUIET_BUSY and time.monotonic() < deadline:
        log(f"machine busy ({busy * 100:.0f}% CPU) with other work: waiting for it to be quiet")
        await asyncio.sleep(2)
        busy = await asyncio.to_thread(report.cpu_busy)
    return busy


def default_out(args: argparse.Namespace, run: dict[str, Any]) -> Path:
    stem = f"{run['date']}-{run['machine']['host'] or 'local'}"
    if args.quick:
        return BENCH / ".work" / f"quick-{stem}.md"
    if set(args.systems) != set(SYSTEMS) or args.workload_set != ALL_WORKLOADS:
        stem += f"-{'+'.join(args.systems)}-w{''.join(str(w) for w in sorted(args.workload_set))}"
    return RESULTS / f"{stem}.md"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.w4_runs:
        sizes["w4_runs"] = args.w4_runs
    sizes["w4_reps"] = args.w4_reps or args.reps
    if sizes["w4_runs"] != FULL["w4_runs"] and not args.quick:
        sizes["w4_note"] = f"Reduced from {FULL['w4_runs']:,} runs (--w4-runs)."
    needs_peers = {"restate", "dbos", "dbos-pg"} & set(args.systems)
    if needs_peers and (not PEER_PYTHON.exists() or not RESTATE_SERVER.exists()):
        print("bench: the peers are not installed: run bench/setup first", file=sys.stderr)
        return 2
    started = datetime.datetime.now().astimezone()
    run: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "machine": report.machine(),
        "versions": report.versions(),
        "config": {
            **sizes,
            "quick": args.quick,
            "reps": args.reps,
            "command": ("bench/run " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
        },
        "results": {},
        "errors": [],
        "background": {},
        "call_notes": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    reaper = procs.Reaper()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    t0 = time.monotonic()
    interrupted = False
    try:
        asyncio.run(bench(args, reaper, tmp, run))
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        run["errors"].append("interrupted: partial results")
        print("bench: interrupted, stopping every process", file=sys.stderr)
    finally:
        reaper.close()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if args.keep:
            print(f"bench: data and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    run["elapsed_s"] = time.monotonic() - t0
    text = report.render(run)
    out = args.out or default_out(args, run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    (out.with_suffix(".json")).write_text(json.dumps(run, indent=1, default=str) + "\n")
    print(text)
    print(f"\nbench: wrote {out}", file=sys.stderr)
    return 130 if interrupted else (1 if run["errors"] else 0)
