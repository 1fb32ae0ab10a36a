"""Several ``tether server`` nodes on one PostgreSQL: runs started on any node complete, a
signal to another node wakes a run at once, a timer fires once, a node killed with ``kill -9``
or stopped past its lease loses its runs to another node (which never forks a journal), and a
PostgreSQL restart loses nothing.

Real server subprocesses on a real PostgreSQL (``scripts/postgres``), each test on its own
schema.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._postgres import postgres_url
from tests.e2e.conftest import Cluster
from tether.errors import ApiError

ROOT = Path(__file__).resolve().parents[2]

APP = '''
import asyncio
import tether

app = tether.App("cluster")

@app.function
async def record(effects: str, tag: str, delay: float) -> str:
    """Appends a side effect to a file, then takes its time."""
    with open(effects, "a") as f:
        f.write(tag + "\\n")
    await asyncio.sleep(delay)
    return tag

@app.workflow
async def chain(ctx: tether.Context, effects: str, steps: int, delay: float) -> int:
    """A run of slow steps."""
    for i in range(steps):
        await ctx.step(record, effects, f"{ctx.info.run_id}:{i}", delay)
    return steps

@app.workflow
async def sleeper(ctx: tether.Context, effects: str, seconds: float) -> str:
    """A step, a durable timer, a step."""
    await ctx.step(record, effects, f"{ctx.info.run_id}:before", 0)
    await ctx.sleep(seconds)
    await ctx.step(record, effects, f"{ctx.info.run_id}:after", 0)
    return "woke"

@app.workflow(signals={"approval": dict})
async def approval(ctx: tether.Context, effects: str) -> dict:
    """Waits for a signal, then records it."""
    await ctx.step(record, effects, f"{ctx.info.run_id}:asked", 0)
    answer = await ctx.signal("approval")
    await ctx.step(record, effects, f"{ctx.info.run_id}:answered", 0)
    return answer
'''


def _single_journal(entries: list[dict[str, Any]]) -> None:
    """One entry per index, indexes 0..n-1: the journal never forked."""
    assert [e["index"] for e in entries] == list(range(len(entries))), entries


def test_runs_started_on_any_node_complete_and_a_signal_to_another_node_wakes_the_run(
    cluster: Cluster, make_app: Callable[..., Path]
) -> None:
    a, b = cluster.node("a", lease=10, writers=1), cluster.node("b", lease=10, writers=4)
    cluster.deploy(a, make_app("cluster", APP))
    started = [(via, cluster.start(via, "chain", steps=3, delay=0)) for via in (a, b, a, b)]
    for via, run_id in started:
        other = b if via is a else a
        done = cluster.result(other, run_id)
        assert (done["status"], done["output"]) == ("completed", 3), done
        _single_journal(cluster.journal(other, run_id))

    waiting = cluster.start(a, "approval")
    a.wait_for(waiting, {"suspended"})
    sent = time.monotonic()
    b.call(lambda c: c.signal(waiting, "approval", {"ok": True}))
    done = cluster.result(b, waiting)
    took = time.monotonic() - sent
    assert (done["status"], done["output"]) == ("completed", {"ok": True}), done
    print(f"signal to node b of a run suspended on node a: completed {took * 1000:.0f} ms later")

    nodes = a.call(lambda c: c.nodes())
    assert [(n["id"], n["alive"], n["self"]) for n in nodes] == [("a", True, True), ("b", True, False)]

    # The first token, made straight in the shared store, puts every node in token mode.
    made = subprocess.run(
        [sys.executable, "-m", "tether", "tokens", "create", "--store", cluster.url, "--scope", "operator"],
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip().splitlines()[0]
    deadline = time.monotonic() + 30
    while httpx.get(b.url + "/v1/nodes", timeout=5).status_code != 401:
        assert time.monotonic() < deadline, "node b never noticed the token"
        time.sleep(0.1)
    answer = httpx.get(b.url + "/v1/nodes", headers={"authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 200 and {n["id"] for n in answer.json()["nodes"]} == {"a", "b"}


def test_environments_keys_removals_and_escape_hatches_act_the_same_on_every_node(
    cluster: Cluster, make_app: Callable[..., Path]
) -> None:
    a, b = cluster.node("a", lease=10), cluster.node("b", lease=10)
    v1 = a.call(lambda c: c.deploy(make_app("v1", APP), env="prod", isolation="process"))
    v2 = b.call(lambda c: c.deploy(make_app("v2", APP + "\n# v2\n"), isolation="process"))
    assert v1["id"] != v2["id"]

    # An environment moved through one node is what every node resolves next.
    b.call(lambda c: c.set_env("prod", v2["label"], reason="ship v2"))
    body = {"effects": str(cluster.effects), "steps": 1, "delay": 0}
    assert a.call(lambda c: c.start_run("chain", body, env="prod"))["deployment_id"] == v2["id"]
    a.call(lambda c: c.split_env("prod", {v1["label"]: 50, v2["label"]: 50}, reason="canary"))
    [prod] = b.call(lambda c: c.envs())
    assert {t["deployment_id"]: t["weight"] for t in prod["targets"]} == {v1["id"]: 50, v2["id"]: 50}

    # An idempotency key names one run whichever node sees it, and pins it where it started.
    body = {"effects": str(cluster.effects)}
    first = a.call(lambda c: c.start_run("approval", body, env="prod", idempotency_key="order-7"))
    again = b.call(lambda c: c.start_run("approval", body, env="prod", idempotency_key="order-7"))
    assert again["id"] == first["id"] and again["deployment_id"] == first["deployment_id"]

    # A deployment with a run in flight cannot be removed through any node.
    pinned = first["deployment_id"]
    a.wait_for(first["id"], {"suspended"})
    with pytest.raises(ApiError) as refused:
        b.call(lambda c: c.remove_deployment(pinned))
    assert refused.value.http_status == 409 and first["id"] in refused.value.message

    # An escape hatch through node b reaches the run node a started, and is audited once.
    b.call(lambda c: c.cancel(first["id"], reason="customer left"))
    done = cluster.result(a, first["id"])
    assert done["status"] == "cancelled", done
    audit = a.call(lambda c: c.audit())
    assert [e["action"] for e in audit if e["target"] == first["id"]] == ["run.cancel"]


def test_a_timer_fires_once_across_three_nodes(cluster: Cluster, make_app: Callable[..., Path]) -> None:
    nodes = [cluster.node(name, lease=10) for name in ("a", "b", "c")]
    cluster.deploy(nodes[0], make_app("cluster", APP))
    runs = [cluster.start(nodes[i % 3], "sleeper", seconds=1.0) for i in range(6)]
    for i, run_id in enumerate(runs):
        done = cluster.result(nodes[(i + 1) % 3], run_id)
        assert (done["status"], done["output"]) == ("completed", "woke"), done
        assert [e["kind"] for e in cluster.journal(nodes[0], run_id)] == ["step", "sleep", "step"]
    counts = cluster.effects_count()
    for run_id in runs:
        assert (counts[f"{run_id}:before"], counts[f"{run_id}:after"]) == (1, 1), counts


def test_kill_9_a_node_mid_step_and_another_takes_its_runs_over(
    cluster: Cluster, make_app: Callable[..., Path]
) -> None:
    a, b = cluster.node("a", lease=2), cluster.node("b", lease=2)
    cluster.deploy(a, make_app("cluster", APP))
    chains = [cluster.start(a, "chain", steps=6, delay=0.3) for _ in range(3)]
    sleepers = [cluster.start(a, "sleeper", seconds=2.0) for _ in range(2)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(len(cluster.journal(b, r)) >= 2 for r in chains):
            break
        time.sleep(0.05)
    before = {r: cluster.journal(b, r) for r in chains + sleepers}
    journaled_before = {e["result"] for entries in before.values() for e in entries if e["kind"] == "step"}
    assert journaled_before, "some steps should have been journaled before the kill"
    a.kill9()
    killed = time.monotonic()

    for run_id in chains:
        done = cluster.result(b, run_id)
        assert (done["status"], done["output"]) == ("completed", 6), done
    print(f"node a killed: its 3 chains completed on node b {time.monotonic() - killed:.1f} s later (lease 2 s)")
    for run_id in sleepers:
        done = cluster.result(b, run_id)
        assert (done["status"], done["output"]) == ("completed", "woke"), done

    counts = cluster.effects_count()
    for tag in journaled_before:
        assert counts[tag] == 1, f"{tag} was journaled before the kill but executed {counts[tag]} times"
    rerun = sum(n - 1 for n in counts.values() if n > 1)
    print(f"steps executed again after the kill (in flight, not journaled): {rerun}")
    for run_id in chains:
        journal = cluster.journal(b, run_id)
        _single_journal(journal)
        assert [e["result"] for e in journal] == [f"{run_id}:{i}" for i in range(6)]
        # What node a journaled (before the snapshot, or after it until the kill) ran once:
        # node b's attempt replayed it. Only a step in flight at the kill may run again.
        by_a = {e["result"] for e in journal if e["attempt"] == 1}
        assert by_a >= {t for t in journaled_before if t.startswith(run_id)}
        assert all(counts[tag] == 1 for tag in by_a), {tag: counts[tag] for tag in by_a}
    for run_id in sleepers:
        _single_journal(cluster.journal(b, run_id))
        assert (counts[f"{run_id}:before"], counts[f"{run_id}:after"]) == (1, 1)

    listed = {n["id"]: n for n in b.call(lambda c: c.nodes())}
    assert listed["a"]["alive"] is False and listed["a"]["leases"] == 0
    assert listed["b"]["alive"] is True


def test_a_node_stopped_past_its_lease_cannot_append_when_it_comes_back(
    cluster: Cluster, make_app: Callable[..., Path]
) -> None:
    a, b = cluster.node("a", lease=2), cluster.node("b", lease=2)
    cluster.deploy(a, make_app("cluster", APP))
    run_id = cluster.start(a, "chain", steps=1, delay=3.0)
    deadline = time.monotonic() + 30
    while cluster.effects_count()[f"{run_id}:0"] == 0:
        assert time.monotonic() < deadline, "the step never started on node a"
        time.sleep(0.02)
    assert b.call(lambda c: c.run(run_id))["node"] == "a"  # any node says which node runs it
    assert a.process is not None
    a.process.send_signal(signal.SIGSTOP)
    try:
        # Node a's worker finishes the step meanwhile; its append waits for node a.
        done = cluster.result(b, run_id)
        assert (done["status"], done["output"]) == ("completed", 1), done
    finally:
        a.process.send_signal(signal.SIGCONT)
    # Node a comes back and handles what queued up: its attempt's append is refused.
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(a.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
    time.sleep(1.5)
    journal = cluster.journal(b, run_id)
    _single_journal(journal)
    assert [(e["result"], e["attempt"]) for e in journal] == [(f"{run_id}:0", 2)], journal
    assert cluster.effects_count()[f"{run_id}:0"] == 2  # node a did run it: its append was fenced
    assert cluster.result(a, run_id)["status"] == "completed"
    assert cluster.result(a, run_id)["node"] is None


def _restart_postgres() -> None:
    url = postgres_url()
    ours = subprocess.run([ROOT / "scripts" / "postgres", "url"], capture_output=True, text=True, check=False)
    if ours.stdout.strip() != url:
        pytest.fail(
            f"this test restarts PostgreSQL through scripts/postgres, but TETHER_TEST_POSTGRES_URL ({url}) is not "
            "its cluster: export TETHER_TEST_POSTGRES_URL=$(scripts/postgres start)",
            pytrace=False,
        )
    subprocess.run([ROOT / "scripts" / "postgres", "stop"], check=True, capture_output=True)
    time.sleep(1.0)
    subprocess.run([ROOT / "scripts" / "postgres", "start"], check=True, capture_output=True)


def test_postgres_restarts_mid_run_and_the_nodes_reconnect_losing_nothing(
    cluster: Cluster, make_app: Callable[..., Path]
) -> None:
    a, b = cluster.node("a", lease=10), cluster.node("b", lease=10)
    cluster.deploy(a, make_app("cluster", APP))
    sleepers = [cluster.start(a, "sleeper", seconds=2.5) for _ in range(2)]
    waiting = cluster.start(b, "approval")
    for run_id in sleepers:
        a.wait_for(run_id, {"suspended"})
    b.wait_for(waiting, {"suspended"})
    _restart_postgres()

    # The first requests may meet a node still reconnecting (503): retry the signal with its key.
    deadline = time.monotonic() + 60
    while True:
        try:
            sent = a.call(lambda c: c.signal(waiting, "approval", {"after": "restart"}, idempotency_key="k1"))
            break
        except (ApiError, httpx.TransportError) as exc:  # a node still reconnecting answers 503
            assert time.monotonic() < deadline, exc
            time.sleep(0.2)
    assert sent["run_id"] == waiting
    for run_id in sleepers:
        done = cluster.result(b, run_id)
        assert (done["status"], done["output"]) == ("completed", "woke"), done
    done = cluster.result(a, waiting)
    assert (done["status"], done["output"]) == ("completed", {"after": "restart"}), done
    counts = cluster.effects_count()
    for run_id in sleepers:
        assert (counts[f"{run_id}:before"], counts[f"{run_id}:after"]) == (1, 1), counts
    assert (counts[f"{waiting}:asked"], counts[f"{waiting}:answered"]) == (1, 1), counts
    for run_id in [*sleepers, waiting]:
        _single_journal(cluster.journal(a, run_id))
    assert os.environ.get("TETHER_TEST_POSTGRES_URL")
