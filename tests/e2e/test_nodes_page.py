"""The dashboard's nodes page on two real nodes sharing one PostgreSQL: a run node b runs shows
on node a's page under b; when b is killed, a's page says b's lease lapsed and lists the run
under a, which took it over. The run list filters by node (page and API).

Real server subprocesses on a real PostgreSQL (``scripts/postgres``), on the test's own schema.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import Cluster

APP = '''
import asyncio
import os
import tether

app = tether.App("held")

@app.function
async def hold(gate: str) -> str:
    """Runs until the file ``gate`` exists: the run stays running, its lease with its node."""
    while not os.path.exists(gate):
        await asyncio.sleep(0.05)
    return "released"

@app.workflow
async def held(ctx: tether.Context, gate: str) -> str:
    """One step that waits for the test."""
    return await ctx.step(hold, gate)
'''


def _section(page: str, node: str) -> str:
    """The part of the nodes page about one node's runs."""
    found = re.search(rf'<section class="node" id="node-{node}" data-node="{node}">(.*?)</section>', page, re.S)
    assert found is not None, f"the nodes page has no section for node {node}:\n{page}"
    return found.group(1)


def _row(page: str, node: str) -> str:
    """The row of one node in the nodes table."""
    found = re.search(rf'<tr data-node="{node}"[^>]*>.*?</tr>', page, re.S)
    assert found is not None, f"the nodes page has no row for node {node}:\n{page}"
    return found.group(0)


def _leases(row: str) -> int:
    found = re.search(r'<td class="leases"[^>]*>(\d+)</td>', row)
    assert found is not None, row
    return int(found.group(1))


def test_a_run_on_node_b_shows_under_b_on_node_a_and_under_a_once_a_takes_it_over(
    cluster: Cluster, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # b alone first: the run's attempt is certainly b's when a joins.
    b = cluster.node("b", lease=2)
    cluster.deploy(b, make_app("held", APP))
    run_id: str = b.call(lambda c: c.start_run("held", {"gate": str(gate)}, env="prod"))["id"]
    assert b.wait_for(run_id, {"running"})["node"] == "b"
    a = cluster.node("a", lease=2)

    page = httpx.get(a.url + "/nodes", timeout=10)
    assert page.status_code == 200, page.text
    assert 'data-alive="this one"' in _row(page.text, "a")
    row_b = _row(page.text, "b")
    assert 'data-alive="yes"' in row_b and b.url in row_b and _leases(row_b) == 1
    under_b = _section(page.text, "b")
    assert f'<a href="/runs/{run_id}">' in under_b and ">held<" in under_b and ">v1<" in under_b
    assert run_id not in _section(page.text, "a")

    # The run list, on either node, filters by the node that runs it.
    assert [r["id"] for r in a.call(lambda c: c.runs(node="b"))] == [run_id]
    assert a.call(lambda c: c.runs(node="a")) == []
    listed = httpx.get(a.url + "/runs", params={"node": "b"}, timeout=10).text
    assert f'data-run="{run_id}"' in listed

    # b dies: a's page says b's lease lapsed, then shows the run under a, on its next attempt.
    b.kill9()
    deadline = time.monotonic() + 30
    while True:
        page = httpx.get(a.url + "/nodes", timeout=10)
        if run_id in _section(page.text, "a"):
            break
        assert time.monotonic() < deadline, f"node a never showed the run it took over:\n{page.text}"
        time.sleep(0.2)
    row_b = _row(page.text, "b")
    assert 'data-alive="no"' in row_b and "lease lapsed" in row_b and _leases(row_b) == 0
    assert run_id not in _section(page.text, "b")
    assert re.search(r'<td class="attempt">2</td>', _section(page.text, "a"))
    assert _leases(_row(page.text, "a")) == 1

    gate.touch()
    done = cluster.result(a, run_id)
    assert (done["status"], done["output"]) == ("completed", "released"), done
