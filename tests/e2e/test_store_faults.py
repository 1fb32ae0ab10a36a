"""Store faults, against a real server: a full disk, a lock another process holds, a read-only
data directory, a second server, and a run left ``running`` with nobody working on it.

The disk-full test mounts a small tmpfs (it needs root, as CI has); where mounting is impossible
it skips saying why, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_snapshot import APP as WAITING_APP
from tether.store import open_store

STEPS_APP = """
import asyncio
import tether

app = tether.App("faults")

@app.function
async def bump(n: int) -> int:
    \"\"\"Adds one, slowly enough for a fault to land mid-run.\"\"\"
    await asyncio.sleep(0.1)
    return n + 1

@app.workflow
async def count(ctx: tether.Context, n: int) -> dict:
    for _ in range(5):
        n = await ctx.step(bump, n)
    return {"n": n}
"""


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        why = f"cannot mount a tmpfs at {target} (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[[Path, str], Path]]:
    """Mount a tmpfs with the given options; every mount is undone after the test."""
    mounted: list[Path] = []

    def make(target: Path, options: str) -> Path:
        _mount(target, options)
        mounted.append(target)
        return target

    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def start(data_dir: Path, log: Path) -> ServerProcess:
    server = ServerProcess(data_dir, log)
    server.start()
    return server


def post_run(server: ServerProcess, n: int) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/envs/prod/workflows/count/runs", json={"n": n}, timeout=30)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no room left."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        while True:  # the last partial megabyte
            try:
                out.write(b"\0" * 512)
            except OSError:
                return


def test_a_full_disk_answers_503_keeps_reads_and_every_run_completes_once_space_returns(
    mount: Callable[[Path, str], Path], make_app: Callable[..., Path], tmp_path: Path
) -> None:
    disk = mount(tmp_path / "disk", "size=48m")
    server = start(disk / "data", tmp_path / "server.log")  # the log stays off the full disk
    try:
        server.call(lambda c: c.deploy(make_app("faults", STEPS_APP), env="prod"))
        runs = [post_run(server, 10 * n).json() for n in range(20)]
        filler = disk / "filler"
        fill(filler)

        refused = post_run(server, 1000)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert "disk is full" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) > 0
        # Reads go on while writes are refused.
        listed = httpx.get(f"{server.url}/v1/runs", params={"limit": 100}, timeout=30)
        assert listed.status_code == 200 and len(listed.json()["runs"]) == 20
        assert httpx.get(f"{server.url}/v1/runs/{runs[0]['id']}", timeout=30).status_code == 200
        time.sleep(2)  # attempts in flight meet the full disk: appends and ends refused

        filler.unlink()  # no restart: the server recovers on its own
        outputs = [server.call(lambda c, r=run: c.result(r["id"], wait=120)) for run in runs]
        assert [(o["status"], o["output"]) for o in outputs] == [("completed", {"n": 10 * n + 5}) for n in range(20)]
        after = server.call(lambda c: c.start_run("count", {"n": 0}, env="prod", wait=60))
        assert (after["status"], after["output"]) == ("completed", {"n": 5})
        log = server.log_path.read_text(errors="replace")
        assert "never retrieved" not in log and "internal error" not in log
    finally:
        server.stop()


def test_a_lock_held_by_another_process_answers_503_at_once_and_clears_on_its_own(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server.call(lambda c: c.deploy(make_app("snap", WAITING_APP), env="prod"))
    run = server.call(lambda c: c.start_run("job", {"n": 1}, env="prod"))
    server.wait_for(run["id"], {"suspended"})

    other = sqlite3.connect(server.data_dir / "tether.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process takes the write lock and keeps it
    try:
        # The client gives up long before SQLite's old 30 s wait would have ended.
        refused = httpx.post(f"{server.url}/v1/envs/prod/workflows/job/runs", json={"n": 2}, timeout=20)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert "another process holds the store's write lock" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "2"
        signal = httpx.post(f"{server.url}/v1/runs/{run['id']}/signals/go", json={"ok": True}, timeout=20)
        assert signal.status_code == 503
        assert server.call(lambda c: c.run(run["id"]))["status"] == "suspended"  # reads go on
    finally:
        other.execute("ROLLBACK")
        other.close()

    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    assert server.call(lambda c: c.result(run["id"], wait=60))["output"] == {"first": 2, "second": 4, "on": "v1"}
    second = server.call(lambda c: c.start_run("job", {"n": 2}, env="prod"))
    assert server.wait_for(second["id"], {"suspended"})["status"] == "suspended"


def test_a_read_only_data_directory_is_refused_with_a_clear_message(
    mount: Callable[[Path, str], Path], tmp_path: Path
) -> None:
    source = tmp_path / "store"
    source.mkdir()

    async def create() -> None:
        await open_store(source).close()

    asyncio.run(create())
    read_only = mount(tmp_path / "ro", "size=8m")
    subprocess.run(["cp", "-a", f"{source}/.", str(read_only)], check=True)
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    started = subprocess.run(
        [sys.executable, "-m", "tether", "server", "--port", "0", "--data-dir", str(read_only)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert f"the data directory {read_only} is on a read-only file system" in started.stderr, started.stderr
    assert "another --data-dir" in started.stderr
    assert "Traceback" not in started.stderr


def test_a_second_server_is_refused_naming_the_first_ones_pid_and_port_until_it_dies(server: ServerProcess) -> None:
    assert server.process is not None
    port = httpx.URL(server.url).port
    second = subprocess.run(
        [sys.executable, "-m", "tether", "server", "--port", "0", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"pid {server.process.pid} at {server.url} (port {port})" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    # The kernel releases the lock of a server killed hard: the next one starts.
    server.kill9()
    server.start()
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_run_left_running_with_no_attempt_in_flight_is_dispatched_again(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server.call(lambda c: c.deploy(make_app("snap", WAITING_APP), env="prod"))
    run = server.call(lambda c: c.start_run("job", {"n": 3}, env="prod"))
    attempt = server.wait_for(run["id"], {"suspended"})["attempt"]
    # What a lost attempt leaves behind: the run says running, nobody works on it.
    conn = sqlite3.connect(server.data_dir / "tether.db", isolation_level=None)
    try:
        conn.execute("UPDATE runs SET status = 'running', updated_at = 0 WHERE id = ?", (run["id"],))
    finally:
        conn.close()
    deadline = time.monotonic() + 60
    while (now := server.call(lambda c: c.run(run["id"])))["attempt"] == attempt:
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    again = server.wait_for(run["id"], {"suspended"})
    assert again["attempt"] == attempt + 1
    assert f"run {run['id']} was running attempt {attempt} with no attempt in flight" in server.log_path.read_text()
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    assert server.call(lambda c: c.result(run["id"], wait=60))["output"] == {"first": 6, "second": 8, "on": "v1"}
