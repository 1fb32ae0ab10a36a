"""A real ``tether server`` subprocess per test, on a free loopback port, with real workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests._postgres import fresh_schema, postgres_url
from tether.client import Client

T = TypeVar("T")
LISTENING = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    """A ``tether server`` started as a subprocess on a data directory."""

    def __init__(
        self, data_dir: Path, log_path: Path, env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env or {}
        self.args = list(args)
        """Extra ``tether server`` arguments, after the defaults (so a repeated option wins)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        log = open(self.log_path, "ab")
        log.write(b"\n--- server start ---\n")
        log.flush()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether",
                "server",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "info",
                "--worker-idle-timeout",
                "60",
                *self.args,
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = LISTENING.findall(self.log_path.read_text(errors="replace"))
            if len(found) >= self.starts:
                self.url = found[-1]
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"tether server exited early:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"tether server did not start:\n{self.log_path.read_text()}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"tether server never became healthy:\n{self.log_path.read_text()}")

    @property
    def starts(self) -> int:
        return self.log_path.read_text(errors="replace").count("--- server start ---")

    def kill9(self) -> None:
        """Crash the server the hard way."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``fn`` with a client of this server."""

        async def go() -> T:
            async with Client(self.url, actor="tests") as client:
                return await fn(client)

        return asyncio.run(go())

    def table_counts(self) -> dict[str, int]:
        """Rows per table, read straight from the SQLite file (WAL allows it while serving)."""
        conn = sqlite3.connect(f"file:{self.data_dir / 'tether.db'}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        finally:
            conn.close()

    def wait_for(self, run_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
        """Poll a run until its status is one of ``statuses``."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.call(lambda c: c.run(run_id))
            if run["status"] in statuses:
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} is {run.get('status')}, expected one of {statuses}: {run}")


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", tmp_path / "server.log")
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def write_app(root: Path, source: str, *, module: str = "app", attribute: str = "app") -> Path:
    """Write an app folder: ``tether.toml`` plus one module."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tether.toml").write_text(f'app = "{module}:{attribute}"\n')
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, source: str, **kwargs: str) -> Path:
        return write_app(tmp_path / "apps" / name, source, **kwargs)

    return make


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The scripted OpenAI-compatible model (``tether.testing.model_server``) on a free port:
    its base URL, and the file where it logs every request it received."""
    log = tmp_path / "model-requests.jsonl"
    err = tmp_path / "model-server.log"
    with err.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.testing.model_server", "--log", str(log)], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 20
        while not (found := re.search(r"listening on (\S+)", err.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        yield found.group(1), log
    finally:
        proc.terminate()
        proc.wait(10)


class Cluster:
    """``tether server`` nodes started on one PostgreSQL schema; each test's own."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.nodes: dict[str, ServerProcess] = {}
        self.effects = tmp_path / "effects.txt"

    def node(self, name: str, *, lease: float = 2.0, writers: int | None = None) -> ServerProcess:
        more = [] if writers is None else ["--store-writers", str(writers)]
        proc = ServerProcess(
            self.tmp_path / f"node-{name}",
            self.tmp_path / f"node-{name}.log",
            args=["--store", self.url, "--node-id", name, "--lease-timeout", str(lease), *more],
        )
        proc.start()
        self.nodes[name] = proc
        return proc

    def deploy(self, via: ServerProcess, app_dir: Path) -> None:
        via.call(lambda c: c.deploy(app_dir, env="prod", isolation="process"))

    def start(self, via: ServerProcess, workflow: str, **inputs: Any) -> str:
        body = {"effects": str(self.effects), **inputs}
        run_id: str = via.call(lambda c: c.start_run(workflow, body, env="prod"))["id"]
        return run_id

    def result(self, via: ServerProcess, run_id: str, wait: float = 60) -> dict[str, Any]:
        found: dict[str, Any] = via.call(lambda c: c.result(run_id, wait=wait))
        return found

    def journal(self, via: ServerProcess, run_id: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = via.call(lambda c: c.journal(run_id))
        return entries

    def effects_count(self) -> Counter[str]:
        return Counter(self.effects.read_text().split()) if self.effects.exists() else Counter()

    def close(self) -> None:
        for proc in self.nodes.values():
            if proc.process is not None and proc.process.poll() is None:
                proc.process.send_signal(signal.SIGCONT)
            proc.stop()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    url, drop = fresh_schema(postgres_url())
    made = Cluster(tmp_path, url)
    try:
        yield made
    finally:
        made.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for name, proc in made.nodes.items():
                print(f"\n--- node {name} log ---\n{proc.log_path.read_text(errors='replace')[-6000:]}")
        drop()
