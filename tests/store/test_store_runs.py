"""Creating runs: environment resolution, validation, idempotency."""

from __future__ import annotations

import pytest

from tether.core.routing import Target
from tether.core.status import RunStatus
from tether.errors import ConflictError, NotFoundError


def test_run_is_pinned_when_created(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        early = await kit.new_run()
        assert (early.deployment_id, early.env, early.status) == ("dep-a", "prod", RunStatus.PENDING)
        assert early.ready_at is not None
        await kit.deploy("dep-b", env="prod")
        assert (await kit.get(early.id)).deployment_id == "dep-a"
        late = await kit.new_run()
        assert late.deployment_id == "dep-b"
        await store.rollback_env(kit.tenant, "prod", actor="alice")
        assert (await kit.get(late.id)).deployment_id == "dep-b"
        # A claimed attempt is started on the pinned deployment, not on what prod names now.
        start = await store.claim_ready(1e12, 10)
        assert {(s.run.id, s.deployment.id) for s in start} == {(early.id, "dep-a"), (late.id, "dep-b")}

    run(body)


def test_run_on_explicit_deployment(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await kit.deploy("dep-b")
        created, _ = await store.create_run(kit.tenant, workflow="order", input={}, deployment_ref="v2")
        assert created.deployment_id == "dep-b"

    run(body)


def test_split_env_spreads_new_runs(store, kit, run):
    async def body():
        await kit.deploy("dep-a")
        await kit.deploy("dep-b")
        await store.set_env(kit.tenant, "prod", [Target("dep-a", 50), Target("dep-b", 50)], actor="alice")
        drawn = set()
        for _ in range(40):
            created, _ = await store.create_run(kit.tenant, workflow="order", input={}, env="prod")
            drawn.add(created.deployment_id)
        assert drawn == {"dep-a", "dep-b"}

    run(body)


def test_unknown_workflow_stores_nothing(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        before = await store.table_counts()
        with pytest.raises(NotFoundError, match="order"):
            await store.create_run(kit.tenant, workflow="refund", input={}, env="prod")
        # A component that is not a workflow cannot be started either.
        with pytest.raises(NotFoundError):
            await store.create_run(kit.tenant, workflow="helper", input={}, env="prod")
        assert await store.table_counts() == before

    run(body)


def test_unknown_env_or_deployment_stores_nothing(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        before = await store.table_counts()
        with pytest.raises(NotFoundError):
            await store.create_run(kit.tenant, workflow="order", input={}, env="staging")
        with pytest.raises(NotFoundError):
            await store.create_run(kit.tenant, workflow="order", input={}, deployment_ref="v7")
        assert await store.table_counts() == before

    run(body)


def test_validate_refusal_stores_nothing(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        before = await store.table_counts()
        seen = []

        def refuse(dep):
            seen.append(dep.id)
            raise ValueError("input does not match the schema")

        with pytest.raises(ValueError, match="schema"):
            await store.create_run(kit.tenant, workflow="order", input={"x": 1}, env="prod", validate=refuse)
        assert seen == ["dep-a"]
        assert await store.table_counts() == before
        assert await store.list_runs(kit.tenant) == []

    run(body)


def test_idempotency_key_returns_the_same_run(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        first, created = await store.create_run(
            kit.tenant, workflow="order", input={"n": 1}, env="prod", idempotency_key="order-42"
        )
        assert created is True
        await kit.deploy("dep-b", env="prod")
        again, created_again = await store.create_run(
            kit.tenant, workflow="order", input={"n": 1}, env="prod", idempotency_key="order-42"
        )
        assert created_again is False
        assert (again.id, again.deployment_id, again.input) == (first.id, "dep-a", {"n": 1})
        assert (await store.table_counts())["runs"] == 1
        # Keys are scoped to a tenant.
        await kit.deploy("dep-g", env="prod", tenant="globex")
        other, other_created = await store.create_run(
            "globex", workflow="order", input={}, env="prod", idempotency_key="order-42"
        )
        assert other_created is True
        assert other.id != first.id

    run(body)


def test_idempotency_key_for_another_workflow_conflicts(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        first, _ = await store.create_run(kit.tenant, workflow="order", input={}, env="prod", idempotency_key="k")
        with pytest.raises(ConflictError, match=first.id):
            await store.create_run(kit.tenant, workflow="ship", input={}, env="prod", idempotency_key="k")
        assert (await store.table_counts())["runs"] == 1

    run(body)


def test_runs_of_another_tenant_are_invisible(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        created = await kit.new_run()
        with pytest.raises(NotFoundError):
            await store.get_run("globex", created.id)
        with pytest.raises(NotFoundError):
            await store.journal("globex", created.id)
        assert await store.list_runs("globex") == []

    run(body)


def test_idempotency_key_reused_with_another_input_conflicts(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        first, _ = await store.create_run(kit.tenant, workflow="order", input={"n": 1}, env="prod", idempotency_key="k")
        again, created = await store.create_run(
            kit.tenant, workflow="order", input={"n": 1}, env="prod", idempotency_key="k"
        )
        assert (again.id, created) == (first.id, False)
        with pytest.raises(ConflictError, match="different workflow or input"):
            await store.create_run(kit.tenant, workflow="order", input={"n": 2}, env="prod", idempotency_key="k")
        assert (await store.table_counts())["runs"] == 1

    run(body)


def test_idempotency_key_reused_on_another_environment_conflicts(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await store.set_env(kit.tenant, "staging", [Target("dep-a", 1)], actor="alice")
        first, _ = await store.create_run(kit.tenant, workflow="order", input={"n": 1}, env="prod", idempotency_key="k")
        counts = await store.table_counts()
        # Same workflow, same input, same deployment behind it: still another request.
        with pytest.raises(ConflictError, match=f"{first.id} of workflow order on environment prod.*staging"):
            await store.create_run(kit.tenant, workflow="order", input={"n": 1}, env="staging", idempotency_key="k")
        with pytest.raises(ConflictError, match="environment prod.*deployment v1.*new Idempotency-Key"):
            await store.create_run(
                kit.tenant, workflow="order", input={"n": 1}, deployment_ref="v1", idempotency_key="k"
            )
        # JSON that compares equal in Python but is another input (1 is not true) is refused too.
        with pytest.raises(ConflictError, match="different workflow or input"):
            await store.create_run(kit.tenant, workflow="order", input={"n": True}, env="prod", idempotency_key="k")
        assert await store.table_counts() == counts
        again, created = await store.create_run(
            kit.tenant, workflow="order", input={"n": 1}, env="prod", idempotency_key="k"
        )
        assert (again.id, created) == (first.id, False)

    run(body)


def test_idempotency_key_reused_on_another_deployment_conflicts_even_after_a_move(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await kit.deploy("dep-b")
        first, _ = await store.create_run(
            kit.tenant, workflow="order", input={"n": 1}, deployment_ref="v1", idempotency_key="k"
        )
        counts = await store.table_counts()
        with pytest.raises(ConflictError, match="on deployment v1; .*another target \\(deployment v2\\)"):
            await store.create_run(
                kit.tenant, workflow="order", input={"n": 1}, deployment_ref="v2", idempotency_key="k"
            )
        with pytest.raises(ConflictError, match="deployment v1.*environment prod"):
            await store.create_run(kit.tenant, workflow="order", input={"n": 1}, env="prod", idempotency_key="k")
        assert await store.table_counts() == counts
        # The deployment by id or by label is the same target.
        again, created = await store.create_run(
            kit.tenant, workflow="order", input={"n": 1}, deployment_ref="dep-a", idempotency_key="k"
        )
        assert (again.id, created) == (first.id, False)
        # A move re-pins the run; a retry of the original start still finds it.
        await store.move_run(kit.tenant, first.id, "v2", actor="alice", reason="test", forced=True, check=None)
        again, created = await store.create_run(
            kit.tenant, workflow="order", input={"n": 1}, deployment_ref="v1", idempotency_key="k"
        )
        assert (again.id, again.deployment_id, created) == (first.id, "dep-b", False)
        with pytest.raises(ConflictError, match="another target \\(deployment v2\\)"):
            await store.create_run(
                kit.tenant, workflow="order", input={"n": 1}, deployment_ref="v2", idempotency_key="k"
            )

    run(body)
