"""DBOS side of the benchmark: DBOS is a library, so the workflows run in this process.

Run by bench/run with the peers' Python (bench/.peers/venv), never imported by it. Prints one
JSON object on its last stdout line. Same workflow shape as bench/apps/tether_app: ``steps(n)``
does ``n`` sequential steps, each returning a small value.

    python dbos_driver.py --dir D --workload 1 --n 500 --reps 3 --warmup 20
    python dbos_driver.py --dir D --workload 2 --n 2000 --steps 10 --concurrency 64 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig


@DBOS.step()
async def work(i: int) -> int:
    return i + 1


@DBOS.workflow()
async def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await work(i)
    return total


def cpu_self() -> float:
    """utime + stime of this process (all threads), as /proc/<pid>/stat counts them."""
    times = os.times()
    return times.user + times.system


async def call(n: int) -> int:
    handle = await DBOS.start_workflow_async(steps, n)
    return int(await handle.get_result())


async def workload1(count: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        await call(1)
    latencies = []
    deadline = time.monotonic() + 600
    for _ in range(count):
        if time.monotonic() > deadline:
            raise TimeoutError("workload 1 took over 600 s")
        start = time.perf_counter()
        assert await call(1) == 1
        latencies.append(time.perf_counter() - start)
    return {"latencies": latencies}


async def workload2(runs: int, n_steps: int, concurrency: int) -> dict[str, Any]:
    expected = n_steps * (n_steps + 1) // 2
    queue = iter(range(runs))
    done = 0

    async def lane() -> None:
        nonlocal done
        for _ in queue:
            assert await call(n_steps) == expected
            done += 1

    cpu0 = cpu_self()
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(lane() for _ in range(concurrency))), timeout=1800)
    wall = time.perf_counter() - start
    cpu = cpu_self() - cpu0
    return {"wall": wall, "runs": done, "steps": done * n_steps, "cpu_process": cpu}


def sqlite_settings(path: Path) -> dict[str, Any]:
    """The durability settings of DBOS's system database: its journal mode (stored in the file)
    and ``synchronous`` as a fresh connection gets it (DBOS sets no PRAGMA synchronous)."""
    conn = sqlite3.connect(path)
    try:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]]
    finally:
        conn.close()
    return {"journal_mode": journal, "synchronous": sync, "sqlite": sqlite3.sqlite_version}


def postgres_settings(url: str) -> dict[str, Any]:
    """The durability settings of DBOS's PostgreSQL system database."""
    import psycopg

    with psycopg.connect(url) as conn:
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
        server = conn.execute("SHOW server_version").fetchone()[0]
    return {"fsync": fsync, "synchronous_commit": commit, "postgresql": server}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    db = Path(args.dir) / "dbos.sqlite"
    url = args.database_url or f"sqlite:///{db}"
    config: DBOSConfig = {"name": "bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    try:
        reps: list[dict[str, Any]] = []
        if args.workload == 1:
            for rep in range(args.reps):
                reps.append(await workload1(args.n, args.warmup if rep == 0 else 0))
        else:
            for _ in range(args.warmup):
                await call(args.steps)
            for _ in range(args.reps):
                reps.append(await workload2(args.n, args.steps, args.concurrency))
        return {
            "reps": reps,
            "durability": postgres_settings(args.database_url) if args.database_url else sqlite_settings(db),
            "versions": {p: version(p) for p in ("dbos", "sqlalchemy")},
            "pid": os.getpid(),
        }
    finally:
        DBOS.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--workload", type=int, choices=(1, 2), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="a postgresql:// system database (default: SQLite)")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
