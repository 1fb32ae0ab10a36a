"""Retention and the supervisor's reads: prune finished runs in bounded batches, find runs left
``running``.

Pruning deletes a finished run with everything that is only its own (journal, signals,
timers, durable state, its idempotency key, which lives on the run); the audit log, the
deployments and the environments' history stay. Each call prunes one bounded batch in one
transaction, so the writer is never held for long; the caller loops. The SQL is plain (no
dialect tricks) so every backend runs the same statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.core.status import TERMINAL
from tether.store._ops import Ops, _now
from tether.store.backend import Tx
from tether.store.records import _dumps

PRUNE_BATCH = 200
"""Runs pruned per transaction."""

_FINISHED = tuple(sorted(s.value for s in TERMINAL))
_OWNED = ("journal", "signals", "timers", "run_state")
"""The tables whose rows belong to one run (column ``run_id``)."""


class RetentionOps(Ops):
    """Retention and the supervisor's reads."""

    async def prune_finished(
        self,
        ended_before: float,
        *,
        env: str | None = None,
        other_than: Sequence[str] = (),
        limit: int = PRUNE_BATCH,
    ) -> int:
        """Delete up to ``limit`` runs that ended before ``ended_before`` (oldest first) and
        what belongs to them; leave a tombstone of each. Returns how many were pruned.

        Only the runs started through environment ``env`` when it is given; else only those
        started through none of the environments ``other_than`` (or through none at all).
        """
        where = ""
        params: list[Any] = []
        if env is not None:
            where, params = " AND env = ?", [env]
        elif other_than:
            where = f" AND (env IS NULL OR env NOT IN ({', '.join('?' for _ in other_than)}))"
            params = list(other_than)

        def op(tx: Tx) -> int:
            rows = tx.all(
                "SELECT id, tenant_id FROM runs WHERE completed_at IS NOT NULL AND completed_at < ? "
                f"AND status IN ({', '.join('?' for _ in _FINISHED)}){where} ORDER BY completed_at LIMIT ?",
                (ended_before, *_FINISHED, *params, limit),
            )
            if not rows:
                return 0
            ids = [r["id"] for r in rows]
            marks = ", ".join("?" for _ in ids)
            for table in _OWNED:
                tx.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
            tx.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            now = _now()
            for row in rows:
                tx.execute(
                    "INSERT INTO pruned_runs (id, tenant_id, pruned_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (row["id"], row["tenant_id"], now),
                )
            return len(ids)

        return await self.backend.write(op)

    async def forget_pruned(self, pruned_before: float, *, limit: int = PRUNE_BATCH * 5) -> int:
        """Drop up to ``limit`` tombstones of runs pruned before ``pruned_before``; how many."""
        return await self.backend.write(
            lambda tx: tx.execute(
                "DELETE FROM pruned_runs WHERE id IN "
                "(SELECT id FROM pruned_runs WHERE pruned_at < ? ORDER BY pruned_at LIMIT ?)",
                (pruned_before, limit),
            )
        )

    async def stalled_attempts(self, unchanged_since: float) -> list[tuple[str, int]]:
        """``(run_id, attempt)`` of the runs ``running`` an attempt, not due for another, that
        have not changed since ``unchanged_since``."""
        rows = await self.backend.read(
            lambda tx: tx.all(
                "SELECT id, attempt FROM runs WHERE status = 'running' AND ready_at IS NULL AND updated_at < ? "
                "ORDER BY updated_at LIMIT 1000",
                (unchanged_since,),
            )
        )
        return [(r["id"], r["attempt"]) for r in rows]

    async def redispatch_stalled(self, run_id: str, attempt: int) -> bool:
        """Make a run that is still ``running`` ``attempt`` (with nobody working on it) ready for a
        new attempt now, saying why in its ``last_error``; whether it was."""
        error = _dumps(
            {
                "type": "AttemptLost",
                "message": f"attempt {attempt} ended without its end being recorded (a store fault, or its task "
                "died); a new attempt replays the journal",
            }
        )

        def op(tx: Tx) -> bool:
            now = _now()
            return (
                tx.execute(
                    "UPDATE runs SET ready_at = ?, last_error = ?, updated_at = ? "
                    "WHERE id = ? AND attempt = ? AND status = 'running' AND ready_at IS NULL",
                    (now, error, now, run_id, attempt),
                )
                > 0
            )

        return await self.backend.write(op)
