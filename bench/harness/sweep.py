"""W2 at several in-flight counts (lead's investigation tool): is tether latency- or CPU-bound?"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from . import procs, workloads
from .systems import TetherSystem


async def main(levels: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="tether-sweep-") as tmp:
        reaper = procs.Reaper()
        try:
            system = TetherSystem(reaper, Path(tmp))
            await system.start()
            for c in levels:
                [row] = await workloads.w2_throughput(system, runs=2000, steps=10, concurrency=c, reps=1, warmup=50)
                print(
                    f"in flight {c:4d}: {row['steps_per_s']:7.0f} steps/s, machine busy {row['machine_busy']:.0%}, "
                    f"server {row['cpu_server_per_1k']:.2f} deployment {row['cpu_deployment_per_1k']:.2f} s/1k runs",
                    flush=True,
                )
        finally:
            reaper.close()


if __name__ == "__main__":
    asyncio.run(main([int(x) for x in sys.argv[1:]]))
