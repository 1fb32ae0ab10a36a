"""The embedded SQLite backend: WAL, one writer thread, group commit.

Every write transaction is queued to a single writer thread. The writer takes whatever is
queued (up to :data:`MAX_BATCH`), runs each transaction inside its own SAVEPOINT of one
outer transaction, and commits once: many runs' journal appends share one fsync. A
transaction that raises is rolled back to its savepoint alone; the others commit.

Reads run on a small pool of reader threads, each with its own connection; WAL lets them
proceed while the writer commits.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tether.store.base import Backend, Row
from tether.store.schema import migrate_sqlite

T = TypeVar("T")
MAX_BATCH = 512
READERS = 4


class _Cursor:
    """The :class:`tether.store.base.Tx` of a SQLite connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()


@dataclass(slots=True)
class _Job:
    fn: Callable[[_Cursor], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _resolve(job: _Job, ok: bool, value: Any) -> None:
    if job.future.done():
        return
    if ok:
        job.future.set_result(value)
    else:
        job.future.set_exception(value)


class SqliteBackend(Backend):
    """See the module docstring."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        """Open (creating and migrating) the database file at ``path``.

        Args:
            path: the database file.
            synchronous: SQLite's ``synchronous`` pragma; ``FULL`` fsyncs every commit.
        """
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._synchronous = synchronous.upper()
        self._writer_conn = _connect(path, self._synchronous)
        migrate_sqlite(self._writer_conn)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="tether-sqlite-writer", daemon=True)
        self._writer.start()
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="tether-sqlite-reader")
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.batches = 0
        """Commits done (each may hold many transactions)."""
        self.transactions = 0
        """Write transactions committed."""

    # --- writes -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        conn = self._writer_conn
        cursor = _Cursor(conn)
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._run_batch(conn, cursor, jobs)
            if stop:
                return

    def _run_batch(self, conn: sqlite3.Connection, cursor: _Cursor, jobs: list[_Job]) -> None:
        results: list[tuple[_Job, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                conn.execute("SAVEPOINT tx")
                try:
                    value = job.fn(cursor)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO tx")
                    conn.execute("RELEASE tx")
                    results.append((job, False, exc))
                else:
                    conn.execute("RELEASE tx")
                    results.append((job, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(job, False, exc) for job in jobs]
        self.batches += 1
        self.transactions += len(jobs)
        if self.on_commit is not None:
            self.on_commit(len(jobs))
        for job, ok, value in results:
            job.loop.call_soon_threadsafe(_resolve, job, ok, value)

    async def write(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, loop, future))
        return await future

    # --- reads ------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self._synchronous)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    def _read(self, fn: Callable[[Any], T]) -> T:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            return fn(_Cursor(conn))
        finally:
            conn.execute("COMMIT")

    async def read(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, fn)

    async def close(self) -> None:
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
        self._writer_conn.close()
