"""The store: one dialect-neutral set of transactional operations over a backend.

Every operation is a function of a :class:`Tx` (a cursor in one transaction) written in SQL
that both SQLite and PostgreSQL accept (``?`` placeholders; the PostgreSQL backend rewrites
them). A backend decides how transactions run: SQLite funnels every write through one
writer thread that group-commits concurrent transactions under one fsync.

The store owns the durable semantics: fenced appends, the signal inbox, timers, child runs,
environment pointers and their history, and the audit log. It never decides replay.
"""

from __future__ import annotations

import secrets
from typing import Any

from tether.store._attempts import AttemptOps
from tether.store._deployments import DeploymentOps
from tether.store._ops import MAX_INDEX, REPLAY_COLUMNS_SQL
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


class Store(DeploymentOps, RunOps, AttemptOps, TenantOps, RetentionOps):
    """Every durable operation of the runtime; see the module docstring."""

    def __init__(self, backend: Backend) -> None:
        """Wrap an opened, migrated backend."""
        self.backend = backend
        self._deployment_cache: dict[tuple[str, str], Deployment] = {}

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
