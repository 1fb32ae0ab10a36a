"""Leases on PostgreSQL: a run's lease is its node's heartbeat.

Two stores on one database are two nodes. A node that stops renewing its heartbeat loses its
running runs to the next heartbeat of another node, and stops appending to them itself once
its own lease lapsed; renewing touches the node's row only, so it never waits on a run row
an append holds (the deadlock a per-run renewal had with batched appends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests._postgres import fresh_schema, postgres_url
from tests.store.conftest import TENANT, Kit, manifest
from tether.errors import FencedError
from tether.store import Store, open_store

LEASE = 0.6


@pytest.fixture
def schema() -> Iterator[str]:
    url, drop = fresh_schema(postgres_url())
    try:
        yield url
    finally:
        drop()


def two_nodes(url: str, body: Callable[[Store, Store], Awaitable[Any]]) -> Any:
    """Run ``body(a, b)`` with nodes a and b (lease timeout :data:`LEASE`) on ``url``."""

    async def main() -> Any:
        a = open_store(url, node_id="a", lease_timeout=LEASE)
        b = open_store(url, node_id="b", lease_timeout=LEASE)
        try:
            await a.join("http://a.invalid")
            await b.join("http://b.invalid")
            return await body(a, b)
        finally:
            await a.close()
            await b.close()

    return asyncio.run(main())


async def running_on(node: Store) -> tuple[str, int]:
    """A new run, claimed by ``node``: its id and attempt."""
    await node.create_deployment(
        TENANT,
        deployment_id="dep-a",
        kind="endpoint",
        manifest=manifest("order"),
        manifest_digest="m-dep-a",
        actor="alice",
        bundle=None,
        bundle_digest=None,
        url="http://worker.invalid/dep-a",
        env="prod",
    )
    run, _ = await node.create_run(TENANT, workflow="order", input={"n": 1}, env="prod")
    starts = await node.claim_ready(time.time() + 1, 10)
    assert [s.run.id for s in starts] == [run.id]
    return run.id, starts[0].run.attempt


def test_a_node_that_stops_renewing_loses_its_runs_to_another_node(schema: str) -> None:
    async def body(a: Store, b: Store) -> None:
        run_id, attempt = await running_on(a)
        assert await b.heartbeat() == 0, "a's lease is fresh: b must not take its run"
        await asyncio.sleep(LEASE * 1.3)
        assert await b.heartbeat() == 1
        with pytest.raises(FencedError):
            await a.append(run_id, attempt, [Kit.step(0)])
        starts = await b.claim_ready(time.time() + 1, 10)
        assert [(s.run.id, s.run.attempt) for s in starts] == [(run_id, attempt + 1)]
        await b.append(run_id, attempt + 1, [Kit.step(0)])
        nodes = {n["id"]: n for n in await b.nodes()}
        assert (nodes["a"]["alive"], nodes["a"]["leases"]) == (False, 0)
        assert (nodes["b"]["alive"], nodes["b"]["leases"]) == (True, 1)

    two_nodes(schema, body)


def test_a_node_stops_appending_once_its_own_lease_lapsed_and_renewing_resumes(schema: str) -> None:
    async def body(a: Store, b: Store) -> None:
        run_id, attempt = await running_on(a)
        await asyncio.sleep(LEASE * 1.3)
        # Nobody took the run yet, but another node may at any moment: a must not append.
        with pytest.raises(FencedError, match="does not hold the lease"):
            await a.append(run_id, attempt, [Kit.step(0)])
        assert await a.heartbeat() == 0
        await a.append(run_id, attempt, [Kit.step(0)])
        assert await b.heartbeat() == 0, "a renewed its lease: its run stays a's"

    two_nodes(schema, body)


def test_renewing_a_lease_never_waits_on_a_run_row_an_append_holds(schema: str) -> None:
    async def body(a: Store, b: Store) -> None:
        run_id, _ = await running_on(a)
        with psycopg.connect(schema) as holder:
            # An append of another batch holds the run's row until it commits.
            holder.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (run_id,))
            await asyncio.wait_for(a.heartbeat(), timeout=10)
            await asyncio.wait_for(b.heartbeat(), timeout=10)
            holder.rollback()

    two_nodes(schema, body)
