"""The store: one dialect-neutral set of transactional operations over a backend.

Every operation is a function of a :class:`Tx` (a cursor in one transaction) written in SQL
that both SQLite and PostgreSQL accept (``?`` placeholders; the PostgreSQL backend rewrites
them). A backend decides how transactions run: SQLite funnels every write through one
writer (the event loop's batches, committed on a sync thread) that group-commits concurrent
transactions under one fsync.

The store owns the durable semantics: fenced appends, the signal inbox, timers, child runs,
environment pointers and their history, and the audit log. It never decides replay.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from typing import Any

from tether.store._attempts import AttemptOps
from tether.store._deployments import DeploymentOps
from tether.store._ops import MAX_INDEX, READY, REPLAY_COLUMNS_SQL, _now
from tether.store._retention import RetentionOps
from tether.store._runs import RunOps
from tether.store._tenants import IssuedToken, Scope, TenantOps, Token
from tether.store.backend import Backend, Tx
from tether.store.records import (
    AppendResult,
    AttemptStart,
    Deployment,
    Environment,
    Row,
    Run,
    _loads,
    entry_from_row,
    new_run_id,
)

__all__ = [
    "MAX_INDEX",
    "REPLAY_COLUMNS_SQL",
    "AppendResult",
    "AttemptStart",
    "Backend",
    "Deployment",
    "Environment",
    "IssuedToken",
    "Row",
    "Run",
    "Scope",
    "Store",
    "Token",
    "Tx",
    "entry_from_row",
    "new_run_id",
]


DEFAULT_LEASE_TIMEOUT = 30.0
"""Seconds a node's leases on its runs last unless its heartbeat renews them."""


def new_node_id() -> str:
    """A node id: the host name and a random suffix (unique per server process)."""
    host = socket.gethostname().split(".")[0][:40] or "node"
    return f"{host}-{secrets.token_hex(3)}"


