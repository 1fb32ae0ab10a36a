"""Waiting entries: signals, timers, child runs, and the suspension race."""

from __future__ import annotations

import time

import pytest

from tether.core.status import RunStatus
from tether.errors import ConflictError, FencedError, NotFoundError


async def _suspend(store, run_id: str, attempt: int, waiting_on: list[int]):
    suspended = await store.finish_attempt(run_id, attempt, {"outcome": "suspended", "waiting_on": waiting_on})
    assert suspended is not None
    assert (suspended.status, suspended.ready_at) == (RunStatus.SUSPENDED, None)
    return suspended


# --- signals ----------------------------------------------------------------------------


def test_signal_before_the_wait_is_buffered_then_consumed(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        delivery = await store.signal(kit.tenant, start.run.id, "approve", {"by": "carol"})
        assert (delivery["buffered"], delivery["delivered_to_entry"], delivery["woken"]) == (True, None, False)

        result = await store.append(start.run.id, 1, [kit.wait_signal(0)])
        assert result.completions == [{"index": 0, "result": {"by": "carol"}, "error": None}]
        [entry] = await store.journal(kit.tenant, start.run.id)
        assert (entry.completed, entry.result) == (True, {"by": "carol"})
        # Consumed: the next wait for the same signal does not get it again.
        assert (await store.append(start.run.id, 1, [kit.wait_signal(1)])).completions == []
        assert not (await store.journal(kit.tenant, start.run.id))[1].completed
        # The run's signal list says which entry took it; a second, unmatched one stays buffered.
        await store.signal(kit.tenant, start.run.id, "other", [1, 2])
        listed = await store.signals(kit.tenant, start.run.id)
        assert [(s["name"], s["payload"], s["consumed_by_entry"]) for s in listed] == [
            ("approve", {"by": "carol"}, 0),
            ("other", [1, 2], None),
        ]
        with pytest.raises(NotFoundError):
            await store.signals("another-tenant", start.run.id)

    run(body)


def test_signal_buffered_for_a_pending_run(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        created = await kit.new_run()
        await store.signal(kit.tenant, created.id, "approve", 1)
        await kit.claim(created.id)
        assert (await store.append(created.id, 1, [kit.wait_signal(0)])).completions[0]["result"] == 1

    run(body)


def test_signal_is_matched_by_name(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.signal(kit.tenant, start.run.id, "cancel_order", "x")
        assert (await store.append(start.run.id, 1, [kit.wait_signal(0, "approve")])).completions == []
        delivery = await store.signal(kit.tenant, start.run.id, "approve", "y")
        assert delivery["delivered_to_entry"] == 0
        result = await store.append(start.run.id, 1, [kit.wait_signal(1, "cancel_order")])
        assert result.completions == [{"index": 1, "result": "x", "error": None}]

    run(body)


def test_signal_while_waiting_completes_the_entry_and_wakes_the_run(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0)])
        await _suspend(store, start.run.id, 1, [0])
        delivery = await store.signal(kit.tenant, start.run.id, "approve", {"ok": True})
        assert (delivery["buffered"], delivery["delivered_to_entry"], delivery["woken"]) == (False, 0, True)
        woken = await kit.get(start.run.id)
        assert (woken.status, woken.ready_at is not None) == (RunStatus.SUSPENDED, True)
        resumed = await kit.claim(start.run.id)
        assert resumed.run.attempt == 2
        assert [(e.index, e.completed, e.result) for e in resumed.journal] == [(0, True, {"ok": True})]

    run(body)


def test_signals_complete_waits_oldest_first(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0), kit.wait_signal(1)])
        assert (await store.signal(kit.tenant, start.run.id, "approve", "a"))["delivered_to_entry"] == 0
        assert (await store.signal(kit.tenant, start.run.id, "approve", "b"))["delivered_to_entry"] == 1
        assert (await store.signal(kit.tenant, start.run.id, "approve", "c"))["buffered"] is True
        journal = await store.journal(kit.tenant, start.run.id)
        assert [e.result for e in journal] == ["a", "b"]

    run(body)


