"""What the store's operation groups share: the backend, constants and transaction helpers."""

from __future__ import annotations

import time
from typing import Any, cast

from tether.core.status import RunStatus
from tether.errors import NotFoundError
from tether.protocol import ErrorInfo
from tether.store.backend import Backend, Tx
from tether.store.records import (
    Deployment,
    Row,
    Run,
    _dumps,
)

MAX_INDEX = 10_000_000
"""Highest journal index an append may use."""

REPLAY_COLUMNS_SQL = (
    "SELECT idx, kind, name, args_digest, completed, result, error, manual_digest, attempt "
    "FROM journal WHERE run_id = ? ORDER BY idx"
)
"""What an attempt needs of its journal: identity and outcome, not arguments or timestamps."""


CANCELLED: ErrorInfo = {"type": "Cancelled", "message": "the run was cancelled"}
"""What the waits of a cancelled run complete with."""


def _now() -> float:
    return time.time()


class Ops:
    """The base of the store's operation groups (deployments, runs, attempts)."""

    backend: Backend

    _deployment_cache: dict[tuple[str, str], Deployment]
    """Parsed deployments by ``(tenant, id)``: a deployment is immutable but for its
    ``removed_at``, and parsing its manifest, code and environment on every run start cost
    more than the rest of the start."""

    def _find_deployment(self, tx: Tx, tenant_id: str, ref: str) -> Deployment:
        row = tx.one(
            "SELECT id, label, removed_at FROM deployments WHERE tenant_id = ? AND (id = ? OR label = ?)",
            (tenant_id, ref, ref),
        )
        if row is None:
            raise NotFoundError(f"no deployment {ref!r}: see 'tether deployments list'")
        key = (tenant_id, row["id"])
        cached = self._deployment_cache.get(key)
        if cached is not None and (cached.label, cached.removed_at) == (row["label"], row["removed_at"]):
            return cached
        full = tx.one("SELECT * FROM deployments WHERE tenant_id = ? AND id = ?", key)
        assert full is not None
        found = Deployment.from_row(full)
        if len(self._deployment_cache) >= 1024:
            self._deployment_cache.clear()
        self._deployment_cache[key] = found
        return found

    @staticmethod
    def _env_row(tx: Tx, tenant_id: str, name: str) -> Row:
        row = tx.one("SELECT * FROM environments WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        if row is None:
            raise NotFoundError(f"no environment {name!r}: create it with 'tether env set {name} DEPLOYMENT'")
        return row

    def _insert_run(
        self,
        tx: Tx,
        run_id: str,
        tenant_id: str,
        deployment_id: str,
        workflow: str,
        input: Any,
        env: str | None,
        idempotency_key: str | None,
        parent_run_id: str | None,
        parent_index: int | None,
        start_attempt: bool = False,
    ) -> Run:
        now = _now()
        tx.execute(
            "INSERT INTO runs (id, tenant_id, deployment_id, workflow, env, status, input, attempt, ready_at, "
            "parent_run_id, parent_index, idempotency_key, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                tenant_id,
                deployment_id,
                workflow,
                env,
                "running" if start_attempt else "pending",
                _dumps(input),
                1 if start_attempt else 0,
                None if start_attempt else now,
                parent_run_id,
                parent_index,
                idempotency_key,
                now,
                now,
            ),
        )
        row = tx.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        assert row is not None
        return Run.from_row(row)

    @staticmethod
    def _run_row(tx: Tx, tenant_id: str | None, run_id: str) -> Row:
        if tenant_id is None:
            row = tx.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        else:
            row = tx.one("SELECT * FROM runs WHERE id = ? AND tenant_id = ?", (run_id, tenant_id))
        if row is None:
            pruned = tx.one("SELECT pruned_at FROM pruned_runs WHERE id = ? AND tenant_id = ?", (run_id, tenant_id))
            if pruned is not None:
                raise NotFoundError(
                    f"run {run_id!r} was pruned by the server's retention (--retention) after it ended: its journal "
                    "is gone; the audit log keeps what operators did to it"
                )
            raise NotFoundError(f"no run {run_id!r}: see 'tether runs list'")
        return row

    @staticmethod
    def _complete_entry(tx: Tx, run_id: str, index: int, result: Any, error: ErrorInfo | None, now: float) -> bool:
        changed = tx.execute(
            "UPDATE journal SET completed = 1, result = ?, error = ?, completed_at = ? "
            "WHERE run_id = ? AND idx = ? AND completed = 0",
            (
                None if error is not None else _dumps(result),
                None if error is None else _dumps(error),
                now,
                run_id,
                index,
            ),
        )
        tx.execute("DELETE FROM timers WHERE run_id = ? AND idx = ?", (run_id, index))
        return changed > 0

    @staticmethod
    def _wake(tx: Tx, run_id: str, now: float) -> bool:
        """Make a suspended run ready; a running one notices when its attempt ends."""
        return (
            tx.execute(
                "UPDATE runs SET ready_at = ?, updated_at = ? WHERE id = ? AND status = 'suspended'", (now, now, run_id)
            )
            > 0
        )

    def _terminate(
        self, tx: Tx, run_id: str, status: RunStatus, now: float, *, output: Any = None, error: Any = None
    ) -> None:
        tx.execute(
            "UPDATE runs SET status = ?, output = ?, error = ?, ready_at = NULL, updated_at = ?, completed_at = ? "
            "WHERE id = ?",
            (status.value, _dumps(output), None if error is None else _dumps(error), now, now, run_id),
        )
        tx.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
        row = self._run_row(tx, None, run_id)
        if row["parent_run_id"] is not None:
            if status is RunStatus.COMPLETED:
                done = self._complete_entry(tx, row["parent_run_id"], row["parent_index"], output, None, now)
            else:
                info: ErrorInfo = cast(ErrorInfo | None, error) or {
                    "type": status.value.capitalize(),
                    "message": f"child run {run_id} was {status.value}",
                }
                done = self._complete_entry(tx, row["parent_run_id"], row["parent_index"], None, info, now)
            if done:
                self._wake(tx, row["parent_run_id"], now)

    @staticmethod
    def _audit(tx: Tx, tenant_id: str, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        tx.execute(
            "INSERT INTO audit (tenant_id, actor, action, target, details, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (tenant_id, actor, action, target, _dumps(details), _now()),
        )
