"""Retention: a periodic in-process task that prunes runs which ended longer ago than the
server's ``--retention``.

Each pass prunes in bounded batches (one short transaction each, with a pause between them),
so the writer is never held for long and the hot path's appends interleave. Tombstones of
pruned runs are kept for one more retention period, so a lookup can say a run was pruned
rather than that it never existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

from tether.errors import StoreUnavailableError
from tether.store.base import Store

log = logging.getLogger("tether.retention")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
PAUSE = 0.05
"""Seconds between two batches of one pass: room for the writes of running attempts."""


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``15m`` or ``60s``.

    Raises:
        ValueError: with the accepted forms.
    """
    found = _DURATION.match(text)
    if found is None or float(found.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: write a positive number and a unit, as in 30d, 12h, 15m or 60s")
    return float(found.group(1)) * UNITS[found.group(2)]


def pass_interval(retention: float) -> float:
    """How often to prune: a tenth of the retention, between 1 s and 5 minutes."""
    return min(300.0, max(1.0, retention / 10))


def parse_override(text: str) -> tuple[str, float]:
    """``(environment, seconds)`` of ``ENV=DURATION``.

    Raises:
        ValueError: with the accepted form.
    """
    env, sep, duration = text.partition("=")
    if not sep or not env.strip():
        raise ValueError(f"{text!r} is not ENV=DURATION: write it as prod=90d")
    return env.strip(), parse_duration(duration)


class Retention:
    """Prunes finished runs older than ``retention`` seconds (or their environment's own
    retention), every :func:`pass_interval`."""

    def __init__(self, store: Store, retention: float | None, overrides: dict[str, float] | None = None) -> None:
        """Prune ``store``: runs of the environments in ``overrides`` after their own retention
        (seconds), the others after ``retention`` (None: never)."""
        self._store = store
        self.retention = retention
        self.overrides = dict(overrides or {})
        periods = [p for p in (retention, *self.overrides.values()) if p is not None]
        if not periods:
            raise ValueError("retention needs a period: --retention or --retention-for")
        self._shortest, self._longest = min(periods), max(periods)
        self.pruned = 0
        """Runs pruned since the server started."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the periodic task."""
        self._task = asyncio.create_task(self._loop(), name="tether-retention")

    async def close(self) -> None:
        """Stop the periodic task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.prune()
            except StoreUnavailableError as exc:
                log.warning("retention waits for the store: %s", exc.message)
            except Exception:
                log.exception("retention pass failed; trying again at the next one")
            await asyncio.sleep(pass_interval(self._shortest))

    async def prune(self) -> int:
        """One pass: prune every run that ended longer ago than its retention; how many."""
        now = time.time()
        count = 0
        for env, period in self.overrides.items():
            count += await self._prune(now - period, env=env)
        if self.retention is not None:
            count += await self._prune(now - self.retention, other_than=tuple(self.overrides))
        # A tombstone outlives every retention once more: "pruned" stays answerable that long.
        while await self._store.forget_pruned(now - self._longest) > 0:
            await asyncio.sleep(PAUSE)
        if count:
            self.pruned += count
            log.info("retention pruned %d runs", count)
        return count

    async def _prune(self, horizon: float, *, env: str | None = None, other_than: tuple[str, ...] = ()) -> int:
        count = 0
        while (batch := await self._store.prune_finished(horizon, env=env, other_than=other_than)) > 0:
            count += batch
            await asyncio.sleep(PAUSE)
        return count
