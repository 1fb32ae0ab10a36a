"""What an agent saw when it decided: the fraud example's manifests, their diff, and the manual a
recorded model call links to, in a real browser against a real server and scripted model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ROOT, DashboardServer
from tests.e2e.conftest import model_server  # noqa: F401 (a fixture)

FRAUD = ROOT / "examples" / "fraud"
TX = {"tx": {"id": "tx-1", "amount": 5000, "country": "US"}}


@pytest.fixture
def agent_server(tmp_path: Path, model_server: tuple[str, Path]) -> Iterator[DashboardServer]:  # noqa: F811
    server = DashboardServer(tmp_path / "data", tmp_path / "server.log", env={"TETHER_MODEL_BASE_URL": model_server[0]})
    server.start()
    yield server
    server.stop()


def test_a_model_call_links_to_the_manual_it_was_shown(agent_server: DashboardServer, page: Page) -> None:
    server = agent_server
    v1 = server.call(lambda c: c.deploy(FRAUD / "v1", env="prod"))
    run = server.call(lambda c: c.start_run("review", TX, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    server.call(lambda c: c.deploy(FRAUD / "v2", env="prod"))

    # The deployments page compares v1 with v2 in words, and names the run the change touches.
    page.goto(server.url + "/")
    page.select_option("#compare select[name=from]", "v1")
    page.select_option("#compare select[name=to]", "v2")
    with page.expect_navigation():
        page.click("#compare button")
    expect(page.locator("h1")).to_have_text("Diff v1 → v2")
    tool = page.locator("#changes tr[data-component='compute_risk_score']", has_text="description changed")
    expect(tool.locator(".detail")).to_contain_text("0 to 10 where")
    expect(tool.locator(".detail")).to_contain_text("0 to 100 where")
    expect(page.locator("#changes tr[data-component='reviewer']")).to_contain_text("manual changed")
    expect(page.locator(f"#affected tr[data-run='{run['id']}']")).to_contain_text("reviewer")

    # The run's model call records the manual's digest and links to v1's copy of it.
    page.goto(server.url + f"/runs/{run['id']}")
    llm = page.locator("#journal tr[data-entry='0']")
    expect(llm).to_contain_text("llm")
    manual = server.call(lambda c: c.deployment(v1["id"]))["manifest"]["components"]["reviewer"]["manual_digest"]
    expect(llm.locator("a.manual")).to_have_attribute("href", f"/deployments/{v1['id']}#manual-{manual}")
    llm.locator("a.manual").click()
    expect(page).to_have_url(f"{server.url}/deployments/{v1['id']}#manual-{manual}")
    section = page.locator(f"section#manual-{manual}")
    expect(section).to_contain_text("Manual of agent reviewer")
    expect(section.locator("tr[data-tool='compute_risk_score'] .description")).to_have_text(
        "Returns a risk score from 0 to 10 where higher means more suspicious."
    )
    expect(section.locator("pre.instructions")).to_contain_text("Decide whether to block the transaction.")

    # v1's page says what holds it: no environment, one run in flight.
    expect(page.locator("#deployment-summary .status")).to_contain_text("draining")
    expect(page.locator("#deployment-summary .in-flight")).to_contain_text("1")
    expect(page.locator("#components tr[data-component='review']")).to_contain_text("workflow")