def test_buffered_signals_are_kept_in_order(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        for payload in ("first", "second", "third"):
            assert (await store.signal(kit.tenant, start.run.id, "approve", payload))["buffered"] is True
        result = await store.append(start.run.id, 1, [kit.wait_signal(0), kit.wait_signal(1)])
        assert [(c["index"], c["result"]) for c in result.completions] == [(0, "first"), (1, "second")]
        result = await store.append(start.run.id, 1, [kit.wait_signal(2)])
        assert [(c["index"], c["result"]) for c in result.completions] == [(2, "third")]

    run(body)


def test_signal_to_an_ended_run_is_refused(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.finish_attempt(start.run.id, 1, {"outcome": "completed", "output": None})
        before = await store.table_counts()
        with pytest.raises(ConflictError, match="completed"):
            await store.signal(kit.tenant, start.run.id, "approve", 1)
        with pytest.raises(NotFoundError):
            await store.signal(kit.tenant, "run_missing", "approve", 1)
        assert await store.table_counts() == before

    run(body)


def test_signal_validation_refusal_stores_nothing(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0)])
        before = await store.table_counts()

        def refuse(run_, dep):
            assert (run_.id, dep.id) == (start.run.id, "dep-a")
            raise ValueError("payload does not match the signal schema")

        with pytest.raises(ValueError):
            await store.signal(kit.tenant, start.run.id, "approve", 1, validate=refuse)
        assert await store.table_counts() == before
        assert not (await store.journal(kit.tenant, start.run.id))[0].completed

    run(body)


