"""``tether dev`` through the real CLI: each save becomes a deployment, ``dev`` moves, an old run
stays pinned and completes on its own deployment, a syntax error leaves the loop alive."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


class Output:
    """The dev loop's stdout, read as it grows."""

    def __init__(self, path: Path, process: subprocess.Popen[bytes]) -> None:
        self.path = path
        self.process = process
        self.seen = 0

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait for ``pattern`` in what was printed since the last match; move past it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.path.read_text(errors="replace")
            found = re.compile(pattern, re.M).search(text, self.seen)
            if found:
                self.seen = found.end()
                return found
            assert self.process.poll() is None, f"tether dev exited {self.process.returncode}:\n{text}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{text[self.seen :]}"
            time.sleep(0.1)


def tether(url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tether", "--url", url, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_status(url: str, run_id: str, status: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        run: dict[str, object] = httpx.get(f"{url}/v1/runs/{run_id}").json()
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


def test_every_save_is_a_deployment_and_old_runs_stay_pinned(tmp_path: Path) -> None:
    app = tmp_path / "hello"
    shutil.copytree(ROOT / "examples" / "hello", app)
    source = app / "hello.py"
    log = tmp_path / "dev.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tether", "dev", str(app)], stdout=out, stderr=subprocess.STDOUT
        )
    output = Output(log, process)
    url = ""
    try:
        started = output.expect(r"server at (http://\S+) \(data in (\S+)\)")
        url, data_dir = started.group(1), Path(started.group(2))
        output.expect(r"new deployment v1 \((dep_\w+)\): dev -> v1")
        output.expect(r"watching .* for changes")

        run_id = json.loads(tether(url, "--json", "run", "onboard", "--env", "dev", "--input", '{"name": "ada"}'))["id"]
        wait_status(url, run_id, "suspended")

        source.write_text(source.read_text().replace('f"hello {name}"', 'f"welcome {name}"'))
        v2 = output.expect(r"new deployment v2 \((dep_\w+)\): dev -> v2").group(1)
        output.expect(r"v1 -> v2\n\s+\*: code changed: hello.py: changed")
        output.expect(rf"{run_id} \(onboard, suspended\) stays on v1")
        envs = httpx.get(f"{url}/v1/envs").json()["environments"]
        assert [t["deployment_id"] for e in envs if e["name"] == "dev" for t in e["targets"]] == [v2]

        tether(url, "signal", run_id, "approval", '{"ok": true}')
        done = wait_status(url, run_id, "completed")
        assert done["output"] == {"greeting": "hello ada", "approved": True, "version": "v1"}

        fixed = source.read_text()
        source.write_text(fixed + "\ndef broken(:\n")
        output.expect(r"✗ syntax error hello.py:\d+: invalid syntax")
        output.expect(r"not deployed; waiting for the next save")
        assert process.poll() is None

        source.write_text(fixed.replace('"""Greets a person."""', '"""Greets someone."""'))
        output.expect(r"new deployment v3 \(dep_\w+\): dev -> v3")
        output.expect(r"greet: description changed")

        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        output.expect(r"tether dev stopped")
        assert not data_dir.exists(), "the temporary data directory is removed"
        try:
            httpx.get(url + "/healthz", timeout=2)
            raise AssertionError("the dev server still answers after Ctrl-C")
        except httpx.TransportError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_attached_to_a_server_dev_deploys_there_and_leaves_it_running(server: ServerProcess, tmp_path: Path) -> None:
    app = tmp_path / "hello"
    shutil.copytree(ROOT / "examples" / "hello", app)
    log = tmp_path / "dev.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tether", "--url", server.url, "dev", str(app), "--env", "preview"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    output = Output(log, process)
    try:
        output.expect(rf"attached to the server at {re.escape(server.url)}")
        output.expect(r"new deployment v1 \(dep_\w+\): preview -> v1")
        output.expect(r"watching .* for changes")
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200, "an attached server keeps running"
    envs = server.call(lambda c: c.envs())
    assert [e["name"] for e in envs] == ["preview"]
