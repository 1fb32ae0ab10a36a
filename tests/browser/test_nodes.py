"""The nodes page in a real browser, on one SQLite node: the node is *this one*, it holds the
lease of the run whose step is running and lists that run, which leaves it when it ends; only
operators see the page."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import DashboardServer
from tests.browser.test_auth import as_token, sign_in
from tests.e2e.conftest import write_app

APP = '''
import asyncio
import os
import tether

app = tether.App("held")

@app.function
async def hold(gate: str) -> str:
    """Runs until the file ``gate`` exists: the run stays running, its lease with this node."""
    while not os.path.exists(gate):
        await asyncio.sleep(0.05)
    return "released"

@app.workflow
async def held(ctx: tether.Context, gate: str) -> str:
    """One step that waits for the test."""
    return await ctx.step(hold, gate)
'''


def test_the_nodes_page_shows_this_node_and_the_run_it_runs(
    server: DashboardServer, page: Page, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    server.call(lambda c: c.deploy(write_app(tmp_path / "held", APP), env="prod", isolation="process"))
    run = server.call(lambda c: c.start_run("held", {"gate": str(gate)}, env="prod"))
    found = server.wait_for(run["id"], {"running"})
    node = server.call(lambda c: c.nodes())[0]["id"]
    assert found["node"] == node

    page.goto(server.url + "/")
    page.click("#nav-nodes")
    expect(page).to_have_url(server.url + "/nodes")
    rows = page.locator("#nodes tbody tr[data-node]")
    expect(rows).to_have_count(1)
    row = page.locator(f"#nodes tr[data-node='{node}']")
    expect(row).to_have_attribute("data-alive", "this one")
    expect(row.locator(".leases")).to_have_text("1")
    expect(row).to_contain_text(server.url)
    held = page.locator(f"section.node[data-node='{node}'] tr[data-run='{run['id']}']")
    expect(held).to_contain_text("held")
    expect(held).to_contain_text("v1")
    expect(held).to_contain_text("prod")
    expect(held.locator(".attempt")).to_have_text("1")

    held.locator(f"a[href='/runs/{run['id']}']").click()
    expect(page).to_have_url(server.url + f"/runs/{run['id']}")
    expect(page.locator("main code.node")).to_have_text(node)

    # The run ends: the page (refreshing itself) no longer lists it, and the lease is gone.
    page.goto(server.url + "/nodes")
    gate.touch()
    server.wait_for(run["id"], {"completed"})
    expect(page.locator(f"tr[data-run='{run['id']}']")).to_have_count(0)
    expect(row.locator(".leases")).to_have_text("0")
    expect(page.locator(f"section.node[data-node='{node}']")).to_contain_text("No run of tenant default")


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