def test_a_signal_key_delivers_once_and_answers_retries_as_duplicates(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        run_id = start.run.id
        await store.append(run_id, 1, [kit.wait_signal(0)])
        await _suspend(store, run_id, 1, [0])
        first = await store.signal(kit.tenant, run_id, "approve", {"ok": True, "by": "carol"}, idempotency_key="k1")
        assert (first["delivered_to_entry"], first["woken"], first["duplicate"]) == (0, True, False)
        counts = await store.table_counts()
        woken = await kit.get(run_id)

        # The retry (keys in another order: the same JSON) delivers nothing and says so.
        again = await store.signal(kit.tenant, run_id, "approve", {"by": "carol", "ok": True}, idempotency_key="k1")
        assert (again["delivered_to_entry"], again["buffered"], again["woken"], again["duplicate"]) == (
            0,
            False,
            False,
            True,
        )
        assert await store.table_counts() == counts
        assert await kit.get(run_id) == woken

        # The same key with another payload, or for another signal, is refused; nothing is stored.
        for name, payload in (("approve", {"ok": False, "by": "carol"}), ("approve", {"ok": 1, "by": "carol"})):
            with pytest.raises(ConflictError, match="'k1' was already used on run .* new Idempotency-Key"):
                await store.signal(kit.tenant, run_id, name, payload, idempotency_key="k1")
        with pytest.raises(ConflictError, match="signal 'approve'.*this request sends signal 'reject'"):
            await store.signal(kit.tenant, run_id, "reject", {"ok": True, "by": "carol"}, idempotency_key="k1")
        assert await store.table_counts() == counts

        # A buffered signal sent with a key is answered as buffered until a wait takes it.
        buffered = await store.signal(kit.tenant, run_id, "approve", "later", idempotency_key="k2")
        assert (buffered["buffered"], buffered["duplicate"]) == (True, False)
        retried = await store.signal(kit.tenant, run_id, "approve", "later", idempotency_key="k2")
        assert (retried["buffered"], retried["delivered_to_entry"], retried["duplicate"]) == (True, None, True)
        listed = await store.signals(kit.tenant, run_id)
        assert [(s["payload"], s["consumed_by_entry"]) for s in listed] == [
            ({"ok": True, "by": "carol"}, 0),
            ("later", None),
        ]

    run(body)


def test_signal_keys_are_scoped_to_the_run_and_outlive_it(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        one = await kit.started()
        other = await kit.new_run()
        await store.signal(kit.tenant, one.run.id, "approve", 1, idempotency_key="shared")
        assert (await store.signal(kit.tenant, other.id, "approve", 1, idempotency_key="shared"))["duplicate"] is False
        assert len(await store.signals(kit.tenant, other.id)) == 1

        # Once the run ended, a retry of the signal that was sent is still a duplicate, not a refusal ...
        await store.finish_attempt(one.run.id, 1, {"outcome": "completed", "output": None})
        assert (await store.signal(kit.tenant, one.run.id, "approve", 1, idempotency_key="shared"))["duplicate"]
        # ... while a new signal, with or without a new key, is refused as before.
        with pytest.raises(ConflictError, match="completed"):
            await store.signal(kit.tenant, one.run.id, "approve", 1, idempotency_key="fresh")
        with pytest.raises(ConflictError, match="completed"):
            await store.signal(kit.tenant, one.run.id, "approve", 1)

    run(body)


# --- timers -----------------------------------------------------------------------------


def test_sleep_fires_exactly_once_and_wakes_the_run(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        issued = time.time()
        assert (await store.append(start.run.id, 1, [kit.sleep(0, 30)])).completions == []
        assert (await store.table_counts())["timers"] == 1
        _, next_wake = await store.next_due()
        assert next_wake is not None
        assert issued + 30 <= next_wake <= time.time() + 30
        await _suspend(store, start.run.id, 1, [0])

        assert await store.fire_timers(issued + 20) == 0
        assert (await kit.get(start.run.id)).ready_at is None
        fired_at = time.time() + 31
        assert await store.fire_timers(fired_at) == 1
        assert await store.fire_timers(fired_at + 60) == 0
        assert (await store.table_counts())["timers"] == 0
        [entry] = await store.journal(kit.tenant, start.run.id)
        assert (entry.completed, entry.result, entry.error, entry.completed_at) == (True, None, None, fired_at)
        assert (await kit.get(start.run.id)).ready_at == fired_at
        assert (await kit.claim(start.run.id, now=fired_at)).journal[0].completed

    run(body)


def test_zero_sleep_completes_at_once(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        result = await store.append(start.run.id, 1, [kit.sleep(0, 0)])
        assert result.completions == [{"index": 0, "result": None, "error": None}]
        assert (await store.table_counts())["timers"] == 0
        assert (await store.journal(kit.tenant, start.run.id))[0].completed

    run(body)


def test_signal_timeout_fires_an_error_completion(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0, timeout=5)])
        await _suspend(store, start.run.id, 1, [0])
        assert await store.fire_timers(time.time() + 6) == 1
        [entry] = await store.journal(kit.tenant, start.run.id)
        assert entry.completed
        assert entry.error is not None
        assert entry.error["type"] == "SignalTimeout"
        assert (await kit.get(start.run.id)).ready_at is not None
        # A signal arriving after the timeout is buffered, not delivered to the timed-out wait.
        assert (await store.signal(kit.tenant, start.run.id, "approve", 1))["buffered"] is True
        assert (await store.journal(kit.tenant, start.run.id))[0].error is not None

    run(body)


def test_signal_in_time_cancels_the_timeout(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0, timeout=5)])
        await store.signal(kit.tenant, start.run.id, "approve", "yes")
        assert await store.fire_timers(time.time() + 60) == 0
        [entry] = await store.journal(kit.tenant, start.run.id)
        assert (entry.result, entry.error) == ("yes", None)

    run(body)


def test_ending_a_run_drops_its_timers(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.sleep(0, 30)])
        await store.finish_attempt(start.run.id, 1, {"outcome": "completed", "output": None})
        assert await store.fire_timers(time.time() + 60) == 0
        assert not (await store.journal(kit.tenant, start.run.id))[0].completed

    run(body)


# --- children ---------------------------------------------------------------------------