class Store(DeploymentOps, RunOps, AttemptOps, TenantOps, RetentionOps):
    """Every durable operation of the runtime; see the module docstring."""

    def __init__(
        self, backend: Backend, *, node_id: str | None = None, lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    ) -> None:
        """Wrap an opened, migrated backend, as node ``node_id`` (default: a new id) whose
        leases on runs last ``lease_timeout`` seconds unless renewed."""
        if lease_timeout <= 0:
            raise ValueError(f"the lease timeout must be positive, not {lease_timeout}")
        self.backend = backend
        self._deployment_cache: dict[tuple[str, str], Deployment] = {}
        self.node_id = node_id or new_node_id()
        self.lease_timeout = lease_timeout
        self.lease_until = _now() + lease_timeout
        """Until when this node's leases hold by its last heartbeat written (its own clock)."""

    # --- nodes and leases -----------------------------------------------------------------

    async def join(self, url: str) -> None:
        """Record this node as serving the database (its heartbeat starts now)."""
        now = _now()

        def op(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO nodes (id, url, host, pid, started_at, heartbeat_at, lease_timeout) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET url = excluded.url, "
                "host = excluded.host, pid = excluded.pid, heartbeat_at = excluded.heartbeat_at, "
                "lease_timeout = excluded.lease_timeout",
                (self.node_id, url, socket.gethostname(), os.getpid(), now, now, self.lease_timeout),
            )

        await self.backend.write(op)
        self.lease_until = now + self.lease_timeout

    async def heartbeat(self, workers: dict[str, Any] | None = None) -> int:
        """Renew this node's heartbeat, and with it its leases; take the runs whose node's
        leases lapsed.

        A lease belongs to a node, not to a run: a run's ``lease_owner`` holds it while that
        node's heartbeat is younger than the node's lease timeout. Renewing touches the node's
        one row, never the rows of its runs, so it never waits on (or deadlocks with) the
        appends in flight. A run whose node stopped renewing (it died, hung, or lost the
        database) is made ready, so some node (maybe this one) gives it a new attempt that
        replays its journal. Nodes gone for ten lease timeouts are forgotten. On a store only
        one node uses (SQLite), only the heartbeat is recorded.

        Returns:
            How many runs were taken over.
        """
        now = _now()

        def op(tx: Tx) -> int:
            tx.execute(
                "UPDATE nodes SET heartbeat_at = ?, workers = ? WHERE id = ?",
                (now, None if workers is None else json.dumps(workers), self.node_id),
            )
            if not self.backend.shared:
                # One node owns a SQLite store: its leases need no renewal, nobody takes them over.
                return 0
            taken = tx.execute(
                "UPDATE runs SET ready_at = ?, lease_owner = NULL, updated_at = ? "
                "WHERE status = 'running' AND ready_at IS NULL AND lease_owner IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = runs.lease_owner "
                "AND n.heartbeat_at + n.lease_timeout >= ?)",
                (now, now, now),
            )
            tx.execute("DELETE FROM nodes WHERE heartbeat_at < ? - 10 * lease_timeout", (now,))
            if taken:
                self.backend.publish(tx, READY)
            return taken

        taken = await self.backend.write(op)
        self.lease_until = now + self.lease_timeout
        return taken

    async def leave(self) -> int:
        """This node stops: its runs in flight are made ready at once for the others (or for
        its own restart), and it leaves the list of nodes. Returns how many runs it released."""

        def op(tx: Tx) -> int:
            now = _now()
            released = tx.execute(
                "UPDATE runs SET ready_at = ?, lease_owner = NULL, updated_at = ? "
                "WHERE lease_owner = ? AND status = 'running' AND ready_at IS NULL",
                (now, now, self.node_id),
            )
            tx.execute("DELETE FROM nodes WHERE id = ?", (self.node_id,))
            if released:
                self.backend.publish(tx, READY)
            return released

        return await self.backend.write(op)

    async def nodes(self) -> list[dict[str, Any]]:
        """The nodes serving the database, oldest first: whether each is alive (its heartbeat
        within its lease timeout), the leases it holds and its workers."""
        now = _now()
        rows = await self.backend.read(
            lambda tx: tx.all(
                "SELECT n.id, n.url, n.host, n.pid, n.started_at, n.heartbeat_at, n.lease_timeout, n.workers, "
                "(SELECT COUNT(*) FROM runs r WHERE r.lease_owner = n.id AND r.status = 'running' "
                "AND r.ready_at IS NULL) AS leases FROM nodes n ORDER BY n.started_at, n.id"
            )
        )
        return [
            {
                "id": r["id"],
                "url": r["url"],
                "host": r["host"],
                "pid": r["pid"],
                "started_at": r["started_at"],
                "heartbeat_at": r["heartbeat_at"],
                "lease_timeout": r["lease_timeout"],
                "alive": r["heartbeat_at"] + r["lease_timeout"] >= now,
                "leases": r["leases"],
                "workers": None if r["workers"] is None else json.loads(r["workers"]),
                "self": r["id"] == self.node_id,
            }
            for r in rows
        ]

    async def close(self) -> None:
        """Close the backend."""
        await self.backend.close()

    async def secret(self) -> bytes:
        """The runtime's signing secret (created on first use, shared by every node)."""

        def op(tx: Tx) -> bytes:
            row = tx.one("SELECT value FROM meta WHERE key = 'secret'")
            if row is None:
                value = secrets.token_hex(32)
                tx.execute("INSERT INTO meta (key, value) VALUES ('secret', ?) ON CONFLICT DO NOTHING", (value,))
                row = tx.one("SELECT value FROM meta WHERE key = 'secret'")
                assert row is not None
            return bytes.fromhex(row["value"])

        return await self.backend.write(op)

    async def audit(
        self, tenant_id: str, limit: int = 200, *, target: str | None = None, before: int | None = None
    ) -> list[dict[str, Any]]:
        """The audit log, newest first; only the records about ``target`` (a run, deployment or
        environment) when given, only those older than id ``before`` when given."""
        where, params = (
            ("tenant_id = ?", (tenant_id,)) if target is None else ("tenant_id = ? AND target = ?", (tenant_id, target))
        )
        if before is not None:
            where, params = where + " AND id < ?", (*params, before)
        rows = await self.backend.read(
            lambda tx: tx.all(f"SELECT * FROM audit WHERE {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        )
        return [
            {
                "id": r["id"],
                "actor": r["actor"],
                "action": r["action"],
                "target": r["target"],
                "details": _loads(r["details"]),
                "created_at": r["created_at"],
            }
            for r in rows
        ]

    async def table_counts(self) -> dict[str, int]:
        """Row counts of every table (for tests asserting nothing partial was stored)."""
        tables = (
            "artifacts",
            "deployments",
            "environments",
            "env_history",
            "runs",
            "journal",
            "signals",
            "timers",
            "run_state",
            "audit",
        )

        def op(tx: Tx) -> dict[str, int]:
            out = {}
            for table in tables:
                row = tx.one(f"SELECT COUNT(*) AS n FROM {table}")
                out[table] = row["n"] if row else 0
            return out

        return await self.backend.read(op)
