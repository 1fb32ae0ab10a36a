"""Deployments, environment pointers and their history."""

from __future__ import annotations

import pytest

from tether.core.routing import Target
from tether.errors import BadRequestError, ConflictError, NotFoundError


def test_create_deployment_is_idempotent(store, kit, run):
    async def body():
        first, created = await store.create_deployment(
            kit.tenant,
            deployment_id="dep-a",
            kind="endpoint",
            manifest={"app": "shop", "components": {"order": {"kind": "workflow"}}},
            manifest_digest="m-a",
            actor="alice",
            url="http://w.invalid",
        )
        assert created is True
        again, created_again = await store.create_deployment(
            kit.tenant,
            deployment_id="dep-a",
            kind="endpoint",
            manifest={"app": "shop", "components": {"order": {"kind": "workflow"}}},
            manifest_digest="m-a",
            actor="bob",
            url="http://w.invalid",
        )
        assert created_again is False
        assert (again.id, again.label, again.created_by) == ("dep-a", "v1", "alice")
        assert [d["id"] for d in await store.list_deployments(kit.tenant)] == ["dep-a"]
        assert (await store.table_counts())["deployments"] == 1

    run(body)


def test_labels_count_up_per_tenant(store, kit, run):
    async def body():
        a = await kit.deploy("dep-a")
        b = await kit.deploy("dep-b")
        other = await kit.deploy("dep-c", tenant="globex")
        assert (a.label, b.label, other.label) == ("v1", "v2", "v1")
        assert (await store.get_deployment("globex", "v1")).id == "dep-c"
        assert (await store.get_deployment(kit.tenant, "v1")).id == "dep-a"

    run(body)


def test_get_deployment_by_id_or_label(store, kit, run):
    async def body():
        await kit.deploy("dep-a")
        dep = await kit.deploy("dep-b")
        assert (await store.get_deployment(kit.tenant, "dep-b")) == dep
        assert (await store.get_deployment(kit.tenant, "v2")) == dep
        assert dep.manifest["components"]["order"] == {"kind": "workflow"}
        with pytest.raises(NotFoundError):
            await store.get_deployment(kit.tenant, "v9")
        with pytest.raises(NotFoundError):
            await store.get_deployment("globex", "dep-b")

    run(body)


