"""Profile W3's replay: N-step runs waiting for a signal; py-spy on server and worker while
each is signalled (its attempt replays N entries). Lead's investigation tool."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import procs
from .profile import summarise
from .systems import TetherSystem, until


async def main(n: int, count: int, out: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tether-w3prof-") as tmp:
        reaper = procs.Reaper()
        try:
            system = TetherSystem(reaper, Path(tmp))
            await system.start()
            ids = [await system.start_run("long", {"n": n}) for _ in range(count)]

            async def suspended() -> bool:
                return all([await system.status(i) == "suspended" for i in ids])

            await until(suspended, 600, "suspended", interval=0.5)
            assert await system.invoke(1) == 1
            server = system.pid_groups()["server"][0]
            worker = [p for p in system.workers() if "tether._worker" in Path(f"/proc/{p}/cmdline").read_text()][-1]
            spies = [
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(pid),
                        "-f",
                        "raw",
                        "-r",
                        "500",
                        "--nonblocking",
                        "--gil",
                        "-o",
                        str(out / f"{name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, pid in (("server", server), ("worker", worker))
            ]
            await asyncio.sleep(1.0)
            times = []
            for run_id in ids:
                start = time.perf_counter()
                await system.signal(run_id)
                assert await system.result(run_id, timeout=600) == n + 1
                times.append(time.perf_counter() - start)
            for p in spies:
                p.send_signal(2)
            for p in spies:
                p.wait(timeout=30)
            print("replay times ms:", [round(t * 1000) for t in times])
            for name in ("server", "worker"):
                print(summarise(out / f"{name}.txt", top=30))
        finally:
            reaper.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
