"""Group commit: many runs' write transactions share one commit, and fail independently.

``backend.batches`` counts commits and ``backend.transactions`` the write transactions in
them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from tether.errors import FencedError, NotFoundError

RUNS = 200


def test_concurrent_appends_of_many_runs_share_commits(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await asyncio.gather(*(kit.new_run() for _ in range(RUNS)))
        starts = await store.claim_ready(time.time() + 1, 1000)
        assert len(starts) == RUNS
        backend = store.backend
        before = (backend.batches, backend.transactions)

        results = await asyncio.gather(*(store.append(s.run.id, 1, [kit.step(0, result=s.run.id)]) for s in starts))

        batches, transactions = backend.batches - before[0], backend.transactions - before[1]
        assert len(results) == RUNS
        assert transactions == RUNS
        assert batches < RUNS // 2, f"{RUNS} appends took {batches} commits"
        # Each append was durable when it returned.
        restarted = await kit.restart()
        assert (await restarted.table_counts())["journal"] == RUNS
        for s in starts[:: RUNS // 10]:
            [entry] = await restarted.journal(kit.tenant, s.run.id)
            assert entry.result == s.run.id

    run(body)


class _WriteLock:
    """Another connection holding what the store's first write below needs: SQLite's write
    lock, or (PostgreSQL) an advisory lock that write takes."""

    KEY = 4242

    def __init__(self, store_kind, backend):
        self.kind = store_kind
        if store_kind == "sqlite":
            self.conn = sqlite3.connect(backend.path, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self.conn = psycopg.connect(backend.url, autocommit=True)
            self.conn.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))

    def write(self, tx):
        if self.kind != "sqlite":
            tx.one("SELECT pg_advisory_xact_lock(?) AS held", (self.KEY,))
        return "held"

    def release(self):
        if self.kind == "sqlite":
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.KEY,))
        self.conn.close()


def test_a_failing_transaction_does_not_affect_its_batch(store, kit, run, store_kind):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await asyncio.gather(*(kit.new_run() for _ in range(12)))
        starts = await store.claim_ready(time.time() + 1, 100)
        good, conflicted, stale = starts[:10], starts[10], starts[11]
        await store.append(conflicted.run.id, 1, [kit.step(1)])
        await store.finish_attempt(stale.run.id, 1, {"outcome": "retry", "delay": 0})
        await kit.claim(stale.run.id)
        counts = await store.table_counts()
        backend = store.backend
        before = (backend.batches, backend.transactions)

        # Another connection holds the database's write lock, so the first write below waits
        # for it and everything after it queues up behind, to be committed together, in one
        # batch, once the lock is released.
        blocker = _WriteLock(store_kind, backend)
        held = asyncio.create_task(backend.write(blocker.write))
        await asyncio.sleep(0.05)
        assert not held.done(), "the write did not wait for the lock"

        def refuse(dep):
            raise ValueError("bad input")

        jobs = [store.append(s.run.id, 1, [kit.step(0), kit.sleep(1, 60)]) for s in good[:5]]
        # Writes entries 0 and 1, then meets a contradiction at 1: must roll back alone.
        jobs.append(store.append(conflicted.run.id, 1, [kit.step(0), kit.step(1, name="other")]))
        jobs.append(store.append(stale.run.id, 1, [kit.step(0)]))
        jobs.append(store.create_run(kit.tenant, workflow="refund", input={}, env="prod"))
        jobs.append(store.create_run(kit.tenant, workflow="order", input={}, env="prod", validate=refuse))
        jobs += [store.append(s.run.id, 1, [kit.step(0), kit.sleep(1, 60)]) for s in good[5:]]
        tasks = [asyncio.create_task(job) for job in jobs]
        await asyncio.sleep(0.2)  # every task has queued its transaction
        blocker.release()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert await held == "held"

        assert (backend.batches - before[0], backend.transactions - before[1]) == (2, 1 + len(jobs))
        assert [type(r) for r in results[5:9]] == [FencedError, FencedError, NotFoundError, ValueError]
        assert not any(isinstance(r, BaseException) for r in results[:5] + results[9:])
        after = await store.table_counts()
        assert after == {**counts, "journal": counts["journal"] + 20, "timers": counts["timers"] + 10}
        for s in good:
            assert [e.index for e in await store.journal(kit.tenant, s.run.id)] == [0, 1]
        assert [e.name for e in await store.journal(kit.tenant, conflicted.run.id)] == ["charge"]
        assert [e.index for e in await store.journal(kit.tenant, conflicted.run.id)] == [1]

    run(body)


def test_a_write_that_raises_leaves_nothing(store, kit, run):
    async def body():
        before = await store.table_counts()

        def partial(tx):
            tx.execute("INSERT INTO meta (key, value) VALUES ('half', 'done')")
            raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError, match="changed my mind"):
            await store.backend.write(partial)
        row = await store.backend.read(lambda tx: tx.one("SELECT value FROM meta WHERE key = 'half'"))
        assert row is None
        assert await store.table_counts() == before

    run(body)