def test_deploy_moves_env_in_the_same_transaction(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        assert (await store.get_env(kit.tenant, "prod")).targets == [Target("dep-a", 100)]
        await kit.deploy("dep-b", env="prod")
        assert (await store.get_env(kit.tenant, "prod")).targets == [Target("dep-b", 100)]
        history = await store.env_history(kit.tenant, "prod")
        assert [(h["action"], h["targets"][0]["deployment_id"]) for h in history] == [
            ("deploy", "dep-b"),
            ("deploy", "dep-a"),
        ]
        # Deploying without an env leaves every pointer alone.
        await kit.deploy("dep-c")
        assert (await store.get_env(kit.tenant, "prod")).targets == [Target("dep-b", 100)]

    run(body)


def test_remove_deployment_refused_while_env_points_at_it(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        with pytest.raises(ConflictError, match="prod"):
            await store.remove_deployment(kit.tenant, "v1", "alice")
        assert (await store.get_deployment(kit.tenant, "dep-a")).removed_at is None

    run(body)


def test_remove_deployment_refused_while_runs_in_flight(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        pinned = await kit.new_run()
        await kit.deploy("dep-b", env="prod")
        with pytest.raises(ConflictError, match=pinned.id):
            await store.remove_deployment(kit.tenant, "dep-a", "alice")
        await store.kill_run(kit.tenant, pinned.id, actor="alice")
        removed = await store.remove_deployment(kit.tenant, "dep-a", "alice")
        assert removed.removed_at is not None

    run(body)


def test_remove_drained_deployment_keeps_record_drops_artifact(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod", bundle=b"tarball-a")
        await kit.deploy("dep-b", env="prod", bundle=b"tarball-b")
        assert await store.get_artifact("b-dep-a") == b"tarball-a"
        removed = await store.remove_deployment(kit.tenant, "v1", "alice")
        assert removed.removed_at is not None
        assert await store.get_artifact("b-dep-a") is None
        assert await store.get_artifact("b-dep-b") == b"tarball-b"
        assert (await store.get_deployment(kit.tenant, "dep-a")).label == "v1"
        listed = {d["id"]: d["status"] for d in await store.list_deployments(kit.tenant)}
        assert listed == {"dep-a": "removed", "dep-b": "active"}
        assert [a["action"] for a in await store.audit(kit.tenant)][0] == "deployment.remove"
        with pytest.raises(ConflictError):
            await store.set_env(kit.tenant, "prod", [Target("dep-a", 100)], actor="alice")

    run(body)


def test_list_deployments_lifecycle(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        first = await kit.new_run()
        second = await kit.new_run()
        await kit.deploy("dep-b", env="prod")
        await kit.deploy("dep-c")
        listed = {d["id"]: d for d in await store.list_deployments(kit.tenant)}
        assert (listed["dep-a"]["status"], listed["dep-a"]["in_flight"]) == ("draining", 2)
        assert listed["dep-a"]["runs_by_status"] == {"pending": 2}
        assert (listed["dep-b"]["status"], listed["dep-b"]["in_flight"]) == ("active", 0)
        assert listed["dep-b"]["environments"] == ["prod"]
        assert (listed["dep-c"]["status"], listed["dep-c"]["in_flight"]) == ("drained", 0)

        start = await store.claim_ready(1e12, 1)
        await store.finish_attempt(start[0].run.id, 1, {"outcome": "completed", "output": 1})
        listed = {d["id"]: d for d in await store.list_deployments(kit.tenant)}
        assert (listed["dep-a"]["status"], listed["dep-a"]["in_flight"]) == ("draining", 1)
        other = second if start[0].run.id == first.id else first
        await store.kill_run(kit.tenant, other.id, actor="alice")
        listed = {d["id"]: d for d in await store.list_deployments(kit.tenant)}
        assert (listed["dep-a"]["status"], listed["dep-a"]["in_flight"]) == ("drained", 0)

    run(body)


def test_set_env_records_history(store, kit, run):
    async def body():
        await kit.deploy("dep-a")
        await kit.deploy("dep-b")
        await store.set_env(kit.tenant, "prod", [Target("dep-a", 100)], actor="alice", reason="first")
        await store.set_env(kit.tenant, "prod", [Target("dep-a", 90), Target("dep-b", 10)], actor="bob")
        assert (await store.get_env(kit.tenant, "prod")).targets == [Target("dep-a", 90), Target("dep-b", 10)]
        history = await store.env_history(kit.tenant, "prod")
        assert [(h["actor"], h["reason"], h["undone"]) for h in history] == [
            ("bob", None, False),
            ("alice", "first", False),
        ]
        assert history[0]["previous"] == [{"deployment_id": "dep-a", "weight": 100}]
        assert history[1]["previous"] is None
        with pytest.raises(NotFoundError):
            await store.set_env(kit.tenant, "prod", [Target("dep-zzz", 100)], actor="alice")
        assert len(await store.env_history(kit.tenant, "prod")) == 2

    run(body)


def test_promote_copies_the_pointer_with_its_weights(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await kit.deploy("dep-b")
        await store.set_env(kit.tenant, "staging", [Target("dep-a", 90), Target("dep-b", 10)], actor="alice")
        promoted = await store.promote_env(kit.tenant, "prod", "staging", actor="bob")
        assert promoted.targets == [Target("dep-a", 90), Target("dep-b", 10)]
        [latest, *_] = await store.env_history(kit.tenant, "prod")
        assert (latest["action"], latest["actor"], latest["reason"]) == ("promote", "bob", "promoted from staging")
        # A new environment can be promoted into; a missing source or itself is refused.
        assert (await store.promote_env(kit.tenant, "qa", "prod", actor="bob", reason="r")).targets == promoted.targets
        with pytest.raises(NotFoundError):
            await store.promote_env(kit.tenant, "prod", "nope", actor="bob")
        with pytest.raises(BadRequestError):
            await store.promote_env(kit.tenant, "prod", "prod", actor="bob")
        assert len(await store.env_history(kit.tenant, "prod")) == 2
        # A promotion is undone like any change.
        await store.rollback_env(kit.tenant, "prod", actor="bob")
        assert (await store.get_env(kit.tenant, "prod")).targets == [Target("dep-a", 100)]

    run(body)


def test_rollback_undoes_latest_change(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await kit.deploy("dep-b", env="prod")
        env = await store.rollback_env(kit.tenant, "prod", actor="alice", reason="bad deploy")
        assert env.targets == [Target("dep-a", 100)]
        assert (await store.get_env(kit.tenant, "prod")).targets == [Target("dep-a", 100)]
        history = await store.env_history(kit.tenant, "prod")
        assert [(h["action"], h["undone"]) for h in history] == [
            ("rollback", False),
            ("deploy", True),
            ("deploy", False),
        ]
        with pytest.raises(ConflictError):
            await store.rollback_env(kit.tenant, "prod", actor="alice")
        assert (await store.get_env(kit.tenant, "prod")).targets == [Target("dep-a", 100)]
        assert len(await store.env_history(kit.tenant, "prod")) == 3

    run(body)


def test_rollback_walks_back_through_history(store, kit, run):
    async def body():
        for dep in ("dep-a", "dep-b", "dep-c"):
            await kit.deploy(dep, env="prod")
        assert (await store.rollback_env(kit.tenant, "prod", actor="a")).targets == [Target("dep-b", 100)]
        assert (await store.rollback_env(kit.tenant, "prod", actor="a")).targets == [Target("dep-a", 100)]
        with pytest.raises(ConflictError):
            await store.rollback_env(kit.tenant, "prod", actor="a")

    run(body)


def test_unknown_env_is_not_found(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        with pytest.raises(NotFoundError):
            await store.rollback_env(kit.tenant, "staging", actor="alice")
        with pytest.raises(NotFoundError):
            await store.get_env(kit.tenant, "staging")
        with pytest.raises(NotFoundError):
            await store.env_history(kit.tenant, "staging")
        with pytest.raises(NotFoundError):
            await store.get_env("globex", "prod")

    run(body)


def test_rollback_never_points_at_a_removed_deployment_and_restores_are_audited(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await kit.deploy("dep-b", env="prod")
        await store.remove_deployment(kit.tenant, "dep-a", "alice")
        with pytest.raises(ConflictError, match="removed deployment"):
            await store.rollback_env(kit.tenant, "prod", actor="alice")
        assert [t.deployment_id for t in (await store.get_env(kit.tenant, "prod")).targets] == ["dep-b"]
        await kit.deploy("dep-a")  # the same content again brings it back
        await store.rollback_env(kit.tenant, "prod", actor="alice", reason="b is broken")
        actions = {a["action"]: a for a in await store.audit(kit.tenant)}
        assert actions["deployment.restore"]["target"] == "dep-a"
        assert actions["env.rollback"]["details"]["reason"] == "b is broken"

    run(body)
