"""Retention and the supervisor's operations: pruning in bounded batches, tombstones, runs left running."""

from __future__ import annotations

import time

import pytest

from tether.core.routing import Target
from tether.core.status import RunStatus
from tether.errors import NotFoundError


async def _finished(kit, store, n: int) -> list[str]:
    """``n`` runs that completed, each with a journal entry, a signal and state."""
    ids = []
    for _ in range(n):
        start = await kit.started()
        run_id = start.run.id
        await store.append(run_id, 1, [kit.step(0), kit.wait_signal(1, "go")])
        await store.signal(kit.tenant, run_id, "go", {"ok": True})
        state = {"index": 2, "kind": "state", "name": "k", "args_digest": "x", "completed": True, "result": 1}
        await store.append(run_id, 1, [state])
        await store.finish_attempt(run_id, 1, {"outcome": "completed", "output": {"done": True}})
        ids.append(run_id)
    return ids


def test_finished_runs_are_pruned_oldest_first_in_bounded_batches(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        done = await _finished(kit, store, 5)
        waiting = await kit.started()
        await store.append(waiting.run.id, 1, [kit.step(0), kit.wait_signal(1, "go")])
        await store.finish_attempt(waiting.run.id, 1, {"outcome": "suspended", "waiting_on": [1]})
        audit_before = len(await store.audit(kit.tenant))

        assert await store.prune_finished(time.time() - 3600) == 0  # nothing ended that long ago
        assert await store.prune_finished(time.time() + 1, limit=2) == 2
        with pytest.raises(NotFoundError, match="pruned by the server's retention"):
            await store.get_run(kit.tenant, done[0])
        assert (await kit.get(done[2])).status is RunStatus.COMPLETED  # not in this batch
        while await store.prune_finished(time.time() + 1, limit=2):
            pass
        for run_id in done:
            with pytest.raises(NotFoundError, match="pruned"):
                await store.journal(kit.tenant, run_id)
        counts = await store.table_counts()
        assert (counts["runs"], counts["signals"], counts["run_state"]) == (1, 0, 0)
        assert counts["journal"] == 2  # the waiting run's
        assert (await kit.get(waiting.run.id)).status is RunStatus.SUSPENDED
        assert len(await store.audit(kit.tenant)) == audit_before

        # Another tenant learns nothing from a tombstone.
        with pytest.raises(NotFoundError, match="see 'tether runs list'"):
            await store.get_run("other", done[0])
        # Tombstones go after another period; then a lookup is a plain not found.
        assert await store.forget_pruned(time.time() + 1, limit=3) == 3
        assert await store.forget_pruned(time.time() + 1) == 2
        with pytest.raises(NotFoundError, match="see 'tether runs list'"):
            await store.get_run(kit.tenant, done[0])

    run(body)


def test_a_run_left_running_is_found_and_made_ready_once(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        run_id = start.run.id
        assert await store.stalled_attempts(time.time() - 60) == []
        assert await store.stalled_attempts(time.time() + 1) == [(run_id, 1)]
        assert not await store.redispatch_stalled(run_id, 2)  # another attempt: not this one
        assert await store.redispatch_stalled(run_id, 1)
        assert not await store.redispatch_stalled(run_id, 1)  # already ready
        assert await store.stalled_attempts(time.time() + 1) == []
        again = await kit.claim(run_id)
        assert again.run.attempt == 2
        assert again.run.last_error is not None and again.run.last_error["type"] == "AttemptLost"

    run(body)


def test_pruning_can_be_limited_to_an_environment_or_leave_some_out(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await store.set_env(kit.tenant, "audit", [Target("dep-a", 100)], actor="alice")
        on_prod = await _finished(kit, store, 1)
        start = await kit.started(env="audit")
        await store.finish_attempt(start.run.id, 1, {"outcome": "completed", "output": None})
        later = time.time() + 1
        assert await store.prune_finished(later, other_than=("audit",)) == 1
        assert (await kit.get(start.run.id)).status is RunStatus.COMPLETED
        assert await store.prune_finished(later, env="prod") == 0  # already gone
        assert await store.prune_finished(later, env="audit") == 1
        for run_id in (*on_prod, start.run.id):
            with pytest.raises(NotFoundError, match="pruned"):
                await kit.get(run_id)

    run(body)
