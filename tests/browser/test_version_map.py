"""The version map in a real browser: environments as arrows, runs in flight as bars, and a
draining deployment fading until it is safe to remove."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import HELLO, DashboardServer


def test_the_map_shows_the_pointer_on_the_new_version_and_the_pinned_run_on_the_old(
    server: DashboardServer, hello: dict[str, Any], page: Page, tmp_path: Path
) -> None:
    run = server.call(lambda c: c.start_run("onboard", {"name": "ada"}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    changed = tmp_path / "hello-v2"
    shutil.copytree(HELLO, changed)
    (changed / "hello.py").write_text((changed / "hello.py").read_text() + "\n# v2\n")
    assert server.call(lambda c: c.deploy(changed, env="prod"))["label"] == "v2"

    page.goto(server.url + "/")
    page.click("#nav-map")
    expect(page).to_have_url(server.url + "/map")
    old, new = (
        page.locator("#version-map g.deployment[data-deployment='v1']"),
        page.locator("#version-map g.deployment[data-deployment='v2']"),
    )
    expect(old).to_have_attribute("data-status", "draining")
    expect(new).to_have_attribute("data-status", "active")
    # The arrow of prod lands on v2, and only there.
    arrows = page.locator("#version-map g.env[data-env='prod'] line.arrow")
    expect(arrows).to_have_count(1)
    expect(arrows).to_have_attribute("data-target", "v2")
    # The run pinned to v1 is v1's bar; v2 has none.
    expect(old.locator(".runs-bar")).to_have_attribute("data-runs", "1")
    expect(old.locator("rect.segment.suspended")).to_have_attribute("data-count", "1")
    expect(new.locator(".runs-bar")).to_have_count(0)
    assert float(old.get_attribute("opacity") or "1") < 1.0
    assert float(new.get_attribute("opacity") or "0") == 1.0
    # The arrow points at the v2 box: its end is within v2's rectangle, horizontally.
    box = new.locator("rect.box")
    left = float(box.get_attribute("x") or "0")
    end = float(arrows.get_attribute("x2") or "-1")
    assert left <= end <= left + float(box.get_attribute("width") or "0")
    expect(page.locator("#retire tr[data-deployment='v1']")).to_contain_text("Wait for its runs to end")

    # The last pinned run ends: v1 fades to drained, safe to remove (the page refreshes itself).
    server.call(lambda c: c.signal(run["id"], "approval", {"ok": True}))
    server.wait_for(run["id"], {"completed"})
    expect(old).to_have_attribute("data-status", "drained")
    expect(old.locator(".runs-bar")).to_have_count(0)
    expect(old).to_contain_text("safe to remove")
    expect(page.locator("#retire tr[data-deployment='v1']")).to_contain_text("tether deployments remove v1")
