"""The dashboard in a real browser: in-flight counts, stuck runs, rollback, a run's journal."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import HELLO, DashboardServer


def start_onboard(server: DashboardServer, name: str) -> str:
    run = server.call(lambda c: c.start_run("onboard", {"name": name}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    return str(run["id"])


def test_deployments_page_counts_runs_in_flight_live(
    server: DashboardServer, hello: dict[str, Any], page: Page
) -> None:
    start_onboard(server, "ada")
    start_onboard(server, "grace")
    page.goto(server.url + "/")
    row = page.locator("tr[data-deployment='v1']")
    expect(row.locator(".in-flight")).to_have_text("2")
    expect(row.locator(".status")).to_have_text("active")
    expect(row.locator(".envs")).to_have_text("prod")
    expect(row).to_contain_text(hello["id"])
    # A run started while the page is open shows up without a reload.
    third = start_onboard(server, "alan")
    expect(row.locator(".in-flight")).to_have_text("3")
    server.call(lambda c: c.signal(third, "approval", {"ok": True}))
    server.wait_for(third, {"completed"})
    expect(row.locator(".in-flight")).to_have_text("2")


def test_stuck_run_shows_its_diff_first(
    server: DashboardServer, hello: dict[str, Any], page: Page, tmp_path: Path
) -> None:
    run_id = start_onboard(server, "ada")
    # Code under a pinned run cannot change; an operator's forced move is how it meets other code.
    changed = tmp_path / "hello-changed"
    shutil.copytree(HELLO, changed)
    source = (changed / "hello.py").read_text()
    assert "text = await ctx.step(greeting, name)" in source
    (changed / "hello.py").write_text(
        source.replace("text = await ctx.step(greeting, name)", 'text = await ctx.step(greeting, "x")')
    )
    server.call(lambda c: c.deploy(changed))
    server.call(lambda c: c.move(run_id, "v2", force=True, reason="testing the stuck view"))
    server.call(lambda c: c.signal(run_id, "approval", {"ok": True}))
    assert server.wait_for(run_id, {"stuck", "completed", "failed"})["status"] == "stuck"
    newer = server.call(lambda c: c.start_run("greet", {"name": "bob"}, env="prod"))
    server.wait_for(newer["id"], {"completed", "stuck"})

    page.goto(server.url + "/runs")
    expect(page.locator("tr[data-run]").first).to_have_attribute("data-run", run_id)
    diff = page.locator(f"tr[data-stuck='{run_id}']")
    expect(diff).to_contain_text("entry 0: journal has step greeting(#")
    expect(diff).to_contain_text("code issued step greeting(#")

    page.select_option("select[name=status]", "stuck")
    page.click("form.filters button")
    expect(page.locator("tr[data-run]")).to_have_count(1)
    page.goto(server.url + f"/runs/{run_id}")
    expect(page.locator("pre.stuck-reason")).to_contain_text("journal has step greeting")


def test_rollback_from_the_envs_page_moves_the_pointer(
    server: DashboardServer, hello: dict[str, Any], page: Page, tmp_path: Path
) -> None:
    changed = tmp_path / "hello-v2"
    shutil.copytree(HELLO, changed)
    (changed / "hello.py").write_text((changed / "hello.py").read_text() + "\n# v2\n")
    v2 = server.call(lambda c: c.deploy(changed, env="prod"))
    assert v2["label"] == "v2"

    page.goto(server.url + "/envs")
    prod = page.locator("section[data-env='prod']")
    expect(prod.locator(".pointer")).to_contain_text("v2")
    prod.locator("form.rollback input[name=reason]").fill("v2 looks wrong")
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    with page.expect_navigation():
        prod.locator("button", has_text="Rollback").click()
    assert dialogs == ["Roll prod back to its previous pointer?"]

    envs = {e["name"]: e for e in server.call(lambda c: c.envs())}
    assert envs["prod"]["targets"] == [{"deployment_id": hello["id"], "weight": 100}]
    latest = server.call(lambda c: c.env_history("prod"))[0]
    assert (latest["action"], latest["actor"], latest["reason"]) == ("rollback", "dashboard", "v2 looks wrong")
    expect(page.locator("section[data-env='prod'] .pointer")).to_contain_text("v1")
    expect(page.locator("section[data-env='prod'] .history tbody tr").first).to_contain_text("v2 looks wrong")


def test_cancelled_confirmation_changes_nothing(server: DashboardServer, hello: dict[str, Any], page: Page) -> None:
    page.goto(server.url + "/envs")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("section[data-env='prod'] button", has_text="Rollback").click()
    assert len(server.call(lambda c: c.env_history("prod"))) == 1


def test_run_page_lists_its_journal(server: DashboardServer, hello: dict[str, Any], page: Page) -> None:
    run_id = start_onboard(server, "ada")
    page.goto(server.url + f"/runs/{run_id}")
    expect(page.locator("dd.deployment")).to_contain_text("v1")
    journal = server.call(lambda c: c.journal(run_id))
    rows = page.locator("#journal tbody tr")
    expect(rows).to_have_count(len(journal))
    step = page.locator("#journal tr[data-entry='0']")
    expect(step).to_contain_text("step")
    expect(step).to_contain_text("greeting")
    expect(step).to_contain_text('"hello ada"')
    expect(step).to_contain_text("done")
    signal = page.locator("#journal tr.signal")
    expect(signal).to_contain_text("approval")
    expect(signal).to_contain_text("waiting")

    server.call(lambda c: c.signal(run_id, "approval", {"ok": True}))
    server.wait_for(run_id, {"completed"})
    expect(page.locator("#run-summary .status")).to_have_text("completed")  # refreshed live
    expect(signal).to_contain_text("done")
    expect(page.locator("pre.output")).to_contain_text('"approved":true')
    expect(rows).to_have_count(len(server.call(lambda c: c.journal(run_id))))


def test_bad_ids_answer_a_404_page(server: DashboardServer, page: Page) -> None:
    for path in ("/runs/run_nope", "/runs?deployment=v9", "/static/nope.js"):
        response = page.goto(server.url + path)
        assert response is not None and response.status == 404, path
        expect(page.locator("h1")).to_contain_text("404")


def test_a_deployment_page_shows_what_it_pins(server: DashboardServer, hello: dict[str, Any], page: Page) -> None:
    shown = server.call(lambda c: c.deployment("v1"))
    page.goto(server.url + "/deployments/v1")
    expect(page.locator("dd.isolation")).to_have_text(shown["isolation"])
    expect(page.locator("dd.code")).to_contain_text(f"{len(shown['code']['files'])} files")
    environment = page.locator("dd.environment")
    expect(environment).to_contain_text(
        "the server's, fingerprinted: Python " + shown["environment"]["fingerprint"]["python"]
    )
    environment.locator("summary").click()
    expect(environment).to_contain_text(f"pydantic=={shown['environment']['fingerprint']['packages']['pydantic']}")
