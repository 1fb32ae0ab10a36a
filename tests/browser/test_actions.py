"""Acting from the dashboard in a real browser: environments, a run's escape hatches, moving a
run after a dry run, removing a drained deployment. Every outcome is checked through the API."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import HELLO, DashboardServer
from tests.browser.test_dashboard import start_onboard


def hello_variant(tmp_path: Path, name: str, edit: tuple[str, str] | None = None) -> Path:
    """A copy of examples/hello: a comment appended (replays v1's journals), or ``edit`` applied."""
    folder = tmp_path / name
    shutil.copytree(HELLO, folder)
    code = folder / "hello.py"
    source = code.read_text()
    if edit is not None:
        assert edit[0] in source
        source = source.replace(*edit)
    code.write_text(source + f"\n# {name}\n")
    return folder


def confirm_next(page: Page) -> list[str]:
    """Accept the next confirmation dialog; the list receives its question."""
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    return asked


def test_environments_are_created_promoted_and_split_from_the_page(
    server: DashboardServer, hello: dict[str, Any], page: Page, tmp_path: Path
) -> None:
    v2 = server.call(lambda c: c.deploy(hello_variant(tmp_path, "v2")))
    page.goto(server.url + "/envs")

    new = page.locator("#new-env")
    new.locator("input[name=env]").fill("staging")
    new.locator("select[name=deployment]").select_option("v2")
    new.locator("input[name=reason]").fill("try v2 first")
    asked = confirm_next(page)
    with page.expect_navigation():
        new.locator("button").click()
    assert asked == ["Create the environment pointing at the chosen deployment?"]
    envs = {e["name"]: e for e in server.call(lambda c: c.envs())}
    assert envs["staging"]["targets"] == [{"deployment_id": v2["id"], "weight": 100}]
    latest = server.call(lambda c: c.env_history("staging"))[0]
    assert (latest["actor"], latest["reason"]) == ("dashboard", "try v2 first")

    prod = page.locator("section[data-env='prod']")
    prod.locator("form.promote select[name=from]").select_option("staging")
    confirm_next(page)
    with page.expect_navigation():
        prod.locator("form.promote button").click()
    envs = {e["name"]: e for e in server.call(lambda c: c.envs())}
    assert envs["prod"]["targets"] == [{"deployment_id": v2["id"], "weight": 100}]
    promoted = server.call(lambda c: c.env_history("prod"))[0]
    assert (promoted["action"], promoted["actor"], promoted["reason"]) == (
        "promote",
        "dashboard",
        "promoted from staging",
    )
    expect(page.locator("section[data-env='prod'] .pointer")).to_contain_text("v2")

    prod = page.locator("section[data-env='prod']")
    prod.locator("input[name=weights]").fill("v1=90, v2=10")
    confirm_next(page)
    with page.expect_navigation():
        prod.locator("form.split button").click()
    envs = {e["name"]: e for e in server.call(lambda c: c.envs())}
    assert sorted(envs["prod"]["targets"], key=lambda t: t["weight"]) == [
        {"deployment_id": v2["id"], "weight": 10},
        {"deployment_id": hello["id"], "weight": 90},
    ]
    expect(page.locator("section[data-env='prod'] .pointer")).to_contain_text("v1 (90%)")

    # A split that cannot be read is refused with what to write instead; nothing changes.
    page.locator("section[data-env='prod'] input[name=weights]").fill("v1=ninety")
    confirm_next(page)
    with page.expect_navigation():
        page.locator("section[data-env='prod'] form.split button").click()
    expect(page.locator("h1")).to_contain_text("400")
    expect(page.locator("#message")).to_contain_text("write a split as LABEL=WEIGHT pairs")
    assert len(server.call(lambda c: c.env_history("prod"))) == 3


def test_a_run_is_signalled_paused_resumed_and_cancelled_from_its_page(
    server: DashboardServer, hello: dict[str, Any], page: Page
) -> None:
    first = start_onboard(server, "ada")
    page.goto(server.url + f"/runs/{first}")
    expect(page.locator("#signals tbody")).to_contain_text("No signals sent.")
    page.fill("#signal-form textarea[name=payload]", "{not json")
    with page.expect_navigation():
        page.click("#signal-form button")
    expect(page.locator("#message")).to_contain_text("the payload is not valid JSON")
    assert server.call(lambda c: c.signals(first)) == []

    page.goto(server.url + f"/runs/{first}")
    page.fill("#signal-form textarea[name=payload]", '{"ok": true}')
    with page.expect_navigation():
        page.click("#signal-form button")
    expect(page.locator("#notice")).to_have_text("signal approval delivered to entry 2")
    assert server.wait_for(first, {"completed"})["output"]["approved"] is True
    expect(page.locator("#signals tr[data-signal]")).to_contain_text("entry 2")
    expect(page.locator("#run-summary .status")).to_have_text("completed")

    second = start_onboard(server, "grace")
    page.goto(server.url + f"/runs/{second}")
    page.fill("#hatches input[name=reason]", "investigating")
    asked = confirm_next(page)
    with page.expect_navigation():
        page.click("#hatches button:has-text('Pause')")
    assert asked == [f"Pause run {second}? It gets no attempts until resumed."]
    assert server.call(lambda c: c.run(second))["status"] == "paused"
    record = server.call(lambda c: c.audit(target=second))[0]
    assert (record["action"], record["actor"], record["details"]["reason"]) == (
        "run.pause",
        "dashboard",
        "investigating",
    )
    expect(page.locator("#history")).to_contain_text("run.pause")
    expect(page.locator("#history")).to_contain_text("investigating")

    confirm_next(page)
    with page.expect_navigation():
        page.click("#hatches button:has-text('Resume')")
    assert server.call(lambda c: c.run(second))["status"] == "suspended"

    confirm_next(page)
    with page.expect_navigation():
        page.click("#hatches button:has-text('Cancel')")
    assert server.wait_for(second, {"cancelled"})["status"] == "cancelled"
    expect(page.locator("#run-summary .status")).to_have_text("cancelled")
    expect(page.locator("#hatches")).to_have_count(0)  # an ended run offers no hatches

    # A declined confirmation sends nothing.
    third = start_onboard(server, "alan")
    page.goto(server.url + f"/runs/{third}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#hatches button:has-text('Kill')")
    assert server.call(lambda c: c.run(third))["status"] == "suspended"
    assert server.call(lambda c: c.audit(target=third)) == []


def test_a_run_moves_only_after_a_dry_run_on_the_target(
    server: DashboardServer, hello: dict[str, Any], page: Page, tmp_path: Path
) -> None:
    run_id = start_onboard(server, "ada")
    v2 = server.call(lambda c: c.deploy(hello_variant(tmp_path, "v2")))
    changed = ("text = await ctx.step(greeting, name)", 'text = await ctx.step(greeting, "x")')
    server.call(lambda c: c.deploy(hello_variant(tmp_path, "v3", changed)))

    # v3 issues a different step: the dry run shows the diff, and only a forced move with a
    # reason would go on.
    page.goto(server.url + f"/runs/{run_id}")
    page.select_option("#move-form select[name=to]", "v3")
    with page.expect_navigation():
        page.click("#move-form button")
    expect(page.locator("#verdict")).to_contain_text("does not replay on v3")
    expect(page.locator("pre.stuck-reason")).to_contain_text("entry 0: journal has step greeting(#")
    expect(page.locator("#force-move input[name=reason]")).to_have_attribute("required", "")
    assert server.call(lambda c: c.run(run_id))["deployment_id"] == hello["id"]

    page.goto(server.url + f"/runs/{run_id}")
    page.select_option("#move-form select[name=to]", "v2")
    with page.expect_navigation():
        page.click("#move-form button")
    expect(page.locator("#verdict")).to_contain_text("the journal replays on v2")
    page.fill("#confirm-move input[name=reason]", "v2 has the fix")
    asked = confirm_next(page)
    with page.expect_navigation():
        page.click("#confirm-move button")
    assert asked == [f"Move run {run_id} to v2?"]
    expect(page.locator("#notice")).to_have_text("moved to v2")
    assert server.call(lambda c: c.run(run_id))["deployment_id"] == v2["id"]
    record = server.call(lambda c: c.audit(target=run_id))[0]
    assert record["action"] == "run.move" and record["details"]["forced"] is False
    assert record["details"]["check"]["compatible"] is True

    # The entries written before the move still name v1; the rest of the run happens on v2.
    expect(page.locator("#run-summary dd.deployment")).to_contain_text("v2")
    deployments = page.locator("#journal tbody tr td.entry-deployment")
    expect(deployments).to_have_text(["v1"] * len(server.call(lambda c: c.journal(run_id))))
    server.call(lambda c: c.signal(run_id, "approval", {"ok": True}))
    server.wait_for(run_id, {"completed"})
    expect(deployments.last).to_have_text("v2")


def test_a_run_restarts_from_its_page(server: DashboardServer, hello: dict[str, Any], page: Page) -> None:
    done = server.call(lambda c: c.start_run("greet", {"name": "ada"}, env="prod"))
    server.wait_for(done["id"], {"completed"})
    page.goto(server.url + f"/runs/{done['id']}")
    page.fill("#restart-form input[name=reason]", "once more")
    confirm_next(page)
    with page.expect_navigation():
        page.click("#restart-form button")
    expect(page.locator("#notice")).to_have_text(f"restarted from {done['id']}")
    new_id = page.url.split("/runs/")[1].split("?")[0]
    assert new_id != done["id"]
    new = server.wait_for(new_id, {"completed"})
    assert (new["linked_from"], new["link_kind"], new["input"]) == (done["id"], "restart", {"name": "ada"})
    expect(page.locator("#run-summary dt", has_text="restart of")).to_have_count(1)
    expect(page.locator(f"#run-summary a[href='/runs/{done['id']}']")).to_have_text(done["id"])


def test_a_drained_deployment_is_removed_from_its_page(
    server: DashboardServer, hello: dict[str, Any], page: Page, tmp_path: Path
) -> None:
    server.call(lambda c: c.deploy(hello_variant(tmp_path, "v2"), env="prod"))
    page.goto(server.url + "/")
    row = page.locator("tr[data-deployment='v1']")
    expect(row.locator(".status")).to_contain_text("drained")
    expect(row.locator(".status")).to_contain_text("safe to remove")
    expect(page.locator("tr[data-deployment='v2'] #remove")).to_have_count(0)
    row.locator("a", has_text="v1").click()
    expect(page.locator("#deployment-summary")).to_contain_text("safe to remove")
    asked = confirm_next(page)
    with page.expect_navigation():
        page.click("#remove button")
    assert asked == ["Remove v1? Its record stays; its artifact and worker go."]
    assert server.call(lambda c: c.deployment(hello["id"]))["removed_at"] is not None
    expect(page.locator("#deployment-summary .status")).to_contain_text("removed")
    # v2 holds prod: the page offers no removal at all.
    page.goto(server.url + "/deployments/v2")
    expect(page.locator("#remove")).to_have_count(0)


def test_forms_posted_from_another_site_are_refused(server: DashboardServer, hello: dict[str, Any]) -> None:
    run_id = start_onboard(server, "ada")
    forged = httpx.post(
        f"{server.url}/runs/{run_id}/kill", data={"reason": "x"}, headers={"Origin": "http://evil.example"}
    )
    assert forged.status_code == 403 and "another site" in forged.text
    assert server.call(lambda c: c.run(run_id))["status"] == "suspended"
    # The dashboard's own origin is accepted.
    own = httpx.post(f"{server.url}/runs/{run_id}/pause", data={"reason": "x"}, headers={"Origin": server.url})
    assert own.status_code == 303
    assert server.call(lambda c: c.run(run_id))["status"] == "paused"


def test_runs_filter_by_environment(server: DashboardServer, hello: dict[str, Any], page: Page) -> None:
    server.call(lambda c: c.set_env("staging", "v1"))
    on_prod = start_onboard(server, "ada")
    on_staging = server.call(lambda c: c.start_run("onboard", {"name": "grace"}, env="staging"))["id"]
    server.wait_for(on_staging, {"suspended"})
    page.goto(server.url + "/runs")
    expect(page.locator("tr[data-run]")).to_have_count(2)
    page.select_option("select[name=env]", "staging")
    with page.expect_navigation():
        page.click("form.filters button")
    expect(page.locator("tr[data-run]")).to_have_count(1)
    expect(page.locator("tr[data-run]")).to_have_attribute("data-run", on_staging)
    assert on_prod != on_staging
