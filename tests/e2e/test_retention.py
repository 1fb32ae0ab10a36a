"""Retention against a real server: finished runs are pruned with their journals, signals and
state; runs in flight, the audit log and the deployment lifecycle stay coherent."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_snapshot import APP

RETENTION = 2


@pytest.fixture
def keeping(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A server that keeps finished runs for two seconds."""
    proc = ServerProcess(
        tmp_path / "data", tmp_path / "server.log", args=["--retention", f"{RETENTION}s", "--retention-for", "audit=1d"]
    )
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


def finish(server: ServerProcess, run_id: str) -> None:
    server.wait_for(run_id, {"suspended"})
    server.call(lambda c: c.signal(run_id, "go", {"ok": True}))
    assert server.call(lambda c: c.result(run_id, wait=60))["status"] == "completed"


def owned_rows(server: ServerProcess, run_id: str) -> dict[str, int]:
    """Rows that belong to the run, per table, read straight from the store."""
    conn = sqlite3.connect(f"file:{server.data_dir / 'tether.db'}?mode=ro", uri=True)
    try:
        return {
            t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0]
            for t in ("journal", "signals", "timers", "run_state")
        }
    finally:
        conn.close()


def gone(server: ServerProcess, run_id: str, timeout: float = 60) -> httpx.Response:
    """Poll until the run answers 404; that answer."""
    deadline = time.monotonic() + timeout
    while (answer := httpx.get(f"{server.url}/v1/runs/{run_id}")).status_code == 200:
        assert time.monotonic() < deadline, f"run {run_id} was never pruned"
        time.sleep(0.25)
    return answer


def test_finished_runs_are_pruned_and_what_remains_stays_coherent(
    keeping: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server = keeping
    v1 = server.call(lambda c: c.deploy(make_app("snap", APP), env="prod"))
    done = server.call(lambda c: c.start_run("job", {"n": 1}, env="prod", idempotency_key="once"))
    waiting = server.call(lambda c: c.start_run("job", {"n": 2}, env="prod"))
    server.wait_for(waiting["id"], {"suspended"})
    server.call(lambda c: c.set_env("audit", v1["id"]))
    kept = server.call(lambda c: c.start_run("job", {"n": 3}, env="audit"))
    finish(server, kept["id"])
    finish(server, done["id"])
    server.call(lambda c: c.restart(done["id"], reason="before it goes"))  # an audited act on it

    pruned = gone(server, done["id"])
    assert pruned.status_code == 404
    assert pruned.json()["error"]["code"] == "not_found"
    assert "pruned by the server's retention" in pruned.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/runs/{done['id']}/journal").status_code == 404
    assert owned_rows(server, done["id"]) == {"journal": 0, "signals": 0, "timers": 0, "run_state": 0}
    # Runs of an environment with a longer retention stay.
    assert server.call(lambda c: c.run(kept["id"]))["status"] == "completed"
    # The run in flight keeps everything; the audit log keeps what was done to the pruned one.
    assert server.call(lambda c: c.run(waiting["id"]))["status"] == "suspended"
    assert [e["name"] for e in server.call(lambda c: c.journal(waiting["id"]))] == ["score", "go"]
    assert [a["action"] for a in server.call(lambda c: c.audit(target=done["id"]))] == ["run.restart"]
    listed = {r["id"] for r in server.call(lambda c: c.runs(limit=100))}
    assert done["id"] not in listed and waiting["id"] in listed
    page = httpx.get(f"{server.url}/runs")
    assert page.status_code == 200 and waiting["id"] in page.text and done["id"] not in page.text
    assert httpx.get(f"{server.url}/runs/{waiting['id']}").status_code == 200
    missing = httpx.get(f"{server.url}/runs/{done['id']}")
    assert missing.status_code == 404 and "pruned by the server&#39;s retention" in missing.text

    # Its idempotency key went with it: the same key starts a new run.
    again = server.call(lambda c: c.start_run("job", {"n": 1}, env="prod", idempotency_key="once"))
    assert again["id"] != done["id"]

    # The deployment lifecycle still works: v1 drains once its last runs end, and is removed.
    v2 = server.call(lambda c: c.deploy(make_app("snap2", APP.replace("n * 2", "n * 3")), env="prod"))
    server.call(lambda c: c.set_env("audit", v2["id"]))
    for run in (waiting, again):
        finish(server, run["id"])
    # The restarted run is on v1 too; end it.
    for run in server.call(lambda c: c.runs(deployment=v1["id"], limit=100)):
        if run["status"] not in {"completed", "failed", "cancelled", "killed"}:
            server.call(lambda c, r=run: c.kill(r["id"], reason="done"))
    assert server.call(lambda c: c.deployment(v1["id"]))["status"] == "drained"
    for run in (waiting, again):
        gone(server, run["id"])
    server.call(lambda c: c.remove_deployment(v1["id"]))
    assert server.call(lambda c: c.deployment(v1["id"]))["status"] == "removed"
    assert server.table_counts()["audit"] >= 4  # deploys, the restart, the kill, the removal: all kept


def test_retention_takes_a_duration_with_a_unit(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "tether", "server", "--port", "0", "--data-dir", str(tmp_path), "--retention", "30"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "'30' is not a duration" in refused.stderr and "30d, 12h, 15m or 60s" in refused.stderr
