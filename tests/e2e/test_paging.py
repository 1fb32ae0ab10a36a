"""Cursor pagination through a real server: lists page by key, never by offset.

A page ends at an item; the next page starts strictly after it, so runs started while a
client pages are neither skipped nor shown twice. Unknown query parameters are refused
rather than silently ignored, and a run with more than 10,000 journal entries is read a page
at a time by the API, ``tether runs show`` and the dashboard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli

APP = '''
import tether

app = tether.App("paging")

@app.workflow
async def quick(ctx: tether.Context, n: int) -> int:
    """Ends at once."""
    return n

@app.workflow
async def long_journal(ctx: tether.Context, entries: int) -> int:
    """Journals ``entries`` random values: a long timeline."""
    total = 0.0
    for _ in range(entries):
        total += ctx.random()
    return entries
'''


@pytest.fixture
def deployed(server: ServerProcess, make_app: Callable[..., Path]) -> ServerProcess:
    server.call(lambda c: c.deploy(make_app("paging", APP), env="prod"))
    return server


def get(server: ServerProcess, path: str, **params: Any) -> httpx.Response:
    return httpx.get(server.url + path, params=params, timeout=30)


def test_runs_page_by_cursor_and_new_runs_never_shift_a_page(deployed: ServerProcess) -> None:
    first_ids = [deployed.call(lambda c, n=n: c.start_run("quick", {"n": n}, env="prod"))["id"] for n in range(5)]
    page = get(deployed, "/v1/runs", limit=2).json()
    assert [r["id"] for r in page["runs"]] == first_ids[::-1][:2]
    assert page["next_cursor"]
    # Runs started while a client pages are newer than its cursor: the later pages are unmoved.
    for n in range(3):
        deployed.call(lambda c, n=n: c.start_run("quick", {"n": 100 + n}, env="prod"))
    seen = [r["id"] for r in page["runs"]]
    cursor = page["next_cursor"]
    while cursor:
        page = get(deployed, "/v1/runs", limit=2, cursor=cursor).json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
    assert seen == first_ids[::-1]
    # The client follows the cursors itself; the CLI's --all does too.
    assert len(deployed.call(lambda c: c.runs(limit=None))) == 8
    assert len(deployed.call(lambda c: c.runs(limit=3))) == 3
    shown = CliRunner().invoke(cli, ["--url", deployed.url, "--json", "runs", "list", "--all", "--limit", "1"])
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.output)) == 8


def test_unknown_parameters_and_foreign_cursors_are_refused(deployed: ServerProcess) -> None:
    deployed.call(lambda c: c.start_run("quick", {"n": 1}, env="prod"))
    deployed.call(lambda c: c.start_run("quick", {"n": 2}, env="prod"))
    offset = get(deployed, "/v1/runs", offset=1)
    assert offset.status_code == 400
    message = offset.json()["error"]["message"]
    assert "offset" in message and "cursor" in message and "limit" in message
    assert get(deployed, "/v1/audit", page=2).status_code == 400
    assert get(deployed, "/v1/deployments", sort="label").status_code == 400
    garbage = get(deployed, "/v1/runs", cursor="not-a-cursor")
    assert garbage.status_code == 400
    assert "next_cursor" in garbage.json()["error"]["message"]
    runs_cursor = get(deployed, "/v1/runs", limit=1).json()["next_cursor"]
    foreign = get(deployed, "/v1/audit", cursor=runs_cursor)
    assert foreign.status_code == 400
    assert "another list" in foreign.json()["error"]["message"]
    assert get(deployed, "/v1/runs", limit=0).status_code == 400
    dashboard = get(deployed, "/runs", cursor="not-a-cursor")
    assert dashboard.status_code == 400 and "first page" in dashboard.text
    # Every list route answers next_cursor, null on its last page.
    for path, key in (
        ("/v1/deployments", "deployments"),
        ("/v1/envs", "environments"),
        ("/v1/envs/prod/history", "history"),
        ("/v1/audit", "audit"),
        ("/v1/tokens", "tokens"),
        ("/v1/tenants", "tenants"),
    ):
        body = get(deployed, path).json()
        assert key in body and body["next_cursor"] is None, (path, body)


def test_a_journal_of_ten_thousand_entries_pages(deployed: ServerProcess) -> None:
    size = 10_050
    run = deployed.call(lambda c: c.start_run("long_journal", {"entries": size}, env="prod", wait=120))
    assert run["status"] == "completed", run
    run_id = run["id"]
    first = get(deployed, f"/v1/runs/{run_id}/journal").json()
    assert [e["index"] for e in first["entries"]] == list(range(1000))
    second = get(deployed, f"/v1/runs/{run_id}/journal", cursor=first["next_cursor"], limit=10_000).json()
    assert second["entries"][0]["index"] == 1000
    assert second["entries"][-1]["index"] == size - 1
    assert second["next_cursor"] is None
    entries = deployed.call(lambda c: c.journal(run_id))
    assert [e["index"] for e in entries] == list(range(size))

    # runs show prints a page of the timeline and says how to read on; --json holds it all.
    runner = CliRunner()
    shown = runner.invoke(cli, ["--url", deployed.url, "runs", "show", run_id, "--from-entry", "10000"])
    assert shown.exit_code == 0, shown.output
    assert "10049" in shown.output and "9999 " not in shown.output
    shown = runner.invoke(cli, ["--url", deployed.url, "runs", "show", run_id])
    assert "--from-entry 200" in shown.output
    as_json = runner.invoke(cli, ["--url", deployed.url, "--json", "runs", "show", run_id])
    assert len(json.loads(as_json.output)["journal"]) == size

    page = httpx.get(f"{deployed.url}/runs/{run_id}", timeout=30).text
    assert "entries 0–499 of 10050" in page
    assert f'href="/runs/{run_id}?from=500"' in page
    last = httpx.get(f"{deployed.url}/runs/{run_id}", params={"from": 10_000}, timeout=30).text
    assert "entries 10000–10049 of 10050" in last
    assert 'data-entry="10049"' in last and 'data-entry="9999"' not in last
