"""Attempts: claims, fenced appends, waits, timers, and how attempts end."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from tether.core.appends import Start, Verdict, judge, outcome_status, plan_wait, refusal
from tether.core.journal import EntryKind
from tether.core.routing import draw
from tether.core.status import RunStatus
from tether.errors import FencedError, NotFoundError
from tether.protocol import Completion, ErrorInfo, NewEntry
from tether.store._ops import CANCELLED, MAX_INDEX, REPLAY_COLUMNS_SQL, RUN, Ops, _checked, _now
from tether.store.backend import Tx
from tether.store.records import (
    AppendResult,
    AttemptStart,
    Deployment,
    Row,
    Run,
    _dumps,
    _loads,
    _targets,
    new_run_id,
)

_JOURNAL_COLUMNS = (
    "run_id, idx, kind, name, args_digest, args, completed, result, error, manual_digest, extra, attempt, "
    "created_at, completed_at"
)
_JOURNAL_WIDTH = 14
_JOURNAL_ROW = "(" + ", ".join(["?"] * _JOURNAL_WIDTH) + ")"
_INSERT_ENTRY = f"INSERT INTO journal ({_JOURNAL_COLUMNS}) VALUES {_JOURNAL_ROW} ON CONFLICT (run_id, idx) DO NOTHING"
_JOURNAL_ARRAYS = (
    "text[]", "bigint[]", "text[]", "text[]", "text[]", "text[]", "bigint[]",
    "text[]", "text[]", "text[]", "text[]", "bigint[]", "float8[]", "float8[]",
)  # fmt: skip
_INSERT_ENTRIES = (
    f"INSERT INTO journal ({_JOURNAL_COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"?::{kind}" for kind in _JOURNAL_ARRAYS)
    + ") ON CONFLICT (run_id, idx) DO NOTHING RETURNING idx"
)
"""PostgreSQL: many journal rows in one statement whose text never changes, one array per
column (a VALUES list as long as the batch was parsed again by the driver for every batch)."""


def _journal_values(run_id: str, attempt: int, entry: NewEntry, now: float, extra: dict[str, Any]) -> tuple[Any, ...]:
    """The ``journal`` row of an appended entry, in :data:`_JOURNAL_COLUMNS` order."""
    completed = bool(entry["completed"])
    error = entry.get("error")
    return (
        run_id,
        entry["index"],
        entry["kind"],
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
    )


class _IndexTaken(Exception):
    """A bulk append met an index that holds an entry already (see ``_append_bulk``)."""


def _bulk_eligible(items: list[tuple[str, int, list[NewEntry]]]) -> bool:
    """Whether ``_append_bulk`` can take ``items``: completed entries (steps, calls) of
    distinct runs, in range."""
    run_ids = [run_id for run_id, _, _ in items]
    if len(set(run_ids)) != len(run_ids):
        return False
    for _, _, entries in items:
        for entry in entries:
            if not entry["completed"] or entry["kind"] == EntryKind.STATE or not 0 <= entry["index"] < MAX_INDEX:
                return False
    return True


class AttemptOps(Ops):
    """Attempts: claims, fenced appends, waits, timers, and how attempts end."""

    async def claim_ready(self, now: float, limit: int) -> list[AttemptStart]:
        """Start an attempt for up to ``limit`` runs whose ``ready_at`` has come.

        Each claimed run becomes ``running`` with its attempt number incremented; the returned
        journal is the one that attempt replays. The journals are read after the claim, on a
        snapshot, so that a long journal never holds up the writer: an entry completed in
        between is seen by the attempt as still waiting, and the attempt's suspension then
        finds it completed and starts the next attempt at once.
        """

        def claim(tx: Tx) -> list[tuple[Run, Deployment]]:
            # Several nodes claim at once: each takes rows no other holds (SKIP LOCKED).
            ready = tx.all(
                "SELECT id, status FROM runs WHERE ready_at IS NOT NULL AND ready_at <= ? ORDER BY ready_at LIMIT ?"
                + self.backend.skip_locked,
                (now, limit),
            )
            claimed = []
            deployments: dict[tuple[str, str], Deployment] = {}
            for row in ready:
                _checked(row["status"], RunStatus.RUNNING)
                tx.execute(
                    "UPDATE runs SET status = 'running', attempt = attempt + 1, ready_at = NULL, updated_at = ?, "
                    "lease_owner = ? WHERE id = ?",
                    (_now(), self.node_id, row["id"]),
                )
                run = Run.from_row(self._run_row(tx, None, row["id"]))
                key = (run.tenant_id, run.deployment_id)
                if key not in deployments:
                    try:
                        deployments[key] = self._find_deployment(tx, *key)
                    except NotFoundError:
                        self._stuck_without_deployment(tx, run.id, run.deployment_id)
                        continue
                claimed.append((run, deployments[key]))
            return claimed

        claimed = await self.backend.write(claim)
        if not claimed:
            return []

        def journals(tx: Tx) -> list[AttemptStart]:
            return [AttemptStart(run, dep, tx.all(REPLAY_COLUMNS_SQL, (run.id,))) for run, dep in claimed]

        return await self.backend.read(journals)

    def _stuck_without_deployment(self, tx: Tx, run_id: str, deployment_id: str) -> None:
        """A run pinned to a deployment whose record is gone stops, saying so, rather than
        blocking every claim (or waiting forever)."""
        reason = {
            "type": "DeploymentUnavailable",
            "message": f"the run is pinned to deployment {deployment_id}, whose record is gone from the store. "
            "Nothing ran. Restore the store from a backup, or move the run to a deployment that replays it "
            "('tether runs move RUN --to VERSION --force --reason TEXT')",
        }
        tx.execute(
            "UPDATE runs SET status = 'stuck', stuck_reason = ?, ready_at = NULL, updated_at = ? WHERE id = ?",
            (_dumps(reason), _now(), run_id),
        )

    async def stuck_without_deployment(self, run_id: str, attempt: int, deployment_id: str) -> Run | None:
        """Stop a run whose attempt found its deployment's record gone (see above); a stale
        attempt is ignored."""

        def op(tx: Tx) -> Run | None:
            try:
                self._check_attempt(tx, run_id, attempt)
            except FencedError:
                return None
            self._stuck_without_deployment(tx, run_id, deployment_id)
            return Run.from_row(self._run_row(tx, None, run_id))

        return await self.backend.write(op)

    async def pinned_deployments(self, run_ids: list[str]) -> dict[str, tuple[str, str]]:
        """``{run_id: (tenant_id, deployment_id)}`` of the runs that exist, as they are pinned now."""
        marks = ", ".join("?" for _ in run_ids) or "NULL"
        rows = await self.backend.read(
            lambda tx: tx.all(f"SELECT id, tenant_id, deployment_id FROM runs WHERE id IN ({marks})", tuple(run_ids))
        )
        return {row["id"]: (row["tenant_id"], row["deployment_id"]) for row in rows}

    async def replay_start(self, run: Run, deployment: Deployment) -> AttemptStart:
        """What a dry run of ``run`` on ``deployment`` replays: the run's journal as it is now."""
        rows = await self.backend.read(lambda tx: tx.all(REPLAY_COLUMNS_SQL, (run.id,)))
        return AttemptStart(run, deployment, rows)

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

    _CHECK_COLUMNS = (
        "id, tenant_id, deployment_id, env, attempt, status, ready_at, cancel_requested, lease_owner, parent_run_id, "
        "parent_index"
    )
    _CHECK_SQL = f"SELECT {_CHECK_COLUMNS} FROM runs WHERE id = ?"

    def _check_attempt(self, tx: Tx, run_id: str, attempt: int) -> Row:
        """The run's row (locked where several nodes write), if ``attempt`` is its current
        attempt and this node holds its lease.

        Raises:
            FencedError: the attempt is stale, or the lease is another node's or has lapsed.
        """
        row = tx.one(self._CHECK_SQL + self.backend.for_update, (run_id,))
        self._fence(row, run_id, attempt)
        assert row is not None
        return row

    def _fence(self, row: Row | None, run_id: str, attempt: int) -> None:
        """Refuse ``attempt`` of ``run_id`` unless it is the run's current attempt and this node
        holds the lease (``row``: the run's row, None when there is no such run).

        Raises:
            FencedError: saying why.
        """
        if row is None:
            raise FencedError(f"no run {run_id}")
        # ready_at is set once an attempt has ended (retry, woken, recovered): it is stale then.
        if row["attempt"] != attempt or row["status"] != RunStatus.RUNNING or row["ready_at"] is not None:
            raise FencedError(
                f"run {run_id} is {row['status']} at attempt {row['attempt']}; attempt {attempt} may not append"
            )
        # One node owns a SQLite store (the data directory's lock): there a lease cannot lapse.
        # Elsewhere this node's leases lapse with its heartbeat: once they have, another node
        # may take the run at any moment, so this node stops appending at once.
        if row["lease_owner"] != self.node_id or (self.backend.shared and self.lease_until < _now()):
            raise FencedError(
                f"node {self.node_id} does not hold the lease of run {run_id} (held by {row['lease_owner']}): "
                f"attempt {attempt} may not append"
            )

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

        def one_by_one(tx: Tx) -> list[AppendResult | FencedError]:
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

        if self.backend.shared and _bulk_eligible(items):
            # An index taken already sends the items one by one (rare: a retried append).
            with contextlib.suppress(_IndexTaken):
                return await self.backend.write(lambda tx: self._append_bulk(tx, items))
        return await self.backend.write(one_by_one)

    def _append_bulk(self, tx: Tx, items: list[tuple[str, int, list[NewEntry]]]) -> list[AppendResult | FencedError]:
        """:meth:`append_many` in two statements, where a round trip costs (PostgreSQL): lock
        every run's row at once, then insert every entry at once (items that
        :func:`_bulk_eligible` accepts).

        Raises:
            _IndexTaken: an index is taken already (a retried append, or a contradiction): the
                caller's transaction must be abandoned, and the items go one by one instead.
        """
        run_ids = [run_id for run_id, _, _ in items]
        rows = {
            row["id"]: row
            for row in tx.all(
                f"SELECT {self._CHECK_COLUMNS} FROM runs WHERE id = ANY(?) ORDER BY id" + self.backend.for_update,
                (sorted(run_ids),),
            )
        }
        results: list[AppendResult | FencedError] = []
        columns: list[list[Any]] = [[] for _ in range(_JOURNAL_WIDTH)]
        now = _now()
        for run_id, attempt, entries in items:
            try:
                self._fence(rows.get(run_id), run_id, attempt)
            except FencedError as exc:
                results.append(exc)
                continue
            results.append(AppendResult())
            for entry in entries:
                for column, value in zip(columns, _journal_values(run_id, attempt, entry, now, {}), strict=True):
                    column.append(value)
        if columns[0]:
            stored = tx.all(_INSERT_ENTRIES, columns)
            if len(stored) != len(columns[0]):
                raise _IndexTaken()
        return results

    def _append_tx(self, tx: Tx, run_id: str, attempt: int, entries: list[NewEntry]) -> AppendResult:
        run = self._check_attempt(tx, run_id, attempt)
        now = _now()
        result = AppendResult()
        for entry in entries:
            index = entry["index"]
            if not 0 <= index < MAX_INDEX:
                raise FencedError(f"entry index {index} is out of range")
            completed = bool(entry["completed"])
            extra: dict[str, Any] = {}
            kind = entry["kind"]
            if kind == EntryKind.CHILD and not completed:
                extra["child_run_id"] = f"{run_id}.{index}"
            inserted = tx.execute(
                _INSERT_ENTRY,
                _journal_values(run_id, attempt, entry, now, extra),
            )
            if not inserted:
                # The index is taken: an identical duplicate is acknowledged, anything else refused.
                row = tx.one(
                    "SELECT kind, name, args_digest FROM journal WHERE run_id = ? AND idx = ?", (run_id, index)
                )
                assert row is not None
                existing = (row["kind"], row["name"], row["args_digest"])
                new = (kind, entry["name"], entry["args_digest"])
                if judge(existing, new) is Verdict.REFUSE:
                    raise FencedError(refusal(index, existing, new))
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
        buffered = None
        if kind == EntryKind.SIGNAL and not run["cancel_requested"]:
            buffered = tx.one(
                "SELECT id, payload FROM signals WHERE run_id = ? AND name = ? AND consumed_index IS NULL "
                "ORDER BY id LIMIT 1",
                (run["id"], name),
            )
        plan = plan_wait(kind, args, cancelling=bool(run["cancel_requested"]), signal_buffered=buffered is not None)
        if plan.start is Start.CANCELLED:
            # A cancelled run's waits fail at once: the code sees RunCancelledError and may clean up.
            self._complete_entry(tx, run["id"], index, None, CANCELLED, now)
            return {"index": index, "result": None, "error": CANCELLED}
        if plan.start is Start.COMPLETE:
            self._complete_entry(tx, run["id"], index, None, None, now)
            return {"index": index, "result": None, "error": None}
        if plan.start is Start.TAKE_SIGNAL:
            assert buffered is not None
            tx.execute("UPDATE signals SET consumed_index = ? WHERE id = ?", (index, buffered["id"]))
            payload = _loads(buffered["payload"])
            self._complete_entry(tx, run["id"], index, payload, None, now)
            return {"index": index, "result": payload, "error": None}
        if plan.start is Start.TIMER:
            assert plan.delay is not None
            tx.execute(
                "INSERT INTO timers (run_id, idx, fire_at) VALUES (?, ?, ?)", (run["id"], index, now + plan.delay)
            )
            return None
        if plan.start is Start.WAIT:
            return None
        if plan.start is Start.CHILD:
            args = args or {}
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

    async def finish_attempt(self, run_id: str, attempt: int, outcome: Mapping[str, Any]) -> Run | None:
        """Record how an attempt ended (an outcome of the protocol, or ``retry``).

        A stale attempt (the run moved on, was cancelled or killed) is ignored.

        Returns:
            The run after the change, or None when the outcome was ignored.
        """

        def op(tx: Tx) -> Run | None:
            try:
                current = self._check_attempt(tx, run_id, attempt)
            except FencedError:
                return None
            now = _now()
            kind = outcome["outcome"]
            target = outcome_status(outcome, cancel_requested=bool(current["cancel_requested"]))
            _checked(current["status"], target)
            if target is RunStatus.STUCK:
                self.backend.publish(tx, RUN, run_id)
            after: Row | None = None
            if kind == "completed":
                after = self._terminate(
                    tx, run_id, RunStatus.COMPLETED, now, output=outcome.get("output"), locked=current
                )
            elif kind == "failed":
                after = self._terminate(tx, run_id, target, now, error=outcome.get("error") or {}, locked=current)
            elif kind == "mismatch":
                after = tx.one(
                    "UPDATE runs SET status = 'stuck', stuck_reason = ?, ready_at = NULL, updated_at = ? WHERE id = ? "
                    "RETURNING *",
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
                    after = tx.one(
                        "UPDATE runs SET ready_at = ?, updated_at = ? WHERE id = ? RETURNING *", (now, now, run_id)
                    )
                else:
                    after = tx.one(
                        "UPDATE runs SET status = 'suspended', ready_at = NULL, last_error = NULL, updated_at = ? "
                        "WHERE id = ? RETURNING *",
                        (now, run_id),
                    )
            elif kind == "retry":
                after = tx.one(
                    "UPDATE runs SET ready_at = ?, last_error = ?, updated_at = ? WHERE id = ? RETURNING *",
                    (now + float(outcome.get("delay", 1.0)), _dumps(outcome.get("error")), now, run_id),
                )
            elif kind == "stuck":
                after = tx.one(
                    "UPDATE runs SET status = 'stuck', stuck_reason = ?, ready_at = NULL, updated_at = ? WHERE id = ? "
                    "RETURNING *",
                    (_dumps(outcome.get("error")), now, run_id),
                )
            elif kind == "continue_as_new":
                following = self._continue(tx, run_id, outcome.get("input") or {}, bool(outcome.get("upgrade", True)))
                if isinstance(following, str):
                    after = self._terminate(
                        tx, run_id, RunStatus.COMPLETED, now, output={"continued_as": following}, locked=current
                    )
                else:
                    after = self._terminate(tx, run_id, RunStatus.FAILED, now, error=following, locked=current)
            return Run.from_row(after if after is not None else self._run_row(tx, None, run_id))

        return await self.backend.write(op)

    def _continue(self, tx: Tx, run_id: str, input: Any, upgrade: bool) -> str | ErrorInfo:
        """Start the run that continues ``run_id``: on the environment's current deployment if
        ``upgrade`` (and the run came through an environment that still exists), else on the
        same deployment. Returns its id, or why it cannot start there (nothing is started)."""
        run = Run.from_row(self._run_row(tx, None, run_id))
        following = new_run_id()
        deployment_id = run.deployment_id
        if upgrade and run.env is not None:
            row = tx.one("SELECT targets FROM environments WHERE tenant_id = ? AND name = ?", (run.tenant_id, run.env))
            if row is not None:
                deployment_id = draw(_targets(row["targets"]), following)
        target = self._find_deployment(tx, run.tenant_id, deployment_id)
        component = target.manifest.get("components", {}).get(run.workflow)
        if target.removed_at is not None or component is None or component.get("kind") != "workflow":
            why = "was removed" if target.removed_at is not None else f"has no workflow {run.workflow!r}"
            return {"type": "ContinueAsNewRefused", "message": f"cannot continue as new on {target.label}: it {why}"}
        self._insert_run(tx, following, run.tenant_id, deployment_id, run.workflow, input, run.env, None, None, None)
        tx.execute("UPDATE runs SET linked_from = ?, link_kind = 'continue_as_new' WHERE id = ?", (run_id, following))
        return following

    async def fire_timers(self, now: float, limit: int = 1000) -> int:
        """Complete the waiting entries whose timers are due; wake their runs.

        A due sleep completes with no result; a due signal timeout completes with a
        ``SignalTimeout`` error. Returns the number of timers fired.
        """

        def op(tx: Tx) -> int:
            # Every node fires timers: each takes those no other holds, so a timer fires once.
            due = tx.all(
                "SELECT t.run_id, t.idx, j.kind, j.name FROM timers t JOIN journal j "
                "ON j.run_id = t.run_id AND j.idx = t.idx WHERE t.fire_at <= ? ORDER BY t.fire_at LIMIT ?"
                + self.backend.skip_locked,
                (now, limit),
            )
            for row in due:
                if self.backend.shared:
                    # Before the entry completes, as _terminate does for a parent's entry.
                    self._locked_run(tx, None, row["run_id"])
                if row["kind"] == EntryKind.SIGNAL:
                    error: ErrorInfo = {"type": "SignalTimeout", "message": f"no signal {row['name']!r} in time"}
                    self._complete_entry(tx, row["run_id"], row["idx"], None, error, now)
                else:
                    self._complete_entry(tx, row["run_id"], row["idx"], None, None, now)
                self._wake(tx, row["run_id"], now)
            return len(due)

        return await self.backend.write(op)
