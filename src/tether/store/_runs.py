"""Runs: creation pinned at ingress, reads, signals, cancellation, recovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.core.journal import JournalEntry
from tether.core.routing import draw
from tether.core.status import TERMINAL, RunStatus
from tether.errors import ConflictError, NotFoundError
from tether.store._ops import Ops, _now
from tether.store.backend import Tx
from tether.store.records import (
    Deployment,
    Run,
    _dumps,
    _loads,
    _targets,
    entry_from_row,
    new_run_id,
)


class RunOps(Ops):
    """Runs: creation pinned at ingress, reads, signals, cancellation, recovery."""

    async def create_run(
        self,
        tenant_id: str,
        *,
        workflow: str,
        input: Any,
        env: str | None = None,
        deployment_ref: str | None = None,
        idempotency_key: str | None = None,
        validate: Callable[[Deployment], Any] | None = None,
        start_attempt: bool = False,
    ) -> tuple[Run, bool]:
        """Create a run pinned to ``deployment_ref`` or to what ``env`` names right now.

        The environment is resolved once, here; the run keeps that deployment for its life.
        ``validate`` (called inside the transaction with the chosen deployment) may raise to
        refuse the input; nothing is stored then. With ``start_attempt`` a new run is created
        already ``running`` its first attempt, for a caller that dispatches it at once (after a
        crash, :meth:`recover` gives it a new attempt like any other).

        Returns:
            The run and whether it was created (False: the idempotency key already named it).
        """

        def op(tx: Tx) -> tuple[Run, bool]:
            if idempotency_key is not None:
                row = tx.one(
                    "SELECT * FROM runs WHERE tenant_id = ? AND idempotency_key = ?", (tenant_id, idempotency_key)
                )
                if row is not None:
                    existing = Run.from_row(row)
                    if existing.workflow != workflow or existing.input != input:
                        raise ConflictError(
                            f"idempotency key {idempotency_key!r} already started run {existing.id} "
                            f"({existing.workflow}) with a different workflow or input: use a different key"
                        )
                    return existing, False
            run_id = new_run_id()
            if deployment_ref is not None:
                dep = self._find_deployment(tx, tenant_id, deployment_ref)
            else:
                assert env is not None
                targets = _targets(self._env_row(tx, tenant_id, env)["targets"])
                dep = self._find_deployment(tx, tenant_id, draw(targets, idempotency_key or run_id))
            if dep.removed_at is not None:
                raise ConflictError(f"deployment {dep.label} was removed and cannot start runs")
            component = dep.manifest.get("components", {}).get(workflow)
            if component is None or component.get("kind") != "workflow":
                raise NotFoundError(
                    f"deployment {dep.label} has no workflow {workflow!r}; it has: "
                    + (", ".join(dep.to_json()["workflows"]) or "none")
                )
            if validate is not None:
                validate(dep)
            run = self._insert_run(
                tx, run_id, tenant_id, dep.id, workflow, input, env, idempotency_key, None, None, start_attempt
            )
            return run, True

        return await self.backend.write(op)

    async def get_run(self, tenant_id: str, run_id: str) -> Run:
        """The run ``run_id``."""
        return Run.from_row(await self.backend.read(lambda tx: self._run_row(tx, tenant_id, run_id)))

    async def list_runs(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        workflow: str | None = None,
        deployment_id: str | None = None,
        env: str | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs, newest first, filtered; stuck runs are not hidden by the limit order."""
        where = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        for column, value in (
            ("status", status),
            ("workflow", workflow),
            ("deployment_id", deployment_id),
            ("env", env),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = (
            f"SELECT * FROM runs WHERE {' AND '.join(where)} "
            "ORDER BY CASE WHEN status = 'stuck' THEN 0 ELSE 1 END, created_at DESC LIMIT ?"
        )
        rows = await self.backend.read(lambda tx: tx.all(sql, (*params, limit)))
        return [Run.from_row(r) for r in rows]

    async def journal(self, tenant_id: str, run_id: str) -> list[JournalEntry]:
        """The run's journal, by index."""

        def op(tx: Tx) -> list[JournalEntry]:
            self._run_row(tx, tenant_id, run_id)
            return [entry_from_row(r) for r in tx.all("SELECT * FROM journal WHERE run_id = ? ORDER BY idx", (run_id,))]

        return await self.backend.read(op)

    async def run_state(self, tenant_id: str, run_id: str) -> dict[str, Any]:
        """The run's durable state (``ctx.set``)."""

        def op(tx: Tx) -> dict[str, Any]:
            self._run_row(tx, tenant_id, run_id)
            return {
                r["key"]: _loads(r["value"])
                for r in tx.all("SELECT key, value FROM run_state WHERE run_id = ? ORDER BY key", (run_id,))
            }

        return await self.backend.read(op)

    async def counts(self) -> dict[tuple[str, str], int]:
        """Runs per (deployment id, status), across tenants (for metrics)."""
        rows = await self.backend.read(
            lambda tx: tx.all("SELECT deployment_id, status, COUNT(*) AS n FROM runs GROUP BY deployment_id, status")
        )
        return {(r["deployment_id"], r["status"]): r["n"] for r in rows}

    async def signal(
        self,
        tenant_id: str,
        run_id: str,
        name: str,
        payload: Any,
        *,
        validate: Callable[[Run, Deployment], Any] | None = None,
    ) -> dict[str, Any]:
        """Deliver a signal: complete the run's oldest open wait for ``name``, or buffer it.

        Raises:
            NotFoundError: no such run.
            ConflictError: the run has ended.
        """

        def op(tx: Tx) -> dict[str, Any]:
            run = Run.from_row(self._run_row(tx, tenant_id, run_id))
            if run.status in TERMINAL:
                raise ConflictError(f"run {run_id} is {run.status.value} and takes no more signals")
            if validate is not None:
                validate(run, self._find_deployment(tx, tenant_id, run.deployment_id))
            now = _now()
            waiting = tx.one(
                "SELECT idx FROM journal WHERE run_id = ? AND kind = 'signal' AND name = ? AND completed = 0 "
                "ORDER BY idx LIMIT 1",
                (run_id, name),
            )
            consumed = None if waiting is None else waiting["idx"]
            tx.execute(
                "INSERT INTO signals (run_id, name, payload, created_at, consumed_index) VALUES (?, ?, ?, ?, ?)",
                (run_id, name, _dumps(payload), now, consumed),
            )
            woken = False
            if consumed is not None:
                self._complete_entry(tx, run_id, consumed, payload, None, now)
                woken = self._wake(tx, run_id, now)
            return {
                "run_id": run_id,
                "signal": name,
                "delivered_to_entry": consumed,
                "buffered": consumed is None,
                "woken": woken,
            }

        return await self.backend.write(op)

    async def cancel_run(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None = None) -> Run:
        """Cancel a run and its unfinished children; a running attempt is fenced off.

        Raises:
            ConflictError: the run has already ended.
        """

        def op(tx: Tx) -> Run:
            run = Run.from_row(self._run_row(tx, tenant_id, run_id))
            if run.status in TERMINAL:
                raise ConflictError(f"run {run_id} is already {run.status.value}")
            now = _now()
            self._cancel_tree(tx, run_id, now)
            self._audit(
                tx, tenant_id, actor, "run.cancel", run_id, {"reason": reason, "status_before": run.status.value}
            )
            return Run.from_row(self._run_row(tx, tenant_id, run_id))

        return await self.backend.write(op)

    def _cancel_tree(self, tx: Tx, run_id: str, now: float) -> None:
        for child in tx.all("SELECT id, status FROM runs WHERE parent_run_id = ?", (run_id,)):
            if child["status"] not in {s.value for s in TERMINAL}:
                self._cancel_tree(tx, child["id"], now)
        self._terminate(
            tx, run_id, RunStatus.CANCELLED, now, error={"type": "Cancelled", "message": "the run was cancelled"}
        )

    async def recover(self) -> int:
        """After a restart: every run whose attempt was in flight gets a new attempt now."""

        def op(tx: Tx) -> int:
            now = _now()
            return tx.execute(
                "UPDATE runs SET ready_at = ?, updated_at = ? WHERE status = 'running' AND ready_at IS NULL",
                (now, now),
            )

        return await self.backend.write(op)
