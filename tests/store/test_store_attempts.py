"""Attempts, fenced appends and how attempts end."""

from __future__ import annotations

import time

import pytest

from tether.core.status import RunStatus
from tether.errors import FencedError
from tether.store.base import MAX_INDEX


async def _retry(store, kit, run_id: str, attempt: int):
    """End ``attempt`` with an immediate retry and claim the next attempt."""
    await store.finish_attempt(
        run_id, attempt, {"outcome": "retry", "delay": 0, "error": {"type": "E", "message": "x"}}
    )
    return await kit.claim(run_id)


def test_claim_starts_an_attempt_with_the_journal(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        created = await kit.new_run()
        assert await store.claim_ready(created.ready_at - 10, 10) == []
        start = await kit.claim(created.id)
        assert (start.run.status, start.run.attempt, start.run.ready_at) == (RunStatus.RUNNING, 1, None)
        assert start.deployment.id == "dep-a"
        assert start.journal == []
        assert await store.claim_ready(time.time() + 1, 10) == []

        await store.append(created.id, 1, [kit.step(0, result={"paid": 5}), kit.step(1, name="email")])
        second = await _retry(store, kit, created.id, 1)
        assert second.run.attempt == 2
        assert (await kit.get(created.id)).last_error == {"type": "E", "message": "x"}
        assert [(e.index, e.kind, e.name, e.result, e.attempt) for e in second.journal] == [
            (0, "step", "charge", {"paid": 5}, 1),
            (1, "step", "email", "ok", 1),
        ]

    run(body)


def test_claim_respects_the_limit(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        for _ in range(5):
            await kit.new_run()
        first = await store.claim_ready(time.time() + 1, 3)
        rest = await store.claim_ready(time.time() + 1, 10)
        assert (len(first), len(rest)) == (3, 2)
        assert {s.run.id for s in first}.isdisjoint({s.run.id for s in rest})

    run(body)


def test_append_from_a_stale_attempt_is_fenced(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await _retry(store, kit, start.run.id, 1)
        before = await store.table_counts()
        with pytest.raises(FencedError):
            await store.append(start.run.id, 1, [kit.step(0)])
        with pytest.raises(FencedError):
            await store.append(start.run.id, 3, [kit.step(0)])
        assert await store.table_counts() == before
        await store.append(start.run.id, 2, [kit.step(0)])
        assert len(await store.journal(kit.tenant, start.run.id)) == 1

    run(body)


def test_append_to_a_run_that_is_not_running_is_fenced(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        pending = await kit.new_run()
        with pytest.raises(FencedError):
            await store.append(pending.id, 0, [kit.step(0)])
        start = await kit.claim(pending.id)
        await store.kill_run(kit.tenant, start.run.id, actor="alice")
        with pytest.raises(FencedError):
            await store.append(start.run.id, 1, [kit.step(0)])
        with pytest.raises(FencedError):
            await store.append("run_missing", 1, [kit.step(0)])
        assert (await store.table_counts())["journal"] == 0

    run(body)


def test_identical_duplicate_entry_is_acknowledged(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.step(0, result="first")])
        # A retried request (or a replaying attempt) re-sends the entry: acknowledged, unchanged.
        result = await store.append(start.run.id, 1, [kit.step(0, result="first"), kit.step(1)])
        assert result.completions == []
        journal = await store.journal(kit.tenant, start.run.id)
        assert [(e.index, e.result) for e in journal] == [(0, "first"), (1, "ok")]
        second = await _retry(store, kit, start.run.id, 1)
        await store.append(start.run.id, 2, [kit.step(0, result="first")])
        journal = await store.journal(kit.tenant, start.run.id)
        assert [(e.index, e.attempt) for e in journal] == [(0, 1), (1, 1)]
        assert second.run.attempt == 2

    run(body)


@pytest.mark.parametrize(
    "field, value",
    [("kind", "run"), ("name", "charge_v2"), ("args_digest", "d9")],
)
def test_conflicting_entry_is_fenced_and_batch_is_atomic(store, kit, run, field, value):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.step(2)])
        before = await store.table_counts()
        conflicting = kit.step(2)
        conflicting[field] = value  # type: ignore[literal-required]
        state = {"index": 1, "kind": "state", "name": "k", "args_digest": "s", "completed": True, "result": 1}
        with pytest.raises(FencedError, match="entry 2"):
            await store.append(
                start.run.id,
                1,
                [kit.step(0), state, kit.sleep(3, 60), kit.child(4), conflicting, kit.step(5)],
            )
        assert await store.table_counts() == before
        assert [e.index for e in await store.journal(kit.tenant, start.run.id)] == [2]
        assert await store.run_state(kit.tenant, start.run.id) == {}

    run(body)


@pytest.mark.parametrize("index", [-1, MAX_INDEX, MAX_INDEX + 5])
def test_index_out_of_range_is_refused(store, kit, run, index):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        with pytest.raises(FencedError, match="range"):
            await store.append(start.run.id, 1, [kit.step(0), kit.step(index)])
        assert (await store.table_counts())["journal"] == 0
        await store.append(start.run.id, 1, [kit.step(MAX_INDEX - 1)])

    run(body)


def test_state_entries_set_run_state(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()

        def state(index, key, value):
            return {
                "index": index,
                "kind": "state",
                "name": key,
                "args_digest": "s",
                "completed": True,
                "result": value,
            }

        await store.append(start.run.id, 1, [state(0, "stage", "paid"), state(1, "n", 1), state(2, "stage", "sent")])
        assert await store.run_state(kit.tenant, start.run.id) == {"n": 1, "stage": "sent"}

    run(body)


def test_finish_completed(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        done = await store.finish_attempt(start.run.id, 1, {"outcome": "completed", "output": {"total": 3}})
        assert done is not None
        assert (done.status, done.output, done.ready_at) == (RunStatus.COMPLETED, {"total": 3}, None)
        assert done.completed_at is not None
        assert await kit.get(start.run.id) == done
        assert await store.claim_ready(time.time() + 3600, 10) == []

    run(body)


def test_finish_failed(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        error = {"type": "ValueError", "message": "bad card"}
        failed = await store.finish_attempt(start.run.id, 1, {"outcome": "failed", "error": error})
        assert failed is not None
        assert (failed.status, failed.error, failed.ready_at) == (RunStatus.FAILED, error, None)
        assert failed.completed_at is not None

    run(body)


def test_finish_mismatch_makes_the_run_stuck(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        diff = {"index": 0, "expected": "step charge(#d0)", "issued": "step charge_v2(#d0)"}
        stuck = await store.finish_attempt(start.run.id, 1, {"outcome": "mismatch", "mismatch": diff})
        assert stuck is not None
        assert (stuck.status, stuck.stuck_reason, stuck.ready_at) == (RunStatus.STUCK, diff, None)
        # Not retried until an operator acts.
        assert await store.claim_ready(time.time() + 3600, 10) == []
        assert (await store.list_runs(kit.tenant, status="stuck"))[0].id == start.run.id

    run(body)


def test_finish_suspended(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0)])
        suspended = await store.finish_attempt(start.run.id, 1, {"outcome": "suspended", "waiting_on": [0]})
        assert suspended is not None
        assert (suspended.status, suspended.ready_at) == (RunStatus.SUSPENDED, None)
        assert await store.claim_ready(time.time() + 3600, 10) == []
        with pytest.raises(FencedError):
            await store.append(start.run.id, 1, [kit.step(1)])

    run(body)


@pytest.mark.parametrize(
    "outcome",
    [
        {"outcome": "completed", "output": 1},
        {"outcome": "failed", "error": {"type": "E", "message": "m"}},
        {"outcome": "mismatch", "mismatch": {"index": 0}},
        {"outcome": "suspended", "waiting_on": [0]},
        {"outcome": "retry", "delay": 0},
    ],
    ids=lambda o: o["outcome"],
)
def test_stale_finish_is_ignored(store, kit, run, outcome):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await _retry(store, kit, start.run.id, 1)
        before = await kit.get(start.run.id)
        assert await store.finish_attempt(start.run.id, 1, outcome) is None
        assert await kit.get(start.run.id) == before

        await store.finish_attempt(start.run.id, 2, {"outcome": "completed", "output": "done"})
        ended = await kit.get(start.run.id)
        assert await store.finish_attempt(start.run.id, 2, outcome) is None
        assert await kit.get(start.run.id) == ended

    run(body)


def test_an_attempt_that_ended_with_a_retry_is_fenced_before_the_next_claim(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.finish_attempt(start.run.id, 1, {"outcome": "retry", "delay": 60, "error": None})
        with pytest.raises(FencedError):
            await store.append(start.run.id, 1, [kit.step(0)])
        assert (await store.journal(kit.tenant, start.run.id)) == []

    run(body)
