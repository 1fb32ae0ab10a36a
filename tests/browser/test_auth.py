"""Signing in to the dashboard in a real browser: the session cookie, signing out, CSRF on every
form, a read token's refused actions, and pages that show only the signed-in tenant."""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import HELLO, DashboardServer
from tests.browser.test_actions import confirm_next
from tether.client import Client


def as_token(server: DashboardServer, token: str, fn: Any) -> Any:
    """Call the API with ``token`` (on a thread: Playwright holds this thread's event loop)."""

    async def go() -> Any:
        async with Client(server.url, token=token) as c:
            return await fn(c)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture
def tenants(server: DashboardServer, tmp_path: Path) -> dict[str, Any]:
    """default and acme, each with a deployment and a run waiting for its approval; tokens."""

    async def setup() -> dict[str, Any]:
        async with Client(server.url) as local:  # local mode: the first token is made here
            root = (await local.create_token(scope="operator", name="root"))["token"]
        out: dict[str, Any] = {"root": root}
        async with Client(server.url, token=root) as op:
            await op.create_tenant("acme")
            for tenant in ("default", "acme"):
                for scope in ("read", "admin"):
                    made = await op.create_token(scope=scope, tenant=tenant, name=f"{tenant}-{scope}")
                    out[f"{tenant}-{scope}"] = made["token"]
        acme_app = tmp_path / "acme-app"
        shutil.copytree(HELLO, acme_app)
        (acme_app / "hello.py").write_text((acme_app / "hello.py").read_text() + "\n# acme's own\n")
        for tenant, folder in (("default", HELLO), ("acme", acme_app)):
            async with Client(server.url, token=out[f"{tenant}-admin"]) as c:
                out[f"{tenant}-dep"] = (await c.deploy(folder, env="prod"))["id"]
                out[f"{tenant}-run"] = (await c.start_run("onboard", {"name": tenant}, env="prod"))["id"]
        return out

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, setup()).result()


def sign_in(page: Page, server: DashboardServer, token: str, path: str = "/") -> None:
    page.goto(server.url + path)
    expect(page.locator("#login-form")).to_be_visible()
    page.locator("input[name=token]").fill(token)
    with page.expect_navigation():
        page.locator("#login-form button").click()


def test_sign_in_sets_a_session_cookie_and_sign_out_ends_it(
    server: DashboardServer, tenants: dict[str, Any], page: Page
) -> None:
    page.goto(server.url + "/runs?status=suspended")
    assert page.url == server.url + "/login?next=%2Fruns%3Fstatus%3Dsuspended"
    page.locator("input[name=token]").fill(tenants["default-admin"][:-3] + "xyz")
    with page.expect_navigation():
        page.locator("#login-form button").click()
    expect(page.locator("#message")).to_contain_text("unknown token")
    assert not [c for c in page.context.cookies() if c["name"] == "tether_session"]

    page.locator("input[name=token]").fill(tenants["default-admin"])
    with page.expect_navigation():
        page.locator("#login-form button").click()
    assert page.url == server.url + "/runs?status=suspended"
    expect(page.locator("#viewer")).to_contain_text("token:default-admin@default")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "tether_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    secret = tenants["default-admin"][len("tether_") + 13 :]
    assert secret not in cookie["value"] and tenants["default-admin"] not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HTTP-only: no script reads it

    with page.expect_navigation():
        page.locator("#logout-form button").click()
    assert page.url == server.url + "/login"
    assert not [c for c in page.context.cookies() if c["name"] == "tether_session"]
    page.goto(server.url + "/runs")
    assert page.url.startswith(server.url + "/login")
    # The old cookie, replayed, is dead: signing out ended the session on the server.
    page.context.add_cookies([{**cookie}])  # type: ignore[list-item]
    page.goto(server.url + "/runs")
    assert page.url.startswith(server.url + "/login")


def test_forms_without_the_csrf_token_are_refused(server: DashboardServer, tenants: dict[str, Any], page: Page) -> None:
    run_id = tenants["default-run"]
    sign_in(page, server, tenants["default-admin"], f"/runs/{run_id}")
    assert page.url == server.url + f"/runs/{run_id}"
    field = page.locator("#hatches input[name=csrf]")
    assert len(field.get_attribute("value") or "") > 20
    # The browser's own cookie, a post without the form's token, or with another one: refused.
    for form in ({"reason": "forged"}, {"reason": "forged", "csrf": "not-the-token"}):
        answer = page.request.post(server.url + f"/runs/{run_id}/pause", form=form, max_redirects=0)
        assert answer.status == 403, answer.text()
        assert "CSRF" in answer.text()
    assert as_token(server, tenants["default-admin"], lambda c: c.run(run_id))["status"] != "paused"
    # Signing out needs the page's token too.
    assert page.request.post(server.url + "/logout", form={}, max_redirects=0).status == 403
    # The page's own form carries it: the run pauses, audited as the signed-in token.
    page.locator("#hatches input[name=reason]").fill("from the page")
    confirm_next(page)
    with page.expect_navigation():
        page.locator("#hatches button", has_text="Pause").click()
    expect(page.locator("#notice")).to_contain_text("pause: the run is paused")
    latest = as_token(server, tenants["default-admin"], lambda c: c.audit(limit=1, target=run_id))[0]
    assert (latest["action"], latest["actor"], latest["details"]["reason"]) == (
        "run.pause",
        "token:default-admin@default",
        "from the page",
    )


def test_a_read_token_sees_pages_but_its_actions_are_refused(
    server: DashboardServer, tenants: dict[str, Any], page: Page
) -> None:
    run_id = tenants["default-run"]
    sign_in(page, server, tenants["default-read"], f"/runs/{run_id}")
    expect(page.locator("#viewer")).to_contain_text("(read)")
    expect(page.locator("h1")).to_contain_text(run_id)
    confirm_next(page)
    with page.expect_navigation():
        page.locator("#hatches button", has_text="Kill").click()
    expect(page.locator("#message")).to_contain_text("needs an admin token")
    assert as_token(server, tenants["default-admin"], lambda c: c.run(run_id))["status"] == "suspended"


def test_pages_show_only_the_signed_in_tenant(server: DashboardServer, tenants: dict[str, Any], page: Page) -> None:
    sign_in(page, server, tenants["acme-admin"], "/runs")
    expect(page.locator("body")).to_contain_text(tenants["acme-run"])
    for path in ("/", "/runs", "/envs"):
        page.goto(server.url + path)
        html = page.content()
        assert tenants["acme-dep"] in html or path == "/runs"
        assert tenants["default-run"] not in html and tenants["default-dep"] not in html, path
    # Another tenant's run or deployment is a page exactly like one for an id that exists nowhere.
    for real, fake, kind in (
        (tenants["default-run"], "run_" + "0" * 20, "runs"),
        (tenants["default-dep"], "dep_" + "0" * 12, "deployments"),
    ):
        response = page.goto(server.url + f"/{kind}/{real}")
        assert response is not None and response.status == 404, real
        seen = page.locator("main").inner_text().replace(real, "<X>")
        page.goto(server.url + f"/{kind}/{fake}")
        assert page.locator("main").inner_text().replace(fake, "<X>") == seen
