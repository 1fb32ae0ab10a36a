"""The README's main command, then the dashboard: what a newcomer sees after ``scripts/demo``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ROOT

READY = "The dashboard shows it all"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``scripts/demo`` left running (as a user leaves it): its URL and its output so far."""
    port = free_port()
    out = tmp_path / "demo.out"
    env = dict(os.environ, TETHER_PORT=str(port), TETHER_DATA_DIR=str(tmp_path / "data"))
    env.pop("TETHER_DEMO_EXIT", None)
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "demo")],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while READY not in out.read_text():
            assert proc.poll() is None, f"scripts/demo exited {proc.returncode}:\n{out.read_text()}"
            assert time.monotonic() < deadline, f"scripts/demo did not finish its walk-through:\n{out.read_text()}"
            time.sleep(0.2)
        time.sleep(0.5)  # its last lines
        yield f"http://127.0.0.1:{port}", out.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the demo tells its user
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_main_job_leaves_a_dashboard_with_the_example(demo: tuple[str, str], page: Page) -> None:
    url, output = demo
    page.goto(url + "/")
    expect(page.locator("tr[data-deployment]")).to_have_count(2)
    expect(page.locator("tr[data-deployment='v1'] .envs")).to_have_text("prod")  # rolled back at the end
    expect(page.locator("tr[data-deployment='v1'] .in-flight")).to_have_text("1")  # the run left waiting
    expect(page.locator("tr[data-deployment='v2'] .status")).to_contain_text("drained")

    page.goto(url + "/envs")
    history = page.locator("section[data-env='prod'] .history tbody tr")
    expect(history).to_have_count(3)
    expect(history.first).to_contain_text("rollback")

    page.goto(url + "/runs")
    expect(page.locator("tr[data-run]")).to_have_count(4)
    expect(page.locator("tr[data-run].completed")).to_have_count(3)

    # Approve the waiting run from its page, as the demo's last line says.
    waiting = output.split("Run ")[-1].split(" ")[0]
    assert waiting.startswith("run_"), output
    page.goto(f"{url}/runs/{waiting}")
    page.fill("#signal-form textarea[name=payload]", '{"ok": true}')
    with page.expect_navigation():
        page.click("#signal-form button")
    expect(page.locator("#run-summary .status")).to_have_text("completed", timeout=30_000)
    run = httpx.get(f"{url}/v1/runs/{waiting}", timeout=10).json()
    assert run["output"] == {"greeting": "hello grace", "approved": True, "version": "v1"}
