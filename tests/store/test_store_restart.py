"""What survives a restart: recovery of attempts in flight, and the schema version."""

from __future__ import annotations

import pytest

from tether.core.status import RunStatus
from tether.errors import FencedError
from tether.store.schema import LATEST, migrations


def test_recover_makes_running_runs_ready_after_a_restart(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        crashed = await kit.started()
        await store.append(crashed.run.id, 1, [kit.step(0, result="paid")])
        waiting = await kit.started()
        await store.append(waiting.run.id, 1, [kit.wait_signal(0)])
        await store.finish_attempt(waiting.run.id, 1, {"outcome": "suspended", "waiting_on": [0]})
        finished = await kit.started()
        await store.finish_attempt(finished.run.id, 1, {"outcome": "completed", "output": 1})
        queued = await kit.new_run()

        restarted = await kit.restart()
        assert (await kit.get(crashed.run.id)).ready_at is None
        assert await restarted.recover() == 1
        assert await restarted.recover() == 0
        assert (await kit.get(crashed.run.id)).ready_at is not None
        assert (await kit.get(waiting.run.id)).status == RunStatus.SUSPENDED
        assert (await kit.get(waiting.run.id)).ready_at is None

        starts = {s.run.id: s for s in await restarted.claim_ready(1e12, 10)}
        assert set(starts) == {crashed.run.id, queued.id}
        resumed = starts[crashed.run.id]
        assert resumed.run.attempt == 2
        assert [(e.index, e.result) for e in resumed.journal] == [(0, "paid")]
        # The attempt that was in flight before the restart can no longer append.
        with pytest.raises(FencedError):
            await restarted.append(crashed.run.id, 1, [kit.step(1)])

    run(body)


def test_everything_committed_survives_a_restart(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod", bundle=b"tarball")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.step(0), kit.sleep(1, 60)])
        await store.signal(kit.tenant, start.run.id, "approve", 1)
        counts = await store.table_counts()
        secret = await store.secret()

        restarted = await kit.restart()
        assert await restarted.table_counts() == counts
        assert await restarted.secret() == secret
        assert await restarted.get_artifact("b-dep-a") == b"tarball"
        assert [e.index for e in await restarted.journal(kit.tenant, start.run.id)] == [0, 1]

    run(body)


def test_reopening_does_not_reapply_migrations(store, kit, run):
    def versions(tx):
        return [r["version"] for r in tx.all("SELECT version FROM schema_version ORDER BY version")]

    every = [version for version, _ in migrations()]

    async def body():
        assert every[-1] == LATEST
        assert await store.backend.read(versions) == every
        await kit.deploy("dep-a", env="prod")
        for _ in range(2):
            restarted = await kit.restart()
            assert await restarted.backend.read(versions) == every
        assert [d["id"] for d in await restarted.list_deployments(kit.tenant)] == ["dep-a"]

    run(body)


def test_a_newer_schema_is_refused(store, kit, run, reopen):
    async def body():
        await store.backend.write(
            lambda tx: tx.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST + 1,))
        )
        with pytest.raises(RuntimeError, match="newer"):
            reopen()

    run(body)


def test_a_version_1_database_is_migrated_in_place_keeping_its_runs(tmp_path):
    import sqlite3

    from tether.store import open_store
    from tether.store.schema import migrations

    path = tmp_path / "tether.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    (version, sql) = migrations()[0]
    assert version == 1
    for statement in sql.split(";\n"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO runs (id, tenant_id, deployment_id, workflow, status, input, attempt, created_at, updated_at) "
        "VALUES ('run_old', 'default', 'dep', 'wf', 'suspended', '{}', 1, 0, 0)"
    )
    conn.close()

    async def body():
        store = open_store(f"sqlite:///{path}")
        try:
            run = await store.get_run("default", "run_old")
            assert (run.status.value, run.linked_from, run.link_kind) == ("suspended", None, None)
        finally:
            await store.close()

    import asyncio

    asyncio.run(body())
