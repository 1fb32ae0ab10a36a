"""Deployments, artifacts and environments (pointers with a history)."""

from __future__ import annotations

from typing import Any

from tether.core.routing import Target
from tether.core.status import IN_FLIGHT
from tether.errors import BadRequestError, ConflictError
from tether.store._ops import Ops, _now
from tether.store.backend import Tx
from tether.store.records import (
    Deployment,
    Environment,
    Row,
    _dumps,
    _loads,
    _targets,
    _targets_json,
)


class DeploymentOps(Ops):
    """Deployments, artifacts and environments (pointers with a history)."""

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
        secret: str | None = None,
        env: str | None = None,
        code: dict[str, str] | None = None,
        environment: dict[str, Any] | None = None,
        venv: str | None = None,
        build_log: str | None = None,
    ) -> tuple[Deployment, bool]:
        """Record a deployment (idempotently) and, in the same transaction, point ``env`` at it.

        ``code`` (``{path: sha256}``), ``environment`` (mode, fingerprint, lock), ``venv`` (the
        lock digest of its own environment) and ``build_log`` are what every later load proves.

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
                self._audit(tx, tenant_id, actor, "deployment.restore", deployment_id, {"label": row["label"]})
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
                    "manifest_digest, manifest, created_at, created_by, secret, code, environment, venv, build_log) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        secret,
                        None if code is None else _dumps(code),
                        None if environment is None else _dumps(environment),
                        venv,
                        build_log,
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

    async def get_deployment(self, tenant_id: str, ref: str) -> Deployment:
        """The deployment with id or label ``ref``.

        Raises:
            NotFoundError: no such deployment in the tenant.
        """
        return await self.backend.read(lambda tx: self._find_deployment(tx, tenant_id, ref))

    async def list_deployments(
        self, tenant_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The deployments, oldest first (those after sequence number ``after``, at most
        ``limit``), with their status, environments and runs in flight."""
        sql = "SELECT * FROM deployments WHERE tenant_id = ? AND seq > ? ORDER BY seq"
        params: tuple[Any, ...] = (tenant_id, -1 if after is None else after)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)

        def op(tx: Tx) -> list[dict[str, Any]]:
            deployments = [Deployment.from_row(r) for r in tx.all(sql, params)]
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
            row = tx.one("SELECT build_log FROM deployments WHERE tenant_id = ? AND id = ?", (tenant_id, dep.id))
            item["build_log"] = None if row is None else row["build_log"]
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
        details = {"targets": _loads(new), "previous": _loads(previous), "reason": reason}
        self._audit(tx, tenant_id, actor, f"env.{action}", name, details)
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

    async def promote_env(
        self, tenant_id: str, name: str, source: str, *, actor: str, reason: str | None = None
    ) -> Environment:
        """Point ``name`` where environment ``source`` points now, read and written in one
        transaction (a change of ``source`` meanwhile cannot be half-copied).

        Raises:
            BadRequestError: ``name`` and ``source`` are the same environment.
            NotFoundError: no environment ``source``.
        """
        if name == source:
            raise BadRequestError(f"cannot promote {name} from itself: name the environment to copy, e.g. staging")

        def op(tx: Tx) -> Environment:
            # Nothing removed to refuse: removal is refused while an environment points at it.
            targets = _targets(self._env_row(tx, tenant_id, source)["targets"])
            return self._set_env(tx, tenant_id, name, targets, "promote", actor, reason or f"promoted from {source}")

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
            targets = _targets(last["previous"])
            for target in targets:
                if self._find_deployment(tx, tenant_id, target.deployment_id).removed_at is not None:
                    raise ConflictError(
                        f"environment {name} would roll back to a removed deployment: deploy its content again, "
                        f"or point {name} elsewhere with 'tether env set'"
                    )
            env = self._set_env(tx, tenant_id, name, targets, "rollback", actor, reason)
            undo = tx.one("SELECT MAX(id) AS id FROM env_history WHERE tenant_id = ? AND name = ?", (tenant_id, name))
            assert undo is not None
            tx.execute("UPDATE env_history SET undone_by = ? WHERE id = ?", (undo["id"], last["id"]))
            return env

        return await self.backend.write(op)

    async def get_env(self, tenant_id: str, name: str) -> Environment:
        """The environment ``name``."""
        row = await self.backend.read(lambda tx: self._env_row(tx, tenant_id, name))
        return Environment(row["name"], _targets(row["targets"]), row["updated_at"])

    async def list_envs(
        self, tenant_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Environment]:
        """The tenant's environments by name (those after ``after``, at most ``limit``)."""
        sql = "SELECT * FROM environments WHERE tenant_id = ? AND name > ? ORDER BY name"
        params: tuple[Any, ...] = (tenant_id, "" if after is None else after)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        rows = await self.backend.read(lambda tx: tx.all(sql, params))
        return [Environment(r["name"], _targets(r["targets"]), r["updated_at"]) for r in rows]

    async def env_history(
        self, tenant_id: str, name: str, *, before: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The changes of ``name``, newest first (those older than id ``before``, at most ``limit``)."""
        sql = "SELECT * FROM env_history WHERE tenant_id = ? AND name = ?"
        params: tuple[Any, ...] = (tenant_id, name)
        if before is not None:
            sql, params = sql + " AND id < ?", (*params, before)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)

        def op(tx: Tx) -> list[Row]:
            self._env_row(tx, tenant_id, name)
            return tx.all(sql, params)

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

    async def venv_in_use(self, venv: str) -> bool:
        """Whether a deployment that is not removed (in any tenant) runs in environment ``venv``."""
        row = await self.backend.read(
            lambda tx: tx.one("SELECT 1 AS x FROM deployments WHERE venv = ? AND removed_at IS NULL LIMIT 1", (venv,))
        )
        return row is not None

    async def deployment_by_id(self, tenant_id: str, deployment_id: str) -> Deployment:
        """The deployment with this exact id."""
        return await self.backend.read(lambda tx: self._find_deployment(tx, tenant_id, deployment_id))
