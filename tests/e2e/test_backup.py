"""The embedded store's way back: an online backup, a checked restore, a refusal to start on a
damaged store."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_snapshot import APP


def tether(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tether", *args], capture_output=True, text=True, timeout=120)


def test_a_backup_taken_while_runs_are_in_flight_restores_and_they_complete(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    server.call(lambda c: c.deploy(make_app("snap", APP), env="prod"))
    runs = [server.call(lambda c, n=n: c.start_run("job", {"n": n}, env="prod")) for n in (1, 2, 3)]
    for run in runs:
        server.wait_for(run["id"], {"suspended"})
    copy = tmp_path / "backups" / "tether.db"
    made = tether("backup", str(copy), "--data-dir", str(server.data_dir))  # online: the server runs
    assert made.returncode == 0 and "backed up" in made.stdout, made.stderr
    refused = tether("restore", str(copy), "--data-dir", str(server.data_dir))
    assert refused.returncode != 0 and "a tether server is running" in refused.stderr
    again = tether("backup", str(copy), "--data-dir", str(server.data_dir))
    assert again.returncode != 0 and "back up to a new file" in again.stderr

    # The machine is lost: a new data directory gets the backup.
    server.kill9()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    restored = tether("restore", str(copy), "--data-dir", str(server.data_dir))
    assert restored.returncode == 0, restored.stderr
    server.start()
    for run in runs:
        server.call(lambda c, r=run: c.signal(r["id"], "go", {"ok": True}))
    outputs = [server.call(lambda c, r=run: c.result(r["id"], wait=60))["output"] for run in runs]
    assert outputs == [{"first": 2 * n, "second": 2 * (n + 1), "on": "v1"} for n in (1, 2, 3)]


def test_a_damaged_store_is_refused_at_start(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    server.call(lambda c: c.deploy(make_app("snap", APP), env="prod"))
    server.stop()
    database = server.data_dir / "tether.db"
    data = bytearray(database.read_bytes())
    # Overwrite the second page onward: the header still says SQLite, the b-trees are garbage.
    data[4096 : 4096 * 3] = b"\xa5" * (4096 * 2)
    database.write_bytes(bytes(data))
    started = subprocess.run(
        [sys.executable, "-m", "tether", "server", "--port", "0", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "is damaged" in started.stderr and "tether restore" in started.stderr, started.stderr
    assert "Traceback" not in started.stderr


SLOW_APP = """
import asyncio
import tether

app = tether.App("slow")

@app.function
async def bump(n: int) -> int:
    \"\"\"Adds one, slowly: the backup lands mid-run (the run takes 6 s; the backup, on a busy
    machine, up to a few).\"\"\"
    await asyncio.sleep(1.5)
    return n + 1

@app.workflow
async def count(ctx: tether.Context, n: int) -> dict:
    for _ in range(4):
        n = await ctx.step(bump, n)
    return {"n": n, "attempt": ctx.info.attempt}
"""


def test_runs_mid_step_when_the_backup_is_taken_complete_after_the_restore(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    server.call(lambda c: c.deploy(make_app("slow", SLOW_APP), env="prod"))
    runs = [server.call(lambda c, n=n: c.start_run("count", {"n": n}, env="prod")) for n in (0, 10, 20)]
    for run in runs:  # each has durable entries and is executing its next step
        deadline = time.monotonic() + 30
        while not server.call(lambda c, r=run: c.journal(r["id"])):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    copy = tmp_path / "mid-run.db"
    made = tether("backup", str(copy), "--data-dir", str(server.data_dir))
    assert made.returncode == 0, made.stderr
    server.kill9()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    assert tether("restore", str(copy), "--data-dir", str(server.data_dir)).returncode == 0
    server.start()
    for n, run in zip((0, 10, 20), runs, strict=True):
        ended = server.call(lambda c, r=run: c.result(r["id"], wait=60))
        assert ended["status"] == "completed" and ended["output"]["n"] == n + 4
        assert ended["output"]["attempt"] >= 2  # a new attempt after the restore replayed the journal
