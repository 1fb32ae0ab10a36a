"""``append_many``: the appends of several attempts in one transaction, each all-or-nothing.

The server hands the store every append that arrived together; on PostgreSQL the common case
(completed entries of distinct runs) goes in two statements, and anything else — an index
already taken by a retried append or a contradiction, a stale attempt — must come out exactly
as item-by-item appends would.
"""

from __future__ import annotations

import asyncio
import time

from tether.errors import FencedError
from tether.store.records import AppendResult


def test_steps_of_many_runs_are_stored_together(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await asyncio.gather(*(kit.new_run() for _ in range(20)))
        starts = await store.claim_ready(time.time() + 1, 100)
        items = [(s.run.id, 1, [kit.step(0, result=s.run.id), kit.step(1, name="ship")]) for s in starts]

        results = await store.append_many(items)

        assert [type(r) for r in results] == [AppendResult] * 20
        for s in starts:
            journal = await store.journal(kit.tenant, s.run.id)
            assert [(e.index, e.name, e.result, e.attempt) for e in journal] == [
                (0, "charge", s.run.id, 1),
                (1, "ship", "ok", 1),
            ]

    run(body)


def test_a_retried_a_contradicting_and_a_stale_item_do_not_disturb_the_others(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await asyncio.gather(*(kit.new_run() for _ in range(6)))
        starts = await store.claim_ready(time.time() + 1, 100)
        good, retried, contradicting, stale = starts[:3], starts[3], starts[4], starts[5]
        await store.append(retried.run.id, 1, [kit.step(0, result="first")])
        await store.append(contradicting.run.id, 1, [kit.step(0)])
        await store.finish_attempt(stale.run.id, 1, {"outcome": "retry", "delay": 0})
        before = await store.table_counts()

        results = await store.append_many(
            [
                *[(s.run.id, 1, [kit.step(0)]) for s in good[:2]],
                (retried.run.id, 1, [kit.step(0, result="first"), kit.step(1)]),
                (contradicting.run.id, 1, [kit.step(0, name="other")]),
                (stale.run.id, 1, [kit.step(0)]),
                (good[2].run.id, 1, [kit.step(0)]),
            ]
        )

        kinds = [type(r) for r in results]
        assert kinds == [AppendResult, AppendResult, AppendResult, FencedError, FencedError, AppendResult]
        assert "entry 0" in str(results[3])
        # 3 good steps, and the retried run's new entry 1 (its entry 0 acknowledged, unchanged).
        assert (await store.table_counts())["journal"] == before["journal"] + 4
        retried_journal = await store.journal(kit.tenant, retried.run.id)
        assert [(e.index, e.result) for e in retried_journal] == [(0, "first"), (1, "ok")]
        assert [e.name for e in await store.journal(kit.tenant, contradicting.run.id)] == ["charge"]
        assert await store.journal(kit.tenant, stale.run.id) == []
        for s in good:
            assert [e.index for e in await store.journal(kit.tenant, s.run.id)] == [0]

    run(body)
