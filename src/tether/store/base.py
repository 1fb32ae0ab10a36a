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
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

from tether.core.journal import EntryKind, JournalEntry
from tether.core.routing import Target, draw
from tether.core.status import IN_FLIGHT, TERMINAL, RunStatus
from tether.errors import ConflictError, FencedError, NotFoundError
from tether.protocol import Completion, ErrorInfo, NewEntry
from tether.store.records import (
    AppendResult,
    AttemptStart,
    Deployment,
    Environment,
    Row,
    Run,
    _dumps,
    _loads,
    _targets,
    _targets_json,
    entry_from_row,
    new_run_id,
)

__all__ = [
    "AppendResult",
    "AttemptStart",
    "Backend",
    "Deployment",
    "Environment",
    "Row",
    "Run",
    "Store",
    "Tx",
    "entry_from_row",
    "new_run_id",
]

T = TypeVar("T")

MAX_INDEX = 10_000_000

REPLAY_COLUMNS_SQL = (
    "SELECT idx, kind, name, args_digest, completed, result, error, manual_digest, attempt "
    "FROM journal WHERE run_id = ? ORDER BY idx"
)
"""What an attempt needs of its journal: identity and outcome, not arguments or timestamps."""
"""Highest journal index an append may use."""


class Tx(Protocol):
    """A cursor inside one transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        ...


class Backend(ABC):
    """How transactions are run against one database."""

    @abstractmethod
    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a write transaction; its effects are durable when this returns.

        If ``fn`` raises, none of its effects persist and the exception propagates.
        """

    @abstractmethod
    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a consistent snapshot."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release connections."""


def _now() -> float:
    return time.time()