def test_child_entry_creates_a_pinned_child_run(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        parent = await kit.started()
        await kit.deploy("dep-b", env="prod")
        result = await store.append(parent.run.id, 1, [kit.child(3, "ship", {"parcel": 7})])
        assert result.runs_made_ready == 1
        child_id = f"{parent.run.id}.3"
        child = await kit.get(child_id)
        assert (child.deployment_id, child.workflow, child.input) == ("dep-a", "ship", {"parcel": 7})
        assert (child.parent_run_id, child.parent_index, child.status) == (parent.run.id, 3, RunStatus.PENDING)
        [entry] = await store.journal(kit.tenant, parent.run.id)
        assert (entry.completed, entry.extra) == (False, {"child_run_id": child_id})
        # Re-sending the entry (a retried append) creates no second child.
        await store.append(parent.run.id, 1, [kit.child(3, "ship", {"parcel": 7})])
        assert (await store.table_counts())["runs"] == 2

    run(body)


def test_finishing_the_child_completes_the_parent_entry_and_wakes_it(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        parent = await kit.started()
        await store.append(parent.run.id, 1, [kit.child(0)])
        await _suspend(store, parent.run.id, 1, [0])
        child = await kit.claim(f"{parent.run.id}.0")
        assert child.deployment.id == "dep-a"
        await store.finish_attempt(child.run.id, 1, {"outcome": "completed", "output": {"tracking": "Z9"}})
        [entry] = await store.journal(kit.tenant, parent.run.id)
        assert (entry.completed, entry.result, entry.error) == (True, {"tracking": "Z9"}, None)
        woken = await kit.claim(parent.run.id)
        assert woken.run.attempt == 2
        assert woken.journal[0].result == {"tracking": "Z9"}

    run(body)


def test_failed_child_completes_the_parent_entry_with_its_error(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        parent = await kit.started()
        await store.append(parent.run.id, 1, [kit.child(0)])
        await _suspend(store, parent.run.id, 1, [0])
        child = await kit.claim(f"{parent.run.id}.0")
        error = {"type": "OutOfStock", "message": "no parcels"}
        await store.finish_attempt(child.run.id, 1, {"outcome": "failed", "error": error})
        [entry] = await store.journal(kit.tenant, parent.run.id)
        assert (entry.completed, entry.error) == (True, error)
        assert (await kit.get(parent.run.id)).ready_at is not None

    run(body)


def test_kill_cascades_to_unfinished_children_and_is_audited(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        parent = await kit.started()
        await store.append(parent.run.id, 1, [kit.child(0), kit.child(1)])
        starts = await store.claim_ready(time.time() + 1, 10)
        assert {s.run.id for s in starts} == {f"{parent.run.id}.0", f"{parent.run.id}.1"}
        await store.finish_attempt(f"{parent.run.id}.0", 1, {"outcome": "completed", "output": "shipped"})
        await store.append(f"{parent.run.id}.1", 1, [kit.child(0)])

        killed = await store.kill_run(kit.tenant, parent.run.id, actor="alice", reason="customer left")
        assert killed.status == RunStatus.KILLED
        statuses = {r.id: r.status for r in await store.list_runs(kit.tenant)}
        assert statuses == {
            parent.run.id: RunStatus.KILLED,
            f"{parent.run.id}.0": RunStatus.COMPLETED,
            f"{parent.run.id}.1": RunStatus.KILLED,
            f"{parent.run.id}.1.0": RunStatus.KILLED,
        }
        assert await store.claim_ready(time.time() + 3600, 10) == []
        # The attempts in flight are fenced off.
        with pytest.raises(FencedError):
            await store.append(parent.run.id, 1, [kit.step(2)])
        with pytest.raises(FencedError):
            await store.append(f"{parent.run.id}.1", 1, [kit.step(1)])
        [audit] = [a for a in await store.audit(kit.tenant) if a["action"] == "run.kill"]
        assert (audit["actor"], audit["target"]) == ("alice", parent.run.id)
        assert audit["details"] == {"reason": "customer left", "status_before": "running"}
        # The run's own records, and only them.
        assert await store.audit(kit.tenant, target=parent.run.id) == [audit]
        assert await store.audit(kit.tenant, target=f"{parent.run.id}.1") == []
        with pytest.raises(ConflictError):
            await store.cancel_run(kit.tenant, parent.run.id, actor="alice")

    run(body)


# --- the suspension race ----------------------------------------------------------------


def test_suspending_on_an_entry_completed_meanwhile_keeps_the_run_ready(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0), kit.sleep(1, 600)])
        # The signal lands while the attempt is still running: nothing to wake yet.
        delivery = await store.signal(kit.tenant, start.run.id, "approve", "late")
        assert (delivery["delivered_to_entry"], delivery["woken"]) == (0, False)
        after = await store.finish_attempt(start.run.id, 1, {"outcome": "suspended", "waiting_on": [0, 1]})
        assert after is not None
        assert after.ready_at is not None
        assert after.status != RunStatus.SUSPENDED
        resumed = await kit.claim(start.run.id)
        assert resumed.journal[0].result == "late"

    run(body)


def test_suspending_on_a_child_finished_meanwhile_keeps_the_run_ready(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        parent = await kit.started()
        await store.append(parent.run.id, 1, [kit.child(0)])
        child = await kit.claim(f"{parent.run.id}.0")
        await store.finish_attempt(child.run.id, 1, {"outcome": "completed", "output": 5})
        after = await store.finish_attempt(parent.run.id, 1, {"outcome": "suspended", "waiting_on": [0]})
        assert after is not None
        assert (after.ready_at is not None, after.status != RunStatus.SUSPENDED) == (True, True)

    run(body)


def test_cancel_fails_the_waits_and_a_run_ending_with_it_is_cancelled(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        start = await kit.started()
        await store.append(start.run.id, 1, [kit.wait_signal(0, "approval"), kit.sleep(1, 3600)])
        await store.finish_attempt(start.run.id, 1, {"outcome": "suspended", "waiting_on": [0, 1]})

        requested = await store.cancel_run(kit.tenant, start.run.id, actor="alice", reason="changed my mind")
        assert requested.status == RunStatus.SUSPENDED and requested.ready_at is not None
        journal = await store.journal(kit.tenant, start.run.id)
        assert [(e.completed, e.error) for e in journal] == [
            (True, {"type": "Cancelled", "message": "the run was cancelled"}),
            (True, {"type": "Cancelled", "message": "the run was cancelled"}),
        ]
        assert (await store.table_counts())["timers"] == 0
        # The next attempt compensates; any new wait fails at once; ending with the error cancels.
        resumed = await kit.claim(start.run.id)
        result = await store.append(start.run.id, resumed.run.attempt, [kit.step(2), kit.wait_signal(3, "other")])
        assert result.completions == [
            {"index": 3, "result": None, "error": {"type": "Cancelled", "message": "the run was cancelled"}}
        ]
        error = {"type": "RunCancelledError", "message": "the run was cancelled"}
        ended = await store.finish_attempt(start.run.id, resumed.run.attempt, {"outcome": "failed", "error": error})
        assert ended is not None and ended.status == RunStatus.CANCELLED

        other = await kit.started()
        await store.pause_run(kit.tenant, other.run.id, actor="alice")
        assert (await store.cancel_run(kit.tenant, other.run.id, actor="alice")).status == RunStatus.CANCELLED

    run(body)


def test_a_move_sees_the_buffered_signals_and_a_refusal_changes_nothing(store, kit, run):
    async def body():
        await kit.deploy("dep-a", env="prod")
        await kit.deploy("dep-b")
        start = await kit.started()
        run_id = start.run.id
        await store.append(run_id, 1, [kit.wait_signal(0)])
        await _suspend(store, run_id, 1, [0])
        await store.signal(kit.tenant, run_id, "approve", {"ok": True})  # taken by entry 0
        await store.signal(kit.tenant, run_id, "approve", {"ok": False})
        await store.signal(kit.tenant, run_id, "note", "later")
        before = (await store.table_counts(), await kit.get(run_id))
        seen = []

        def refuse(moving, dep, buffered):
            seen.append((moving.id, dep.id, buffered))
            raise ConflictError("buffered signal approve does not fit")

        with pytest.raises(ConflictError, match="does not fit"):
            await store.move_run(
                kit.tenant, run_id, "v2", actor="alice", reason=None, forced=False, check=None, validate=refuse
            )
        assert [(r, d, [(s["name"], s["payload"]) for s in b]) for r, d, b in seen] == [
            (run_id, "dep-b", [("approve", {"ok": False}), ("note", "later")])
        ]
        assert (await store.table_counts(), await kit.get(run_id)) == before

        moved = await store.move_run(
            kit.tenant, run_id, "v2", actor="alice", reason=None, forced=False, check=None, validate=lambda *_: None
        )
        assert moved.deployment_id == "dep-b"

    run(body)
