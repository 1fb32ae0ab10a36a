"""The nodes page in a real browser, on one SQLite node: the node is *this one*, it holds the
leases of the runs whose step is running and lists them (50, and a link to the rest), until
they end; only operators see the page and its link."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import DashboardServer
from tests.browser.test_auth import as_token, sign_in
from tests.e2e.conftest import write_app
from tests.e2e.test_nodes_page import APP
from tether.client import Client
from tether.dashboard.views import RUNS_PER_NODE


def _wait_until(server: DashboardServer, status: str, count: int) -> None:
    """Until ``count`` runs have ``status``, asking the server twenty times a second."""

    async def poll(c: Client) -> None:
        deadline = time.monotonic() + 30
        while len(await c.runs(status=status, limit=None)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} runs became {status}"
            await asyncio.sleep(0.05)

    server.call(poll)


def test_the_nodes_page_shows_this_node_and_the_runs_it_runs(
    server: DashboardServer, page: Page, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # isolation="process": the step reads the test's own file (the default tier hides it).
    server.call(lambda c: c.deploy(write_app(tmp_path / "held", APP), env="prod", isolation="process"))

    async def start(c: Client) -> list[str]:
        body = {"gate": str(gate)}
        return [(await c.start_run("held", body, env="prod"))["id"] for _ in range(RUNS_PER_NODE + 1)]

    runs = server.call(start)
    first = runs[0]
    _wait_until(server, "running", len(runs))
    node = server.call(lambda c: c.nodes())[0]["id"]
    assert server.call(lambda c: c.run(first))["node"] == node

    page.goto(server.url + "/")
    page.click("#nav-nodes")
    expect(page).to_have_url(server.url + "/nodes")
    expect(page.locator("#nodes tbody tr[data-node]")).to_have_count(1)
    row = page.locator(f"#nodes tr[data-node='{node}']")
    expect(row).to_have_attribute("data-alive", "this one")
    expect(row.locator(".leases")).to_have_text(str(len(runs)))
    expect(row).to_contain_text(server.url)
    section = page.locator(f"section.node[data-node='{node}']")
    # One node page shows 50 of a node's runs, newest first, and links to the rest.
    expect(section.locator("tr[data-run]")).to_have_count(RUNS_PER_NODE)
    held = section.locator(f"tr[data-run='{runs[-1]}']")
    expect(held).to_contain_text("held")
    expect(held).to_contain_text("v1")
    expect(held).to_contain_text("prod")
    expect(held.locator(".attempt")).to_have_text("1")
    expect(section.locator(f"tr[data-run='{first}']")).to_have_count(0)
    section.locator("a.more").click()
    expect(page).to_have_url(server.url + f"/runs?node={node}")
    expect(page.locator("#runs tr[data-run]")).to_have_count(len(runs))
    page.locator(f"#runs tr[data-run='{first}'] a[href='/runs/{first}']").click()
    expect(page.locator("#run-node")).to_have_text(node)
    page.click("#run-node")
    expect(page).to_have_url(server.url + f"/nodes#node-{node}")

    # The runs end: the page (refreshing itself) no longer lists them, and the leases are gone.
    gate.touch()
    _wait_until(server, "completed", len(runs))
    expect(section.locator("tr[data-run]")).to_have_count(0)
    expect(row.locator(".leases")).to_have_text("0")
    expect(section).to_contain_text("No run of tenant default")


def test_only_operators_see_the_nodes_page(server: DashboardServer, page: Page) -> None:
    root = server.call(lambda c: c.create_token(scope="operator", name="root"))["token"]
    admin = as_token(server, root, lambda c: c.create_token(scope="admin", name="admin"))["token"]

    sign_in(page, server, admin)
    expect(page.locator("#viewer")).to_contain_text("admin")
    expect(page.locator("#nav-nodes")).to_have_count(0)
    answer = page.goto(server.url + "/nodes")
    assert answer is not None and answer.status == 403
    expect(page.locator("main")).to_contain_text("operator token")

    page.context.clear_cookies()
    sign_in(page, server, root, "/nodes")
    expect(page).to_have_url(server.url + "/nodes")
    expect(page.locator("#nodes tr[data-node]")).to_have_attribute("data-alive", "this one")