class Store:
    """Every durable operation of the runtime; see the module docstring."""

    def __init__(self, backend: Backend) -> None:
        """Wrap an opened, migrated backend."""
        self.backend = backend

    async def close(self) -> None:
        """Close the backend."""
        await self.backend.close()

    # --- meta -------------------------------------------------------------------------

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

    # --- deployments and artifacts ------------------------------------------------------

    async def get_artifact(self, digest: str) -> bytes | None:
        """The stored bundle bytes, or None once garbage-collected."""
        row = await self.backend.read(lambda tx: tx.one("SELECT data FROM artifacts WHERE digest = ?", (digest,)))
        return None if row is None or row["data"] is None else bytes(row["data"])

    async def create_deployment(
        self,
        tenant_id: str,
        *,
        deployment_id: str,
        kind: str,
        manifest: dict[str, Any],
        manifest_digest: str,
        actor: str,
        app_ref: str | None = None,
        bundle: bytes | None = None,
        bundle_digest: str | None = None,
        url: str | None = None,
        env: str | None = None,
    ) -> tuple[Deployment, bool]:
        """Record a deployment (idempotently) and, in the same transaction, point ``env`` at it.

        Returns:
            The deployment and whether it was newly created (False: identical content was
            deployed before, and the existing deployment and label are returned).
        """

        def op(tx: Tx) -> tuple[Deployment, bool]:
            now = _now()
            row = tx.one("SELECT * FROM deployments WHERE tenant_id = ? AND id = ?", (tenant_id, deployment_id))
            created = row is None
            if row is not None and row["removed_at"] is not None:
                tx.execute(
                    "UPDATE deployments SET removed_at = NULL WHERE tenant_id = ? AND id = ?",
                    (tenant_id, deployment_id),
                )
            if bundle is not None and bundle_digest is not None:
                tx.execute(
                    "INSERT INTO artifacts (digest, size, data, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (digest) DO UPDATE SET data = excluded.data",
                    (bundle_digest, len(bundle), bundle, now),
                )
            if created:
                seq_row = tx.one(
                    "SELECT COALESCE(MAX(seq), 0) AS seq FROM deployments WHERE tenant_id = ?", (tenant_id,)
                )
                seq = (seq_row["seq"] if seq_row else 0) + 1
                tx.execute(
                    "INSERT INTO deployments (tenant_id, id, label, seq, kind, app_ref, url, bundle_digest, "
                    "manifest_digest, manifest, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        tenant_id,
                        deployment_id,
                        f"v{seq}",
                        seq,
                        kind,
                        app_ref,
                        url,
                        bundle_digest,
                        manifest_digest,
                        _dumps(manifest),
                        now,
                        actor,
                    ),
                )
                self._audit(
                    tx, tenant_id, actor, "deployment.create", deployment_id, {"label": f"v{seq}", "kind": kind}
                )
            if env is not None:
                self._set_env(tx, tenant_id, env, [Target(deployment_id, 100)], "deploy", actor, None)
            found = tx.one("SELECT * FROM deployments WHERE tenant_id = ? AND id = ?", (tenant_id, deployment_id))
            assert found is not None
            return Deployment.from_row(found), created

        return await self.backend.write(op)

    @staticmethod
    def _find_deployment(tx: Tx, tenant_id: str, ref: str) -> Deployment:
        row = tx.one("SELECT * FROM deployments WHERE tenant_id = ? AND (id = ? OR label = ?)", (tenant_id, ref, ref))
        if row is None:
            raise NotFoundError(f"no deployment {ref!r}: see 'tether deployments list'")
        return Deployment.from_row(row)

    async def get_deployment(self, tenant_id: str, ref: str) -> Deployment:
        """The deployment with id or label ``ref``.

        Raises:
            NotFoundError: no such deployment in the tenant.
        """
        return await self.backend.read(lambda tx: self._find_deployment(tx, tenant_id, ref))

    async def list_deployments(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every deployment with its status, environments and runs in flight."""

        def op(tx: Tx) -> list[dict[str, Any]]:
            deployments = [
                Deployment.from_row(r)
                for r in tx.all("SELECT * FROM deployments WHERE tenant_id = ? ORDER BY seq", (tenant_id,))
            ]
            holders = self._holders(tx, tenant_id)
            out = []
            for dep in deployments:
                envs, runs = holders.get(dep.id, ([], {}))
                item = dep.to_json()
                item.update(self._lifecycle(dep, envs, runs))
                out.append(item)
            return out

        return await self.backend.read(op)

    async def describe_deployment(self, tenant_id: str, ref: str) -> dict[str, Any]:
        """One deployment with its manifest, status, environments and runs in flight."""

        def op(tx: Tx) -> dict[str, Any]:
            dep = self._find_deployment(tx, tenant_id, ref)
            envs, runs = self._holders(tx, tenant_id).get(dep.id, ([], {}))
            item = dep.to_json(with_manifest=True)
            item.update(self._lifecycle(dep, envs, runs))
            return item

        return await self.backend.read(op)

    @staticmethod
    def _holders(tx: Tx, tenant_id: str) -> dict[str, tuple[list[str], dict[str, int]]]:
        holders: dict[str, tuple[list[str], dict[str, int]]] = {}
        for row in tx.all("SELECT name, targets FROM environments WHERE tenant_id = ? ORDER BY name", (tenant_id,)):
            for target in _targets(row["targets"]):
                holders.setdefault(target.deployment_id, ([], {}))[0].append(row["name"])
        in_flight = tuple(s.value for s in IN_FLIGHT)
        marks = ", ".join("?" for _ in in_flight)
        for row in tx.all(
            f"SELECT deployment_id, status, COUNT(*) AS n FROM runs WHERE tenant_id = ? AND status IN ({marks}) "
            "GROUP BY deployment_id, status",
            (tenant_id, *in_flight),
        ):
            holders.setdefault(row["deployment_id"], ([], {}))[1][row["status"]] = row["n"]
        return holders

    @staticmethod
    def _lifecycle(dep: Deployment, envs: list[str], runs: dict[str, int]) -> dict[str, Any]:
        in_flight = sum(runs.values())
        if dep.removed_at is not None:
            status = "removed"
        elif envs:
            status = "active"
        elif in_flight:
            status = "draining"
        else:
            status = "drained"
        return {"status": status, "environments": envs, "in_flight": in_flight, "runs_by_status": runs}

    async def remove_deployment(self, tenant_id: str, ref: str, actor: str) -> Deployment:
        """Retire a drained deployment: keep its record, drop its artifact.

        Raises:
            ConflictError: environments point at it or runs are pinned to it.
        """

        def op(tx: Tx) -> Deployment:
            dep = self._find_deployment(tx, tenant_id, ref)
            envs, runs = self._holders(tx, tenant_id).get(dep.id, ([], {}))
            if envs or runs:
                run_ids = [
                    r["id"]
                    for r in tx.all(
                        "SELECT id FROM runs WHERE tenant_id = ? AND deployment_id = ? AND status IN "
                        f"({', '.join('?' for _ in IN_FLIGHT)}) ORDER BY created_at LIMIT 10",
                        (tenant_id, dep.id, *(s.value for s in IN_FLIGHT)),
                    )
                ]
                held = []
                if envs:
                    held.append("environments " + ", ".join(envs))
                if runs:
                    held.append(f"{sum(runs.values())} runs in flight ({', '.join(run_ids)})")
                raise ConflictError(
                    f"deployment {dep.label} is not drained: held by {'; '.join(held)}. "
                    "Point the environments elsewhere and let the runs finish (or cancel them) first"
                )
            if dep.removed_at is not None:
                return dep
            now = _now()
            tx.execute("UPDATE deployments SET removed_at = ? WHERE tenant_id = ? AND id = ?", (now, tenant_id, dep.id))
            if dep.bundle_digest is not None:
                still_used = tx.one(
                    "SELECT 1 AS x FROM deployments WHERE bundle_digest = ? AND removed_at IS NULL",
                    (dep.bundle_digest,),
                )
                if still_used is None:
                    tx.execute("UPDATE artifacts SET data = NULL WHERE digest = ?", (dep.bundle_digest,))
            self._audit(tx, tenant_id, actor, "deployment.remove", dep.id, {"label": dep.label})
            return self._find_deployment(tx, tenant_id, dep.id)

        return await self.backend.write(op)

    # --- environments -----------------------------------------------------------------

    def _set_env(
        self, tx: Tx, tenant_id: str, name: str, targets: list[Target], action: str, actor: str, reason: str | None
    ) -> Environment:
        now = _now()
        row = tx.one("SELECT targets FROM environments WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        previous = row["targets"] if row else None
        new = _targets_json(targets)
        if previous == new:
            return Environment(name, targets, now)
        if row is None:
            tx.execute(
                "INSERT INTO environments (tenant_id, name, targets, updated_at) VALUES (?, ?, ?, ?)",
                (tenant_id, name, new, now),
            )
        else:
            tx.execute(
                "UPDATE environments SET targets = ?, updated_at = ? WHERE tenant_id = ? AND name = ?",
                (new, now, tenant_id, name),
            )
        tx.execute(
            "INSERT INTO env_history (tenant_id, name, targets, previous, action, actor, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, name, new, previous, action, actor, reason, now),
        )
        self._audit(tx, tenant_id, actor, f"env.{action}", name, {"targets": _loads(new), "previous": _loads(previous)})
        return Environment(name, targets, now)

    async def set_env(
        self, tenant_id: str, name: str, targets: list[Target], *, actor: str, reason: str | None = None
    ) -> Environment:
        """Point environment ``name`` at ``targets`` (deployment ids), recording history.

        Raises:
            NotFoundError: a target deployment does not exist.
            ConflictError: a target deployment was removed.
        """

        def op(tx: Tx) -> Environment:
            for target in targets:
                dep = self._find_deployment(tx, tenant_id, target.deployment_id)
                if dep.removed_at is not None:
                    raise ConflictError(f"deployment {dep.label} was removed: deploy its content again to use it")
            return self._set_env(tx, tenant_id, name, targets, "set", actor, reason)

        return await self.backend.write(op)

    async def rollback_env(self, tenant_id: str, name: str, *, actor: str, reason: str | None = None) -> Environment:
        """Undo the latest change of ``name`` that is not undone yet.

        Raises:
            NotFoundError: no such environment.
            ConflictError: nothing earlier to roll back to.
        """

        def op(tx: Tx) -> Environment:
            self._env_row(tx, tenant_id, name)
            last = tx.one(
                "SELECT id, previous FROM env_history WHERE tenant_id = ? AND name = ? AND action <> 'rollback' "
                "AND undone_by IS NULL ORDER BY id DESC LIMIT 1",
                (tenant_id, name),
            )
            if last is None or last["previous"] is None:
                raise ConflictError(
                    f"environment {name} has no earlier pointer to roll back to: use 'tether env set {name} DEPLOYMENT'"
                )
            env = self._set_env(tx, tenant_id, name, _targets(last["previous"]), "rollback", actor, reason)
            undo = tx.one("SELECT MAX(id) AS id FROM env_history WHERE tenant_id = ? AND name = ?", (tenant_id, name))
            assert undo is not None
            tx.execute("UPDATE env_history SET undone_by = ? WHERE id = ?", (undo["id"], last["id"]))
            return env

        return await self.backend.write(op)

    @staticmethod
    def _env_row(tx: Tx, tenant_id: str, name: str) -> Row:
        row = tx.one("SELECT * FROM environments WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        if row is None:
            raise NotFoundError(f"no environment {name!r}: create it with 'tether env set {name} DEPLOYMENT'")
        return row

    async def get_env(self, tenant_id: str, name: str) -> Environment:
        """The environment ``name``."""
        row = await self.backend.read(lambda tx: self._env_row(tx, tenant_id, name))
        return Environment(row["name"], _targets(row["targets"]), row["updated_at"])

    async def list_envs(self, tenant_id: str) -> list[Environment]:
        """Every environment of the tenant."""
        rows = await self.backend.read(
            lambda tx: tx.all("SELECT * FROM environments WHERE tenant_id = ? ORDER BY name", (tenant_id,))
        )
        return [Environment(r["name"], _targets(r["targets"]), r["updated_at"]) for r in rows]

    async def env_history(self, tenant_id: str, name: str) -> list[dict[str, Any]]:
        """Every change of ``name``, newest first."""

        def op(tx: Tx) -> list[Row]:
            self._env_row(tx, tenant_id, name)
            return tx.all(
                "SELECT * FROM env_history WHERE tenant_id = ? AND name = ? ORDER BY id DESC", (tenant_id, name)
            )

        rows = await self.backend.read(op)
        return [
            {
                "id": r["id"],
                "action": r["action"],
                "targets": _loads(r["targets"]),
                "previous": _loads(r["previous"]),
                "actor": r["actor"],
                "reason": r["reason"],
                "undone": r["undone_by"] is not None,
                "created_at": r["created_at"],
            }
            for r in rows
        ]

    # --- runs -------------------------------------------------------------------------

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
            raise NotFoundError(f"no run {run_id!r}: see 'tether runs list'")
        return row

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

    # --- attempts ---------------------------------------------------------------------

    async def claim_ready(self, now: float, limit: int) -> list[AttemptStart]:
        """Start an attempt for up to ``limit`` runs whose ``ready_at`` has come.

        Each claimed run becomes ``running`` with its attempt number incremented; the returned
        journal is the one that attempt replays. The journals are read after the claim, on a
        snapshot, so that a long journal never holds up the writer: an entry completed in
        between is seen by the attempt as still waiting, and the attempt's suspension then
        finds it completed and starts the next attempt at once.
        """

        def claim(tx: Tx) -> list[tuple[Run, Deployment]]:
            ready = tx.all(
                "SELECT id FROM runs WHERE ready_at IS NOT NULL AND ready_at <= ? ORDER BY ready_at LIMIT ?",
                (now, limit),
            )
            claimed = []
            deployments: dict[tuple[str, str], Deployment] = {}
            for row in ready:
                tx.execute(
                    "UPDATE runs SET status = 'running', attempt = attempt + 1, ready_at = NULL, updated_at = ? "
                    "WHERE id = ?",
                    (_now(), row["id"]),
                )
                run = Run.from_row(self._run_row(tx, None, row["id"]))
                key = (run.tenant_id, run.deployment_id)
                if key not in deployments:
                    deployments[key] = self._find_deployment(tx, *key)
                claimed.append((run, deployments[key]))
            return claimed

        claimed = await self.backend.write(claim)
        if not claimed:
            return []

        def journals(tx: Tx) -> list[AttemptStart]:
            return [AttemptStart(run, dep, tx.all(REPLAY_COLUMNS_SQL, (run.id,))) for run, dep in claimed]

        return await self.backend.read(journals)

    async def next_due(self) -> tuple[float | None, float | None]:
        """The earliest ``ready_at`` of a run and the earliest timer, if any (one read)."""

        def op(tx: Tx) -> tuple[float | None, float | None]:
            row = tx.one(
                "SELECT (SELECT MIN(ready_at) FROM runs WHERE ready_at IS NOT NULL) AS ready, "
                "(SELECT MIN(fire_at) FROM timers) AS timer"
            )
            assert row is not None
            return row["ready"], row["timer"]

        return await self.backend.read(op)

    async def deployment_by_id(self, tenant_id: str, deployment_id: str) -> Deployment:
        """The deployment with this exact id."""
        return await self.backend.read(lambda tx: self._find_deployment(tx, tenant_id, deployment_id))

    def _check_attempt(self, tx: Tx, run_id: str, attempt: int) -> Row:
        row = tx.one(
            "SELECT id, tenant_id, deployment_id, env, attempt, status, ready_at FROM runs WHERE id = ?", (run_id,)
        )
        if row is None:
            raise FencedError(f"no run {run_id}")
        # ready_at is set once an attempt has ended (retry, woken, recovered): it is stale then.
        if row["attempt"] != attempt or row["status"] != RunStatus.RUNNING or row["ready_at"] is not None:
            raise FencedError(
                f"run {run_id} is {row['status']} at attempt {row['attempt']}; attempt {attempt} may not append"
            )
        return row

    async def append(self, run_id: str, attempt: int, entries: list[NewEntry]) -> AppendResult:
        """Append entries from ``attempt`` atomically (fenced); complete what can be completed.

        An entry at an index that already holds the same command is acknowledged; a different
        one is refused. Waiting entries are completed at once when possible (a buffered
        signal, a zero sleep); otherwise a timer is set or a child run created.

        Raises:
            FencedError: the attempt is not the run's current one, or an entry contradicts
                the journal. Nothing of the batch is stored then.
        """

        return await self.backend.write(lambda tx: self._append_tx(tx, run_id, attempt, entries))

    async def append_many(self, items: list[tuple[str, int, list[NewEntry]]]) -> list[AppendResult | FencedError]:
        """Several attempts' appends in one transaction; each is all-or-nothing on its own.

        Returns:
            Per item, its :class:`AppendResult`, or the :class:`FencedError` that refused it
            (nothing of a refused item is stored; the others are).
        """

        def op(tx: Tx) -> list[AppendResult | FencedError]:
            results: list[AppendResult | FencedError] = []
            for run_id, attempt, entries in items:
                tx.execute("SAVEPOINT item")
                try:
                    results.append(self._append_tx(tx, run_id, attempt, entries))
                except FencedError as exc:
                    tx.execute("ROLLBACK TO item")
                    results.append(exc)
                tx.execute("RELEASE item")
            return results

        return await self.backend.write(op)

    def _append_tx(self, tx: Tx, run_id: str, attempt: int, entries: list[NewEntry]) -> AppendResult:
        run = self._check_attempt(tx, run_id, attempt)
        now = _now()
        result = AppendResult()
        for entry in entries:
            index = entry["index"]
            if not 0 <= index < MAX_INDEX:
                raise FencedError(f"entry index {index} is out of range")
            completed = bool(entry["completed"])
            error = entry.get("error")
            extra: dict[str, Any] = {}
            kind = entry["kind"]
            if kind == EntryKind.CHILD and not completed:
                extra["child_run_id"] = f"{run_id}.{index}"
            inserted = tx.execute(
                "INSERT INTO journal (run_id, idx, kind, name, args_digest, args, completed, result, error, "
                "manual_digest, extra, attempt, created_at, completed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, idx) DO NOTHING",
                (
                    run_id,
                    index,
                    kind,
                    entry["name"],
                    entry["args_digest"],
                    None if entry.get("args") is None else _dumps(entry.get("args")),
                    1 if completed else 0,
                    _dumps(entry.get("result")) if completed and error is None else None,
                    None if error is None else _dumps(error),
                    entry.get("manual_digest"),
                    _dumps(extra) if extra else None,
                    attempt,
                    now,
                    now if completed else None,
                ),
            )
            if not inserted:
                # The index is taken: an identical duplicate is acknowledged, anything else refused.
                existing = tx.one(
                    "SELECT kind, name, args_digest FROM journal WHERE run_id = ? AND idx = ?", (run_id, index)
                )
                assert existing is not None
                if (existing["kind"], existing["name"], existing["args_digest"]) != (
                    kind,
                    entry["name"],
                    entry["args_digest"],
                ):
                    raise FencedError(
                        f"entry {index} already holds {existing['kind']} {existing['name']}; "
                        f"refusing {kind} {entry['name']}"
                    )
                continue
            if kind == EntryKind.STATE:
                tx.execute(
                    "INSERT INTO run_state (run_id, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                    (run_id, entry["name"], _dumps(entry.get("result"))),
                )
            if not completed:
                completion = self._start_waiting(tx, run, index, kind, entry["name"], entry.get("args"), now)
                if completion is not None:
                    result.completions.append(completion)
                if kind == EntryKind.CHILD:
                    result.runs_made_ready += 1
        return result

    def _start_waiting(
        self, tx: Tx, run: Row, index: int, kind: str, name: str, args: Any, now: float
    ) -> Completion | None:
        args = args or {}
        if kind == EntryKind.SLEEP:
            seconds = float(args.get("seconds", 0))
            if seconds <= 0:
                self._complete_entry(tx, run["id"], index, None, None, now)
                return {"index": index, "result": None, "error": None}
            tx.execute("INSERT INTO timers (run_id, idx, fire_at) VALUES (?, ?, ?)", (run["id"], index, now + seconds))
            return None
        if kind == EntryKind.SIGNAL:
            buffered = tx.one(
                "SELECT id, payload FROM signals WHERE run_id = ? AND name = ? AND consumed_index IS NULL "
                "ORDER BY id LIMIT 1",
                (run["id"], name),
            )
            if buffered is not None:
                tx.execute("UPDATE signals SET consumed_index = ? WHERE id = ?", (index, buffered["id"]))
                payload = _loads(buffered["payload"])
                self._complete_entry(tx, run["id"], index, payload, None, now)
                return {"index": index, "result": payload, "error": None}
            if args.get("timeout") is not None:
                tx.execute(
                    "INSERT INTO timers (run_id, idx, fire_at) VALUES (?, ?, ?)",
                    (run["id"], index, now + float(args["timeout"])),
                )
            return None
        if kind == EntryKind.CHILD:
            self._insert_run(
                tx,
                f"{run['id']}.{index}",
                run["tenant_id"],
                run["deployment_id"],
                str(args.get("workflow", name)),
                args.get("input") or {},
                run["env"],
                None,
                run["id"],
                index,
            )
            return None
        raise FencedError(f"entry {index}: {kind} entries cannot wait")

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

    async def finish_attempt(self, run_id: str, attempt: int, outcome: Mapping[str, Any]) -> Run | None:
        """Record how an attempt ended (an outcome of the protocol, or ``retry``).

        A stale attempt (the run moved on, was cancelled or killed) is ignored.

        Returns:
            The run after the change, or None when the outcome was ignored.
        """

        def op(tx: Tx) -> Run | None:
            try:
                self._check_attempt(tx, run_id, attempt)
            except FencedError:
                return None
            now = _now()
            kind = outcome["outcome"]
            if kind == "completed":
                self._terminate(tx, run_id, RunStatus.COMPLETED, now, output=outcome.get("output"))
            elif kind == "failed":
                self._terminate(tx, run_id, RunStatus.FAILED, now, error=outcome.get("error"))
            elif kind == "mismatch":
                tx.execute(
                    "UPDATE runs SET status = 'stuck', stuck_reason = ?, ready_at = NULL, updated_at = ? WHERE id = ?",
                    (_dumps(outcome.get("mismatch")), now, run_id),
                )
            elif kind == "suspended":
                waiting = [int(i) for i in outcome.get("waiting_on", [])]
                marks = ", ".join("?" for _ in waiting) or "NULL"
                woken = tx.one(
                    f"SELECT 1 AS x FROM journal WHERE run_id = ? AND idx IN ({marks}) AND completed = 1 LIMIT 1",
                    (run_id, *waiting),
                )
                if woken is not None or not waiting:
                    tx.execute("UPDATE runs SET ready_at = ?, updated_at = ? WHERE id = ?", (now, now, run_id))
                else:
                    tx.execute(
                        "UPDATE runs SET status = 'suspended', ready_at = NULL, last_error = NULL, updated_at = ? "
                        "WHERE id = ?",
                        (now, run_id),
                    )
            elif kind == "retry":
                tx.execute(
                    "UPDATE runs SET ready_at = ?, last_error = ?, updated_at = ? WHERE id = ?",
                    (now + float(outcome.get("delay", 1.0)), _dumps(outcome.get("error")), now, run_id),
                )
            elif kind == "stuck":
                tx.execute(
                    "UPDATE runs SET status = 'stuck', stuck_reason = ?, ready_at = NULL, updated_at = ? WHERE id = ?",
                    (_dumps(outcome.get("error")), now, run_id),
                )
            else:
                raise ValueError(f"unknown attempt outcome {kind!r}")
            return Run.from_row(self._run_row(tx, None, run_id))

        return await self.backend.write(op)

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

    async def fire_timers(self, now: float, limit: int = 1000) -> int:
        """Complete the waiting entries whose timers are due; wake their runs.

        A due sleep completes with no result; a due signal timeout completes with a
        ``SignalTimeout`` error. Returns the number of timers fired.
        """

        def op(tx: Tx) -> int:
            due = tx.all(
                "SELECT t.run_id, t.idx, j.kind, j.name FROM timers t JOIN journal j "
                "ON j.run_id = t.run_id AND j.idx = t.idx WHERE t.fire_at <= ? ORDER BY t.fire_at LIMIT ?",
                (now, limit),
            )
            for row in due:
                if row["kind"] == EntryKind.SIGNAL:
                    error: ErrorInfo = {"type": "SignalTimeout", "message": f"no signal {row['name']!r} in time"}
                    self._complete_entry(tx, row["run_id"], row["idx"], None, error, now)
                else:
                    self._complete_entry(tx, row["run_id"], row["idx"], None, None, now)
                self._wake(tx, row["run_id"], now)
            return len(due)

        return await self.backend.write(op)

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

    # --- audit ------------------------------------------------------------------------

    @staticmethod
    def _audit(tx: Tx, tenant_id: str, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        tx.execute(
            "INSERT INTO audit (tenant_id, actor, action, target, details, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (tenant_id, actor, action, target, _dumps(details), _now()),
        )

    async def audit(self, tenant_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The audit log, newest first."""
        rows = await self.backend.read(
            lambda tx: tx.all("SELECT * FROM audit WHERE tenant_id = ? ORDER BY id DESC LIMIT ?", (tenant_id, limit))
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
