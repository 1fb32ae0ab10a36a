"""Data-directory size under a steady load, with and without retention (issue 13).

Starts ``tether server --retention R`` on a fresh data directory, deploys ``bench/apps/tether_app``,
starts ``--rate`` runs a second of the ``steps`` workflow (``--steps`` steps each) for
``--minutes``, and samples the data directory's size (every file in it: the SQLite database,
its WAL and shared-memory files, bundles, worker logs) and its row counts. Writes a markdown
table to ``--out`` (default ``bench/results/<date>-retention-<R>.md``) and prints it.

    .venv/bin/python bench/retention.py --minutes 10 --retention 60s --rate 10
    .venv/bin/python bench/retention.py --minutes 10 --retention off --rate 10   # the baseline
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tether.client import Client

BENCH = Path(__file__).resolve().parent
APP = BENCH / "apps" / "tether_app"


def tree_size(root: Path) -> int:
    """Bytes of every file under ``root``."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += (Path(folder) / name).stat().st_size
            except FileNotFoundError:
                continue
    return total


def rows(database: Path) -> dict[str, int]:
    """Rows of the tables that grow with runs."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("runs", "journal", "signals", "run_state", "audit")
        }
    finally:
        conn.close()


async def drive(url: str, *, rate: float, seconds: float, steps: int, counts: dict[str, int]) -> None:
    """Start ``rate`` runs a second for ``seconds`` (paced, from a fixed set of senders, so a slow
    server delays starts instead of piling up connections); count what started and what failed."""
    senders = 16
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def sender(first: int) -> None:
            k = first
            while (due := k / rate) < seconds:
                await asyncio.sleep(max(0.0, due - (time.monotonic() - start)))
                try:
                    response = await http.post("/v1/envs/bench/workflows/steps/runs", json={"n": steps})
                    ok = response.status_code in (200, 201, 202)
                except httpx.HTTPError:
                    ok = False
                counts["started" if ok else "refused"] += 1
                k += senders

        await asyncio.gather(*(sender(i) for i in range(senders)))


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="tether-retention-"))
    data = work / "data"
    log = open(work / "server.log", "wb")
    command = [sys.executable, "-m", "tether", "server", "--port", "0", "--data-dir", str(data)]
    if args.retention != "off":
        command += ["--retention", args.retention]
    server = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"listening on (http://\S+)", (work / "server.log").read_text())):
            if server.poll() is not None or time.monotonic() > deadline:
                print((work / "server.log").read_text(), file=sys.stderr)
                return 1
            await asyncio.sleep(0.1)
        url = found.group(1)
        async with Client(url, actor="bench") as client:
            await client.deploy(APP, env="bench")
        counts = {"started": 0, "refused": 0}
        seconds = args.minutes * 60
        samples: list[tuple[float, int, dict[str, int]]] = []
        load = asyncio.create_task(drive(url, rate=args.rate, seconds=seconds, steps=args.steps, counts=counts))
        began = time.monotonic()
        while not load.done():
            samples.append((time.monotonic() - began, tree_size(data), rows(data / "tether.db")))
            with_timeout = asyncio.wait({load}, timeout=args.every)
            await with_timeout
        await load
        await asyncio.sleep(args.every)
        samples.append((time.monotonic() - began, tree_size(data), rows(data / "tether.db")))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        log.close()

    table = [
        f"# Data-directory size under a steady load — retention {args.retention}",
        "",
        f"{datetime.date.today()}, {os.uname().nodename}: `bench/retention.py --minutes {args.minutes} "
        f"--retention {args.retention} --rate {args.rate} --steps {args.steps}`. {counts['started']} runs "
        f"started ({counts['refused']} refused or failed), {args.steps} steps each; size = every file in "
        "the data directory.",
        "",
        "| t (s) | data dir (KiB) | runs | journal | signals | run_state | audit |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for at, size, count in samples:
        table.append(
            f"| {at:.0f} | {size / 1024:.0f} | {count['runs']} | {count['journal']} | {count['signals']} | "
            f"{count['run_state']} | {count['audit']} |"
        )
    half = [size for at, size, _ in samples if at >= seconds / 2]
    if half:
        table += ["", f"Second half of the run: {min(half) / 1024:.0f}–{max(half) / 1024:.0f} KiB."]
    text = "\n".join(table) + "\n"
    out = args.out or BENCH / "results" / f"{datetime.date.today()}-retention-{args.retention}.md"
    Path(out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--retention", default="60s", help="a duration (60s, 10m) or 'off'")
    parser.add_argument("--rate", type=float, default=10.0, help="runs started per second")
    parser.add_argument("--steps", type=int, default=5, help="steps per run")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=None)
    sys.exit(asyncio.run(main(parser.parse_args())))
