"""bench/profile: W2 on tether under py-spy — where the server's and the worker's time goes.

bench/profile [--runs 2000] [--steps 10] [--concurrency 64] [--out DIR] [--postgres]

Starts a server as ``bench/run`` does, warms up, then records both the server and the
deployment's worker with ``py-spy record --gil`` (only samples that hold the GIL: the time each
process's Python is actually running) and, separately, without ``--gil`` (every thread,
waiting or not), while W2 runs. Writes collapsed stacks (``*.txt``) and a summary of the top
frames by self and total time to ``DIR`` (default ``bench/.work/profile``), and prints the summary.
``--postgres``: the server on a fresh database of ``scripts/postgres`` (tether-pg), and the
PostgreSQL side too: transactions, commits and statements per run from ``pg_stat_database``
and the server's ``/metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import procs, workloads
from .main import postgres_database
from .paths import BENCH
from .systems import TetherSystem


def summarise(path: Path, top: int = 25) -> str:
    """The frames with the most samples, by self time and by total time."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"## {path.name}: {samples} samples", "", "self:"]
    lines += [f"  {c / samples:6.1%}  {f}" for f, c in own.most_common(top)]
    lines += ["", "total:"]
    lines += [f"  {c / samples:6.1%}  {f}" for f, c in total.most_common(top)]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tether-profile-") as tmp:
        reaper = procs.Reaper()
        store, drop = postgres_database() if args.postgres else (None, None)
        try:
            system = TetherSystem(reaper, Path(tmp), store=store)
            await system.start()
            await workloads.w2_throughput(
                system, runs=200, steps=args.steps, concurrency=args.concurrency, reps=1, warmup=50
            )
            server = system.pid_groups()["server"][0]
            worker = [p for p in system.workers() if "tether._worker" in Path(f"/proc/{p}/cmdline").read_text()][-1]
            spies = []
            for name, pid in (("server", server), ("worker", worker)):
                for mode in ("gil", "all"):
                    flags = ["--gil"] if mode == "gil" else ["--threads", "--idle"]
                    dest = out / f"{name}-{mode}.txt"
                    spies.append(
                        subprocess.Popen(
                            [
                                spy,
                                "record",
                                "-p",
                                str(pid),
                                "-f",
                                "raw",
                                "-r",
                                "250",
                                "--nonblocking",
                                "-o",
                                str(dest),
                                *flags,
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
            await asyncio.sleep(1.0)
            rows = await workloads.w2_throughput(
                system, runs=args.runs, steps=args.steps, concurrency=args.concurrency, reps=1, warmup=0
            )
            for spy_proc in spies:
                spy_proc.send_signal(2)
            for spy_proc in spies:
                spy_proc.wait(timeout=30)
            summary = f"W2 under py-spy: {rows[0]['steps_per_s']:.0f} steps/s\n\n"
            for name in ("server-gil", "server-all", "worker-gil", "worker-all"):
                path = out / f"{name}.txt"
                if path.exists():
                    summary += summarise(path) + "\n"
            (out / "summary.md").write_text(summary)
            print(summary)
        finally:
            reaper.close()
            if drop is not None:
                drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", default=str(BENCH / ".work" / "profile"))
    parser.add_argument("--postgres", action="store_true", help="tether on PostgreSQL (scripts/postgres)")
    asyncio.run(main(parser.parse_args()))
