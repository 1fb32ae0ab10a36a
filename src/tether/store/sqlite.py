"""The embedded SQLite backend: WAL, one writer thread, group commit.

Every write transaction is queued to a single writer thread. The writer takes whatever is
queued (up to :data:`MAX_BATCH`), runs each transaction inside its own SAVEPOINT of one
outer transaction, and commits once: many runs' journal appends share one fsync. A
transaction that raises is rolled back to its savepoint alone; the others commit.

Reads run on a small pool of reader threads, each with its own connection; WAL lets them
proceed while the writer commits.

Faults of the file rather than of a transaction — a full disk, a lock another process holds,
a read-only file, an I/O error — fail the whole batch with
:class:`~tether.errors.StoreUnavailableError` (the API answers 503 with ``Retry-After``). The
writer waits at most :data:`BUSY_TIMEOUT` for a lock, and after a fault it opens a fresh
connection if the old one cannot be trusted, so writes resume on their own when the fault clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tether.errors import StoreUnavailableError
from tether.store.base import Backend, Row
from tether.store.schema import migrate_sqlite

T = TypeVar("T")
MAX_BATCH = 512
READERS = 4
BUSY_TIMEOUT = 3.0
"""Seconds a transaction waits for a lock another process holds before it gives up (503)."""

_BUSY, _LOCKED, _READONLY, _IOERR, _FULL, _CANTOPEN = 5, 6, 8, 10, 13, 14


def unavailable(exc: sqlite3.Error, path: Path) -> StoreUnavailableError | None:
    """The fault of the store's file that ``exc`` reports, or None for an error of the
    transaction itself (a constraint, a bug)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    where = path.parent
    if primary == _FULL:
        return StoreUnavailableError(
            "full",
            f"the store's disk is full ({where}): free space there. Writes resume on their own once there is "
            "room; reads go on meanwhile. Retry later",
        )
    if primary in (_BUSY, _LOCKED):
        return StoreUnavailableError(
            "locked",
            f"another process holds the store's write lock ({path}) for more than {BUSY_TIMEOUT:g}s: end it "
            "(an open sqlite3 shell, a backup tool writing to it). Writes resume on their own when it lets go; "
            "reads go on meanwhile. Retry later",
            retry_after=2,
        )
    if primary == _READONLY:
        return StoreUnavailableError(
            "read_only",
            f"the store at {path} is read-only: make it and {where} writable again. Writes resume on their own; "
            "reads go on meanwhile. Retry later",
            retry_after=10,
        )
    if primary in (_IOERR, _CANTOPEN):
        return StoreUnavailableError(
            "io",
            f"the store at {path} cannot be written ({exc}): check the disk under {where}. Writes resume on "
            "their own once it works; reads go on meanwhile. Retry later",
        )
    return None


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
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
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
        self._writer_conn: sqlite3.Connection | None = _connect(path, self._synchronous)
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
            self._run_batch(jobs)
            if stop:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        results: list[tuple[_Job, bool, Any]] = []
        try:
            if self._writer_conn is None:
                # The last fault left the connection untrusted: start afresh.
                self._writer_conn = _connect(self.path, self._synchronous)
            conn = self._writer_conn
            cursor = _Cursor(conn)
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                conn.execute("SAVEPOINT tx")
                try:
                    value = job.fn(cursor)
                except sqlite3.Error as exc:
                    if unavailable(exc, self.path) is not None:
                        raise  # the file failed, not this transaction: the whole batch fails
                    conn.execute("ROLLBACK TO tx")
                    conn.execute("RELEASE tx")
                    results.append((job, False, exc))
                except BaseException as exc:
                    conn.execute("ROLLBACK TO tx")
                    conn.execute("RELEASE tx")
                    results.append((job, False, exc))
                else:
                    conn.execute("RELEASE tx")
                    results.append((job, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abandon_transaction()
            fault = unavailable(exc, self.path)
            if fault is not None:
                self.faults += len(jobs)
            results = [(job, False, fault or exc) for job in jobs]
        self.batches += 1
        self.transactions += len(jobs)
        if self.on_commit is not None:
            self.on_commit(len(jobs))
        for job, ok, value in results:
            job.loop.call_soon_threadsafe(_resolve, job, ok, value)

    def _abandon_transaction(self) -> None:
        """Roll back what a failed batch left open; a connection that cannot is replaced."""
        conn = self._writer_conn
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._writer_conn = None

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
        try:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                return fn(_Cursor(conn))
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            fault = unavailable(exc, self.path)
            if fault is None:
                raise
            self.faults += 1
            raise fault from exc

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
        if self._writer_conn is not None:
            self._writer_conn.close()
