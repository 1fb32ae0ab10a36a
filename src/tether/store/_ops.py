"""What the store's operation groups share: the backend, constants and transaction helpers."""

from __future__ import annotations

import time
from typing import Any, cast

from tether.core.appends import TransitionError, transition
from tether.core.status import RunStatus
from tether.errors import ConflictError, NotFoundError
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


READY = "ready"
"""Published when a run becomes ready for an attempt: every node's dispatcher looks."""
RUN = "run"
"""Published (with the run id) when a run changes in a way a result waiter cares about."""


def _checked(current: str, target: RunStatus) -> RunStatus:
    """``target`` if the run life cycle allows it from ``current``.

    Raises:
        ConflictError: it does not (a bug or a race: nothing of the transaction is stored).
    """
    try:
        return transition(current, target)
    except TransitionError as exc:
        raise ConflictError(str(exc)) from None


class Ops:
    """The base of the store's operation groups (deployments, runs, attempts)."""

    backend: Backend
    node_id: str
    """This node: the owner of the leases it takes."""
    lease_timeout: float
    """Seconds this node's leases last unless its heartbeat renews them."""
    lease_until: float
    """Until when this node's leases hold by its last heartbeat written (its own clock)."""

    def _locked_run(self, tx: Tx, tenant_id: str | None, run_id: str) -> Row:
        """The run's row, locked until the transaction ends where several nodes write (on
        SQLite the one writer already serializes every write transaction)."""
        if tenant_id is None:
            row = tx.one("SELECT * FROM runs WHERE id = ?" + self.backend.for_update, (run_id,))
        else:
            row = tx.one(
                "SELECT * FROM runs WHERE id = ? AND tenant_id = ?" + self.backend.for_update, (run_id, tenant_id)
            )
        if row is None:
            raise NotFoundError(f"no run {run_id!r}: see 'tether runs list'")
        return row

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
        row = tx.one(
            "INSERT INTO runs (id, tenant_id, deployment_id, workflow, env, status, input, attempt, ready_at, "
            "parent_run_id, parent_index, idempotency_key, created_at, updated_at, lease_owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
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
                self.node_id if start_attempt else None,
            ),
        )
        assert row is not None
        if not start_attempt:
            self.backend.publish(tx, READY)
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

    def _wake(self, tx: Tx, run_id: str, now: float) -> bool:
        """Make a suspended run ready; a running one notices when its attempt ends."""
        woken = (
            tx.execute(
                "UPDATE runs SET ready_at = ?, updated_at = ? WHERE id = ? AND status = 'suspended'", (now, now, run_id)
            )
            > 0
        )
        if woken:
            self.backend.publish(tx, READY)
        return woken

    def _terminate(
        self,
        tx: Tx,
        run_id: str,
        status: RunStatus,
        now: float,
        *,
        output: Any = None,
        error: Any = None,
        locked: Row | None = None,
    ) -> Row:
        """End the run (and complete its parent's entry); returns its row afterwards.

        ``locked``: the run's row as this transaction already read and locked it (with at
        least ``status``, ``parent_run_id`` and ``parent_index``), saving a second lock.
        """
        row = locked if locked is not None else self._locked_run(tx, None, run_id)
        _checked(row["status"], status)
        after = tx.one(
            "UPDATE runs SET status = ?, output = ?, error = ?, ready_at = NULL, lease_owner = NULL, updated_at = ?, "
            "completed_at = ? "
            "WHERE id = ? RETURNING *",
            (status.value, _dumps(output), None if error is None else _dumps(error), now, now, run_id),
        )
        assert after is not None
        tx.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
        self.backend.publish(tx, RUN, run_id)
        if row["parent_run_id"] is not None:
            if self.backend.shared:
                # Before its journal changes: an attempt of the parent suspending meanwhile on
                # another node then sees the completion, or its suspension is seen by _wake.
                self._locked_run(tx, None, row["parent_run_id"])
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
        return after

    @staticmethod
    def _audit(tx: Tx, tenant_id: str, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        tx.execute(
            "INSERT INTO audit (tenant_id, actor, action, target, details, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (tenant_id, actor, action, target, _dumps(details), _now()),
        )
