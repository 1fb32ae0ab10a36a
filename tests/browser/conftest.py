"""Browser tests: Playwright driving Debian's chromium against a real ``tether server`` subprocess.

Marked ``browser``: they run by default and in CI; deselect them locally with ``-m "not browser"``.
A missing chromium fails the tests (``scripts/setup`` installs it); it never skips them.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import ServerProcess
from tether.client import Client

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


class DashboardServer(ServerProcess):
    """A server whose client calls run on their own thread: Playwright's sync API keeps an
    event loop on the test's thread, where ``asyncio.run`` is refused."""

    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(super().call, fn).result()


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/setup to install Debian's chromium", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium per module: Playwright's sync API marks the thread's event loop as running
    while it is open, which later tests' ``asyncio.run`` would refuse."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DashboardServer]:
    proc = DashboardServer(tmp_path / "data", tmp_path / "server.log")
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


@pytest.fixture
def hello(server: DashboardServer) -> dict[str, Any]:
    """examples/hello deployed to ``prod``."""
    return server.call(lambda c: c.deploy(HELLO, env="prod"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
