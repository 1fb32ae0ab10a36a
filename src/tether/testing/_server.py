"""A real ``tether server`` for tests: a subprocess on a temporary data directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tether.client import Client

_LISTENING = re.compile(r"listening on (http://\S+)")


class TestServer:
    """``tether server`` on a free loopback port and its own data directory, with real workers.

    Example (the ``tether_server`` pytest fixture starts and stops one per test)::

        async def test_deployed(tether_server):
            async with tether_server.client() as client:
                await client.deploy(Path("app"), env="dev")
                run = await client.start_run("greet", {"name": "ada"}, env="dev")
                assert (await client.result(run["id"], wait=30))["output"] == "hello ada"
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, data_dir: Path, *, args: list[str] | None = None) -> None:
        """Prepare a server on ``data_dir``; ``args`` are extra ``tether server`` options."""
        self.data_dir = data_dir
        """Where its store, bundles and worker logs live."""
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        """The server's log (its stderr)."""
        self.url = ""
        """The server's URL once started."""
        self._args = list(args or [])
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60) -> TestServer:
        """Start the server and wait until it answers.

        Raises:
            RuntimeError: it exited or did not become healthy (the message holds its log).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tether", "server", "--port", "0", "--data-dir", str(self.data_dir)]
                + ["--worker-idle-timeout", "60", *self._args],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while not self.url:
            found = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
            elif self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tether server did not start:\n{self.log_path.read_text(errors='replace')}")
            else:
                time.sleep(0.05)
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tether server never became healthy:\n{self.log_path.read_text(errors='replace')}")

    def client(self, *, token: str | None = None) -> Client:
        """A :class:`tether.client.Client` of this server (use it with ``async with``)."""
        return Client(self.url, token=token, actor="tests")

    def stop(self) -> None:
        """Stop the server (Ctrl-C, then a kill if it lingers)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
