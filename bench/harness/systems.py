"""The systems under test, each started from scratch in its own temp dir, bound to 127.0.0.1.

tether and Restate are servers driven over HTTP by this process; DBOS is a library, so its
driver (bench/peers/dbos_driver.py) runs the workloads in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from . import procs
from .http1 import Http1Client, HttpError
from .paths import BENCH, PEER_PYTHON, PROJECT, RESTATE_SERVER, TETHER_APP


async def until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Await ``predicate()`` (sync or async) until true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


class WorkflowFailed(RuntimeError):
    pass


# --- tether ----------------------------------------------------------------------------------


class TetherSystem:
    """``tether server --synchronous FULL`` with the bench app deployed to the env ``bench``."""

    name = "tether"
    call_note = "HTTP: one POST .../runs?wait= (starts and waits, like Restate's ingress call)"

    def __init__(
        self,
        reaper: procs.Reaper,
        workdir: Path,
        *,
        idle_timeout: float = 300.0,
        env: dict[str, str] | None = None,
        store: str | None = None,
        node_id: str | None = None,
        lease_timeout: float | None = None,
    ) -> None:
        self.reaper = reaper
        self.workdir = workdir
        self.idle_timeout = idle_timeout
        self.env = env or {}  # extra environment of the server (its workers get what PASSED_ENV lets through)
        self.store = store
        """A ``postgresql://`` store URL (tether-pg); None: SQLite in the data dir."""
        self.node_id = node_id
        """``--node-id`` of a node sharing a PostgreSQL store with others (tether-pg2, bench/failover)."""
        self.lease_timeout = lease_timeout
        """``--lease-timeout`` (None: the server's default)."""
        if store is not None:
            self.name = "tether-pg"
            self.call_note = self.call_note + "; store: PostgreSQL (scripts/postgres, fsync on, one node)"
        self.url = ""
        self.server: procs.Managed | None = None
        self.http: Http1Client | None = None
        self.deployment = ""

    async def start(self, *, deploy: bool = True) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True)
        log = self.workdir / "server.log"
        self.server = self.reaper.start(
            "tether server",
            [
                str(PROJECT / ".venv/bin/tether"),
                "server",
                "--port",
                "0",
                "--host",
                "127.0.0.1",
                "--data-dir",
                str(data),
                "--synchronous",
                "FULL",
                "--worker-idle-timeout",
                str(self.idle_timeout),
                *(["--store", self.store] if self.store else []),
                *(["--node-id", self.node_id] if self.node_id else []),
                *(["--lease-timeout", str(self.lease_timeout)] if self.lease_timeout else []),
            ],
            log=log,
            env=dict(os.environ, **self.env) if self.env else None,
            stop_timeout=20.0,
        )
        pattern = re.compile(r"tether server listening on (http://\S+)")

        def listening() -> bool:
            match = pattern.search(log.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
            if self.server is not None and self.server.popen.poll() is not None:
                raise RuntimeError(f"tether server exited: see {log}")
            return bool(match)

        await until(listening, 60, "tether server to listen")
        self.http = Http1Client(self.url)
        if deploy:
            self.deployment = await self.deploy(TETHER_APP, env="bench")

    async def deploy(self, path: Path, env: str | None = None) -> str:
        """Deploy an app folder through tether's client SDK; returns the deployment id."""
        from tether.client import Client

        async with Client(self.url, actor="bench", timeout=120.0) as client:
            answer = await client.deploy(path, env=env)
        return str(answer["deployment"]["id"] if "deployment" in answer else answer["id"])

    def pid_groups(self) -> dict[str, list[int]]:
        assert self.server is not None
        workers = self.workers()
        return {"server": [self.server.pid], "deployment": workers}

    def workers(self) -> list[int]:
        assert self.server is not None
        pids = procs.children(self.server.pid, "tether._worker")
        # A sandboxed worker is bwrap's child (and its init's): count the whole tree.
        pids = sorted(set(pids) | set(procs.descendants(pids)))
        self.server.adopt(pids)
        return pids

    async def start_run(self, workflow: str, body: dict[str, Any], deployment: str | None = None) -> str:
        assert self.http is not None
        path = (
            f"/v1/deployments/{deployment}/workflows/{workflow}/runs"
            if deployment
            else f"/v1/envs/bench/workflows/{workflow}/runs"
        )
        status, run = await self.http.request("POST", path, body)
        if status != 201:
            raise WorkflowFailed(f"start {workflow}: {status} {run}")
        return str(run["id"])

    async def result(self, run_id: str, timeout: float = 120.0) -> Any:
        assert self.http is not None
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            _, run = await self.http.request(
                "GET", f"/v1/runs/{run_id}/result?wait={min(left, 60.0):.3f}", timeout=min(left, 60.0) + 30
            )
            if run["status"] == "completed":
                return run["output"]
            if run["status"] in {"failed", "cancelled", "killed", "stuck"}:
                raise WorkflowFailed(f"run {run_id} {run['status']}: {run.get('error') or run.get('stuck_reason')}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout:.0f}s")

    async def status(self, run_id: str) -> str:
        assert self.http is not None
        _, run = await self.http.request("GET", f"/v1/runs/{run_id}")
        return str(run["status"])

    async def signal(self, run_id: str, name: str = "go") -> None:
        assert self.http is not None
        status, answer = await self.http.request("POST", f"/v1/runs/{run_id}/signals/{name}", {"ok": True})
        if status != 202:
            raise WorkflowFailed(f"signal {run_id}: {status} {answer}")

    async def metrics(self) -> dict[str, float]:
        """``/metrics`` summed by metric name and status label (e.g. ``tether_runs{suspended}``)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            response = await http.get("/metrics")
        response.raise_for_status()
        totals: dict[str, float] = {}
        for line in response.text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
            if not match:
                continue
            name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
            status = re.search(r'status="(\w+)"', labels)
            key = f"{name}{{{status.group(1)}}}" if status else name
            totals[key] = totals.get(key, 0.0) + value
        return totals

    async def invoke(self, n: int) -> int:
        """Start ``steps(n)`` and wait for its result, in one request."""
        assert self.http is not None
        status, run = await self.http.request(
            "POST", "/v1/envs/bench/workflows/steps/runs?wait=120", {"n": n}, timeout=150
        )
        if status != 201:
            raise WorkflowFailed(f"start steps: {status} {run}")
        if run["status"] != "completed":
            raise WorkflowFailed(f"run {run['id']} {run['status']}: {run.get('error') or run.get('stuck_reason')}")
        return int(run["output"])

    async def invoke_agent(self, topic: str) -> dict[str, Any]:
        """Start the ``agent`` workflow and wait for it, in one request; the ended run."""
        assert self.http is not None
        status, run = await self.http.request(
            "POST", "/v1/envs/bench/workflows/agent/runs?wait=120", {"topic": topic}, timeout=150
        )
        if status != 201:
            raise WorkflowFailed(f"start agent: {status} {run}")
        if run["status"] != "completed":
            raise WorkflowFailed(f"run {run['id']} {run['status']}: {run.get('error') or run.get('stuck_reason')}")
        return dict(run)

    async def journal(self, run_id: str) -> list[dict[str, Any]]:
        assert self.http is not None
        _, answer = await self.http.request("GET", f"/v1/runs/{run_id}/journal")
        return list(answer["entries"])

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.server is not None:
            self.workers()
            self.reaper.stop(self.server)
            self.server = None


class TetherCluster:
    """tether-pg2: two ``tether server`` nodes (own ``--node-id``, data dir and port) on one
    PostgreSQL database, the bench app deployed once. The load alternates between the nodes:
    each call is one ``POST .../runs?wait=`` to the node it was sent to, which runs it."""

    name = "tether-pg2"
    call_note = (
        "HTTP: one POST .../runs?wait= (starts and waits), calls alternating between the two nodes; "
        "store: PostgreSQL (scripts/postgres, fsync on, two nodes)"
    )

    def __init__(self, reaper: procs.Reaper, workdir: Path, *, store: str, idle_timeout: float = 300.0) -> None:
        self.nodes = [
            TetherSystem(reaper, workdir / f"node-{node_id}", idle_timeout=idle_timeout, store=store, node_id=node_id)
            for node_id in ("a", "b")
        ]
        self._turn = 0
        self.deployment = ""

    async def start(self) -> None:
        # One after the other: the first node creates the schema, the second finds it made.
        for node in self.nodes:
            await node.start(deploy=False)
        self.deployment = await self.nodes[0].deploy(TETHER_APP, env="bench")

    def pid_groups(self) -> dict[str, list[int]]:
        """server = both ``tether server`` processes; deployment = both nodes' workers."""
        groups: dict[str, list[int]] = {"server": [], "deployment": []}
        for node in self.nodes:
            for name, pids in node.pid_groups().items():
                groups[name] += pids
        return groups

    async def invoke(self, n: int) -> int:
        node = self.nodes[self._turn % len(self.nodes)]
        self._turn += 1
        return await node.invoke(n)

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


# --- the scripted model (W6) -------------------------------------------------------------------


class ModelServer:
    """``python -m tether.testing.model_server --script researcher --delay D --timings FILE``:
    the model of W6's agent, answering every call ``delay`` seconds late and logging, per
    request, the time it took from the request received to the answer ready."""

    def __init__(self, reaper: procs.Reaper, workdir: Path, *, delay: float) -> None:
        self.reaper = reaper
        self.workdir = workdir
        self.delay = delay
        self.timings = workdir / "model-timings.jsonl"
        self.url = ""  # the base URL, ending in /v1
        self.proc: procs.Managed | None = None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "model-server.log"
        self.proc = self.reaper.start(
            "model server",
            [
                str(PROJECT / ".venv/bin/python"),
                "-m",
                "tether.testing.model_server",
                "--script",
                "researcher",
                "--delay",
                str(self.delay),
                "--timings",
                str(self.timings),
            ],
            log=log,
            stop_timeout=10.0,
        )
        pattern = re.compile(r"model server listening on (http://\S+)")

        def listening() -> bool:
            match = pattern.search(log.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
            if self.proc is not None and self.proc.popen.poll() is not None:
                raise RuntimeError(f"model server exited: see {log}")
            return bool(match)

        await until(listening, 60, "the model server to listen")

    def mark(self) -> int:
        """Where the timings file ends now: pass it to :meth:`seconds_since`."""
        return self.timings.stat().st_size if self.timings.exists() else 0

    def seconds_since(self, mark: int) -> list[float]:
        """The model's own time of every request answered since ``mark``."""
        with self.timings.open("rb") as timings:
            timings.seek(mark)
            return [float(json.loads(line)["seconds"]) for line in timings.read().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc is not None:
            self.reaper.stop(self.proc)
            self.proc = None


# --- Restate ---------------------------------------------------------------------------------


class RestateSystem:
    """restate-server (default durability) + the Python SDK endpoint under hypercorn."""

    name = "restate"
    call_note = "HTTP: one POST to the ingress (request-response: starts and waits)"

    def __init__(self, reaper: procs.Reaper, workdir: Path) -> None:
        self.reaper = reaper
        self.workdir = workdir
        self.server: procs.Managed | None = None
        self.endpoint: procs.Managed | None = None
        self.http: Http1Client | None = None
        self.ingress = ""

    async def start(self) -> None:
        ingress, admin, fabric, endpoint_port = (procs.free_port() for _ in range(4))
        self.ingress = f"http://127.0.0.1:{ingress}"
        admin_url = f"http://127.0.0.1:{admin}"
        env = dict(
            os.environ,
            RESTATE_INGRESS__BIND_ADDRESS=f"127.0.0.1:{ingress}",
            RESTATE_ADMIN__BIND_ADDRESS=f"127.0.0.1:{admin}",
            RESTATE_BIND_ADDRESS=f"127.0.0.1:{fabric}",
            RESTATE_ADVERTISED_ADDRESS=f"http://127.0.0.1:{fabric}/",
            RESTATE_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="1",
        )
        base = self.workdir / "restate-data"
        base.mkdir(parents=True)
        self.server = self.reaper.start(
            "restate-server",
            [
                str(RESTATE_SERVER),
                "--base-dir",
                str(base),
                "--node-name",
                "bench",
                "--no-logo",
                "--log-disable-ansi-codes",
                "true",
            ],
            log=self.workdir / "restate-server.log",
            env=env,
            cwd=self.workdir,
            stop_timeout=30.0,
        )
        async with httpx.AsyncClient(timeout=5) as probe:

            async def admin_ok() -> bool:
                assert self.server is not None
                if self.server.popen.poll() is not None:
                    raise RuntimeError(f"restate-server exited: see {self.workdir / 'restate-server.log'}")
                try:
                    return (await probe.get(f"{admin_url}/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(admin_ok, 90, "restate-server admin API", interval=0.2)
            self.endpoint = self.reaper.start(
                "restate endpoint (hypercorn)",
                [str(PEER_PYTHON), str(BENCH / "peers/restate_endpoint.py"), str(endpoint_port)],
                log=self.workdir / "restate-endpoint.log",
                stop_signal=signal.SIGINT,  # the SDK process ignores SIGTERM after its first request
                stop_timeout=10.0,
            )

            async def endpoint_ok() -> bool:
                assert self.endpoint is not None
                if self.endpoint.popen.poll() is not None:
                    raise RuntimeError(f"restate endpoint exited: see {self.workdir / 'restate-endpoint.log'}")
                try:
                    await probe.get(f"http://127.0.0.1:{endpoint_port}/health")
                    return True
                except httpx.TransportError:
                    return False

            await until(endpoint_ok, 60, "restate endpoint", interval=0.2)
            response = await probe.post(
                f"{admin_url}/deployments", json={"uri": f"http://127.0.0.1:{endpoint_port}"}, timeout=60
            )
            if response.status_code >= 300:
                raise RuntimeError(f"registering the endpoint: {response.status_code} {response.text[:300]}")
        self.http = Http1Client(self.ingress)

        async def ingress_ok() -> bool:
            try:
                return await self.invoke(1) == 1
            except (OSError, HttpError, WorkflowFailed):
                return False

        await until(ingress_ok, 60, "restate ingress to route Bench/steps", interval=0.25)

    def pid_groups(self) -> dict[str, list[int]]:
        assert self.server is not None and self.endpoint is not None
        return {"server": [self.server.pid], "deployment": [self.endpoint.pid]}

    async def invoke(self, n: int) -> int:
        assert self.http is not None
        status, answer = await self.http.request("POST", "/Bench/steps", n)
        if status != 200:
            raise WorkflowFailed(f"Bench/steps: {status} {answer}")
        return int(answer)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        for proc in (self.endpoint, self.server):
            if proc is not None:
                self.reaper.stop(proc)
        self.endpoint = self.server = None


# --- DBOS --------------------------------------------------------------------------------------


async def run_dbos(reaper: procs.Reaper, workdir: Path, args: list[str], timeout: float) -> dict[str, Any]:
    """Run bench/peers/dbos_driver.py with ``args``; its JSON answer."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "dbos-driver.log"
    out = workdir / "dbos-driver.out"
    proc = reaper.start(
        "dbos driver",
        [
            "sh",
            "-c",
            'exec "$0" "$@" >"$DBOS_OUT"',
            str(PEER_PYTHON),
            str(BENCH / "peers/dbos_driver.py"),
            "--dir",
            str(workdir),
            *args,
        ],
        log=log,
        env=dict(os.environ, DBOS_OUT=str(out)),
        stop_signal=signal.SIGINT,
    )
    try:
        await until(lambda: proc.popen.poll() is not None, timeout, "the DBOS driver", interval=0.1)
    finally:
        reaper.stop(proc)
    if proc.popen.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"DBOS driver failed ({proc.popen.returncode}):\n{tail}")
    lines = [line for line in out.read_text().splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1]))


def command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
