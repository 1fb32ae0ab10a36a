"""Runs: creation pinned at ingress, reads, signals, cancellation, recovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.core.journal import EntryKind, JournalEntry, canonical_json
from tether.core.paging import Key
from tether.core.routing import draw
from tether.core.status import TERMINAL, RunStatus
from tether.errors import ConflictError, NotFoundError
from tether.store._ops import CANCELLED, Ops, _now
from tether.store.backend import Tx
from tether.store.records import (
    Deployment,
    Row,
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
                    return self._start_retried(tx, row, idempotency_key, workflow, input, env, deployment_ref), False
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
            if deployment_ref is not None:
                tx.execute("UPDATE runs SET started_on_deployment = ? WHERE id = ?", (dep.id, run_id))
            return run, True

        return await self.backend.write(op)

    def _start_retried(
        self,
        tx: Tx,
        row: Row,
        key: str,
        workflow: str,
        input: Any,
        env: str | None,
        deployment_ref: str | None,
    ) -> Run:
        """The run ``key`` already started, if this request is the same start again.

        The same start means the same workflow, input and target: the same environment, or
        the same deployment (by id or label). A key reused for anything else would hand back
        a run pinned by another request, so it is refused instead.

        Raises:
            ConflictError: naming what the key started, and what to do.
            NotFoundError: ``deployment_ref`` names no deployment.
        """
        existing = Run.from_row(row)
        first_on = row["started_on_deployment"]
        if existing.env is not None:
            first = f"environment {existing.env}"
        else:
            first = (
                f"deployment {self._find_deployment(tx, existing.tenant_id, first_on or existing.deployment_id).label}"
            )
        if deployment_ref is not None:
            wanted = self._find_deployment(tx, existing.tenant_id, deployment_ref)
            asked = f"deployment {wanted.label}"
            same_target = existing.env is None and (first_on or existing.deployment_id) == wanted.id
        else:
            asked = f"environment {env}"
            same_target = existing.env == env
        if existing.workflow != workflow or canonical_json(existing.input) != canonical_json(input):
            differs = "a different workflow or input"
        elif not same_target:
            differs = f"another target ({asked})"
        else:
            return existing
        raise ConflictError(
            f"idempotency key {key!r} was first used to start run {existing.id} of workflow {existing.workflow} "
            f"on {first}; this request asks for {differs}: a key names one run, so use a new "
            "Idempotency-Key for this request"
        )

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
        node: str | None = None,
        limit: int = 100,
        after: Key | None = None,
    ) -> list[Run]:
        """Runs, stuck first, then newest first, filtered; stuck runs are not hidden by the limit.

        ``node`` keeps the runs whose attempt that node runs now (it holds their lease), as
        :attr:`Run.node` says.

        ``after`` is the :func:`run_key` of the last run of the previous page: the runs after
        it in this order (keyset pagination; runs created meanwhile are newer, so they never
        shift a later page).
        """
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
        if node is not None:
            # Spelled as the partial indexes of running runs are, so either can serve it.
            where.append("status = 'running' AND ready_at IS NULL AND lease_owner = ?")
            params.append(node)
        rank = "(CASE WHEN status = 'stuck' THEN 0 ELSE 1 END)"
        if after is not None:
            where.append(f"({rank} > ? OR ({rank} = ? AND (created_at < ? OR (created_at = ? AND id < ?))))")
            params.extend([after[0], after[0], after[1], after[1], after[2]])
        sql = f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY {rank}, created_at DESC, id DESC LIMIT ?"
        rows = await self.backend.read(lambda tx: tx.all(sql, (*params, limit)))
        return [Run.from_row(r) for r in rows]

    async def journal(
        self, tenant_id: str, run_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[JournalEntry]:
        """The run's journal, by index: the entries after index ``after``, at most ``limit``."""
        sql = "SELECT * FROM journal WHERE run_id = ? AND idx > ? ORDER BY idx"
        params: tuple[Any, ...] = (run_id, -1 if after is None else after)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)

        def op(tx: Tx) -> list[JournalEntry]:
            self._run_row(tx, tenant_id, run_id)
            return [entry_from_row(r) for r in tx.all(sql, params)]

        return await self.backend.read(op)

    async def journal_size(self, tenant_id: str, run_id: str) -> int:
        """How many entries the run's journal holds."""

        def op(tx: Tx) -> int:
            self._run_row(tx, tenant_id, run_id)
            row = tx.one("SELECT COUNT(*) AS n FROM journal WHERE run_id = ?", (run_id,))
            return 0 if row is None else int(row["n"])

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

    async def signals(
        self, tenant_id: str, run_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The signals sent to the run, oldest first (those after id ``after``, at most ``limit``):
        when each arrived, whether a wait took it, and which entry."""
        sql = (
            "SELECT id, name, payload, created_at, consumed_index, sent_by FROM signals "
            "WHERE run_id = ? AND id > ? ORDER BY id"
        )
        params: tuple[Any, ...] = (run_id, -1 if after is None else after)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)

        def op(tx: Tx) -> list[dict[str, Any]]:
            self._run_row(tx, tenant_id, run_id)
            rows = tx.all(sql, params)
            return [
                {
                    "id": r["id"],
                    "name": r["name"],
                    "payload": _loads(r["payload"]),
                    "created_at": r["created_at"],
                    "sent_by": r["sent_by"],
                    "consumed_by_entry": r["consumed_index"],
                }
                for r in rows
            ]

        return await self.backend.read(op)

    async def run_totals(self, tenant_id: str) -> dict[str, int]:
        """Every run pinned to each deployment of the tenant, whatever its status, by deployment id."""
        rows = await self.backend.read(
            lambda tx: tx.all(
                "SELECT deployment_id, COUNT(*) AS n FROM runs WHERE tenant_id = ? GROUP BY deployment_id",
                (tenant_id,),
            )
        )
        return {r["deployment_id"]: r["n"] for r in rows}

    async def counts(self) -> dict[tuple[str, str, str, str], int]:
        """Runs per (tenant, deployment id, deployment label, status), across tenants (for metrics)."""
        rows = await self.backend.read(
            lambda tx: tx.all(
                "SELECT r.tenant_id, r.deployment_id, d.label, r.status, COUNT(*) AS n FROM runs r "
                "JOIN deployments d ON d.tenant_id = r.tenant_id AND d.id = r.deployment_id "
                "GROUP BY r.tenant_id, r.deployment_id, d.label, r.status"
            )
        )
        return {(r["tenant_id"], r["deployment_id"], r["label"], r["status"]): r["n"] for r in rows}

    async def signal(
        self,
        tenant_id: str,
        run_id: str,
        name: str,
        payload: Any,
        *,
        validate: Callable[[Run, Deployment], Any] | None = None,
        idempotency_key: str | None = None,
        sent_by: str | None = None,
    ) -> dict[str, Any]:
        """Deliver a signal: complete the run's oldest open wait for ``name``, or buffer it.

        ``sent_by`` (who sent it, as the audit log names them) is kept with its arrival time.

        With ``idempotency_key`` the signal is delivered at most once per run and key: a
        retry with the same name and payload is answered ``duplicate`` (even once the run has
        ended) and delivers nothing.

        Raises:
            NotFoundError: no such run.
            ConflictError: the run has ended, or the key already delivered another signal
                or payload to this run.
        """

        def op(tx: Tx) -> dict[str, Any]:
            run = Run.from_row(self._locked_run(tx, tenant_id, run_id))
            if idempotency_key is not None:
                sent = tx.one(
                    "SELECT name, payload, consumed_index FROM signals WHERE run_id = ? AND idempotency_key = ?",
                    (run_id, idempotency_key),
                )
                if sent is not None:
                    return self._signal_retried(run_id, idempotency_key, sent, name, payload)
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
                "INSERT INTO signals (run_id, name, payload, created_at, consumed_index, idempotency_key, sent_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, _dumps(payload), now, consumed, idempotency_key, sent_by),
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
                "duplicate": False,
            }

        return await self.backend.write(op)

    @staticmethod
    def _signal_retried(run_id: str, key: str, sent: Row, name: str, payload: Any) -> dict[str, Any]:
        """The answer to a signal whose key already delivered one: the first delivery as it is
        now, if the retry is the same signal, else a refusal."""
        first = _loads(sent["payload"])
        if sent["name"] != name or canonical_json(first) != canonical_json(payload):
            raise ConflictError(
                f"idempotency key {key!r} was already used on run {run_id} for signal {sent['name']!r} "
                f"with payload {_dumps(first)[:200]}; this request sends signal {name!r} with payload "
                f"{_dumps(payload)[:200]}: a key stands for one signal, send this one with a new Idempotency-Key"
            )
        consumed = sent["consumed_index"]
        return {
            "run_id": run_id,
            "signal": name,
            "delivered_to_entry": consumed,
            "buffered": consumed is None,
            "woken": False,
            "duplicate": True,
        }

    async def cancel_run(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None = None) -> Run:
        """Cancel a run cooperatively, and its unfinished children.

        Every wait of the run (sleep, signal, child), open now or issued later, completes with
        a ``Cancelled`` error: the code sees ``RunCancelledError`` at that await and may run
        compensation before it ends; a run that ends by raising it is ``cancelled``. A stuck
        or paused run, which cannot run code, is cancelled at once.

        Raises:
            ConflictError: the run has already ended.
        """

        def op(tx: Tx) -> Run:
            run = Run.from_row(self._locked_run(tx, tenant_id, run_id))
            if run.status in TERMINAL:
                raise ConflictError(f"run {run_id} is already {run.status.value}")
            now = _now()
            if run.status in (RunStatus.STUCK, RunStatus.PAUSED):
                self._end_tree(tx, run_id, RunStatus.CANCELLED, now)
            else:
                self._request_cancel(tx, run_id, now)
            self._audit(
                tx, tenant_id, actor, "run.cancel", run_id, {"reason": reason, "status_before": run.status.value}
            )
            return Run.from_row(self._run_row(tx, tenant_id, run_id))

        return await self.backend.write(op)

    async def kill_run(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None = None) -> Run:
        """End a run and its unfinished children at once (``killed``); audited.

        Raises:
            ConflictError: the run has already ended.
        """

        def op(tx: Tx) -> Run:
            run = Run.from_row(self._locked_run(tx, tenant_id, run_id))
            if run.status in TERMINAL:
                raise ConflictError(f"run {run_id} is already {run.status.value}")
            self._end_tree(tx, run_id, RunStatus.KILLED, _now())
            self._audit(tx, tenant_id, actor, "run.kill", run_id, {"reason": reason, "status_before": run.status.value})
            return Run.from_row(self._run_row(tx, tenant_id, run_id))

        return await self.backend.write(op)

    def _request_cancel(self, tx: Tx, run_id: str, now: float) -> None:
        for child in tx.all("SELECT id, status FROM runs WHERE parent_run_id = ?", (run_id,)):
            if child["status"] not in {s.value for s in TERMINAL}:
                self._request_cancel(tx, child["id"], now)
        tx.execute("UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, run_id))
        for entry in tx.all(
            "SELECT idx, kind FROM journal WHERE run_id = ? AND completed = 0 AND kind <> 'child'", (run_id,)
        ):
            self._complete_entry(tx, run_id, entry["idx"], None, CANCELLED, now)
        row = self._run_row(tx, None, run_id)
        if row["status"] == RunStatus.SUSPENDED:
            self._wake(tx, run_id, now)
        elif row["status"] == RunStatus.PENDING and row["ready_at"] is None:
            tx.execute("UPDATE runs SET ready_at = ? WHERE id = ?", (now, run_id))

    def _end_tree(self, tx: Tx, run_id: str, status: RunStatus, now: float) -> None:
        for child in tx.all("SELECT id, status FROM runs WHERE parent_run_id = ?", (run_id,)):
            if child["status"] not in {s.value for s in TERMINAL}:
                self._end_tree(tx, child["id"], status, now)
        error = {"type": status.value.capitalize(), "message": f"the run was {status.value}"}
        self._terminate(tx, run_id, status, now, error=error)

    async def pause_run(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None = None) -> Run:
        """Stop giving a run attempts until it is resumed (an attempt in flight is fenced off).

        Raises:
            ConflictError: the run is not pending, running or suspended.
        """

        def op(tx: Tx) -> Run:
            run = Run.from_row(self._locked_run(tx, tenant_id, run_id))
            if run.status not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUSPENDED):
                raise ConflictError(
                    f"run {run_id} is {run.status.value}: only pending, running or suspended runs can be paused"
                )
            tx.execute(
                "UPDATE runs SET status = 'paused', ready_at = NULL, updated_at = ? WHERE id = ?", (_now(), run_id)
            )
            self._audit(
                tx, tenant_id, actor, "run.pause", run_id, {"reason": reason, "status_before": run.status.value}
            )
            return Run.from_row(self._run_row(tx, tenant_id, run_id))

        return await self.backend.write(op)

    async def resume_run(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None = None) -> Run:
        """Give a paused run a new attempt now (it replays and goes on where it was).

        Raises:
            ConflictError: the run is not paused.
        """

        def op(tx: Tx) -> Run:
            run = Run.from_row(self._locked_run(tx, tenant_id, run_id))
            if run.status is not RunStatus.PAUSED:
                hint = " (a stuck run goes on with 'tether runs move')" if run.status is RunStatus.STUCK else ""
                raise ConflictError(f"run {run_id} is {run.status.value}, not paused{hint}")
            now = _now()
            status = "suspended" if run.attempt > 0 else "pending"
            tx.execute(
                "UPDATE runs SET status = ?, ready_at = ?, updated_at = ? WHERE id = ?", (status, now, now, run_id)
            )
            self._audit(tx, tenant_id, actor, "run.resume", run_id, {"reason": reason})
            return Run.from_row(self._run_row(tx, tenant_id, run_id))

        return await self.backend.write(op)

    async def start_linked_run(
        self,
        tenant_id: str,
        source_id: str,
        *,
        kind: str,
        actor: str,
        reason: str | None = None,
        env: str | None = None,
        deployment_ref: str | None = None,
        from_entry: int | None = None,
    ) -> Run:
        """A new run from an old one: ``restart`` (same input, empty journal) or ``fork``
        (same input, the old journal's entries before ``from_entry``); audited on both.

        The new run is pinned to ``deployment_ref``, else to what ``env`` names now, else to
        the old run's environment (if it still exists), else to the old run's deployment.

        Raises:
            NotFoundError: the run, environment or deployment does not exist, or the
                deployment has no such workflow.
            ConflictError: the deployment was removed, or a fork's prefix holds an entry that
                has not completed.
        """

        def op(tx: Tx) -> Run:
            source = Run.from_row(self._run_row(tx, tenant_id, source_id))
            if deployment_ref is not None:
                dep = self._find_deployment(tx, tenant_id, deployment_ref)
            elif env is not None or source.env is not None:
                name = env or source.env
                assert name is not None
                row = tx.one("SELECT targets FROM environments WHERE tenant_id = ? AND name = ?", (tenant_id, name))
                if row is None and env is not None:
                    self._env_row(tx, tenant_id, env)
                target = draw(_targets(row["targets"]), new_run_id()) if row else source.deployment_id
                dep = self._find_deployment(tx, tenant_id, target)
            else:
                dep = self._find_deployment(tx, tenant_id, source.deployment_id)
            if dep.removed_at is not None:
                raise ConflictError(f"deployment {dep.label} was removed and cannot start runs")
            component = dep.manifest.get("components", {}).get(source.workflow)
            if component is None or component.get("kind") != "workflow":
                raise NotFoundError(f"deployment {dep.label} has no workflow {source.workflow!r}")
            prefix: list[Row] = []
            if from_entry is not None:
                prefix = tx.all(
                    "SELECT * FROM journal WHERE run_id = ? AND idx < ? ORDER BY idx", (source_id, from_entry)
                )
                open_entry = next((r["idx"] for r in prefix if not r["completed"]), None)
                if open_entry is not None:
                    raise ConflictError(
                        f"entry {open_entry} of run {source_id} has not completed: fork from entry {open_entry} "
                        "or earlier"
                    )
            run = self._insert_run(
                tx,
                new_run_id(),
                tenant_id,
                dep.id,
                source.workflow,
                source.input,
                source.env if env is None else env,
                None,
                None,
                None,
            )
            tx.execute("UPDATE runs SET linked_from = ?, link_kind = ? WHERE id = ?", (source_id, kind, run.id))
            for row in prefix:
                tx.execute(
                    "INSERT INTO journal (run_id, idx, kind, name, args_digest, args, completed, result, error, "
                    "manual_digest, extra, attempt, created_at, completed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.id,
                        row["idx"],
                        row["kind"],
                        row["name"],
                        row["args_digest"],
                        row["args"],
                        1,
                        row["result"],
                        row["error"],
                        row["manual_digest"],
                        row["extra"],
                        0,
                        row["created_at"],
                        row["completed_at"],
                    ),
                )
                if row["kind"] == EntryKind.STATE:
                    tx.execute(
                        "INSERT INTO run_state (run_id, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                        (run.id, row["name"], row["result"]),
                    )
            details = {"reason": reason, "new_run": run.id, "deployment": dep.id, "from_entry": from_entry}
            self._audit(tx, tenant_id, actor, f"run.{kind}", source_id, details)
            return Run.from_row(self._run_row(tx, tenant_id, run.id))

        return await self.backend.write(op)

    async def move_run(
        self,
        tenant_id: str,
        run_id: str,
        deployment_ref: str,
        *,
        actor: str,
        reason: str | None,
        forced: bool,
        check: dict[str, Any] | None,
        validate: Callable[[Run, Deployment, list[dict[str, Any]]], Any] | None = None,
    ) -> Run:
        """Re-pin a run to another deployment (the caller has checked it replays there).

        A stuck or running run gets a new attempt at once on the new deployment (an attempt in
        flight on the old one is fenced off); a suspended or paused run keeps waiting.
        ``validate`` (called in the transaction with the run, the deployment and the run's
        buffered signals as ``{"id", "name", "payload"}``, oldest first) may raise to refuse
        the move; nothing changes then.

        Raises:
            ConflictError: the run has ended, or the deployment was removed or lacks the workflow.
        """

        def op(tx: Tx) -> Run:
            run = Run.from_row(self._locked_run(tx, tenant_id, run_id))
            if run.status in TERMINAL:
                raise ConflictError(f"run {run_id} is {run.status.value}: an ended run cannot move (restart it)")
            dep = self._find_deployment(tx, tenant_id, deployment_ref)
            if dep.removed_at is not None:
                raise ConflictError(f"deployment {dep.label} was removed")
            component = dep.manifest.get("components", {}).get(run.workflow)
            if component is None or component.get("kind") != "workflow":
                raise ConflictError(f"deployment {dep.label} has no workflow {run.workflow!r}")
            if validate is not None:
                buffered = tx.all(
                    "SELECT id, name, payload FROM signals WHERE run_id = ? AND consumed_index IS NULL ORDER BY id",
                    (run_id,),
                )
                validate(
                    run, dep, [{"id": r["id"], "name": r["name"], "payload": _loads(r["payload"])} for r in buffered]
                )
            now = _now()
            go_now = run.status in (RunStatus.STUCK, RunStatus.RUNNING)
            tx.execute(
                "UPDATE runs SET deployment_id = ?, stuck_reason = NULL, status = ?, ready_at = ?, updated_at = ? "
                "WHERE id = ?",
                (dep.id, "suspended" if go_now else run.status.value, now if go_now else run.ready_at, now, run_id),
            )
            details = {
                "from": run.deployment_id,
                "to": dep.id,
                "forced": forced,
                "reason": reason,
                "status_before": run.status.value,
                "check": check,
            }
            self._audit(tx, tenant_id, actor, "run.move", run_id, details)
            return Run.from_row(self._run_row(tx, tenant_id, run_id))

        return await self.backend.write(op)

    async def recover(self) -> int:
        """After a restart: every run whose attempt was in flight gets a new attempt now.

        On a database several nodes share, only the runs no other live node holds: this
        node's own (a restart under the same ``--node-id``), and those whose lease lapsed or
        that have none; the others stay with their nodes.
        """

        def op(tx: Tx) -> int:
            now = _now()
            if not self.backend.shared:
                return tx.execute(
                    "UPDATE runs SET ready_at = ?, lease_owner = NULL, updated_at = ? "
                    "WHERE status = 'running' AND ready_at IS NULL",
                    (now, now),
                )
            return tx.execute(
                "UPDATE runs SET ready_at = ?, lease_owner = NULL, updated_at = ? "
                "WHERE status = 'running' AND ready_at IS NULL AND (lease_owner IS NULL OR lease_owner = ? "
                "OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = runs.lease_owner "
                "AND n.heartbeat_at + n.lease_timeout >= ?))",
                (now, now, self.node_id, now),
            )

        return await self.backend.write(op)


def run_key(run: Run) -> Key:
    """A run's position in :meth:`RunOps.list_runs`' order (stuck first, then newest first)."""
    return (0 if run.status is RunStatus.STUCK else 1, run.created_at, run.id)
