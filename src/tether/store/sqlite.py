"""The embedded SQLite backend: WAL, group commit driven by the event loop.

Write transactions are queued by :meth:`SqliteBackend.write`; every write issued in one turn of
the event loop (and every write issued while the previous commit was syncing) forms one batch.
The batch's statements run on the event loop's own thread — each transaction inside its own
SAVEPOINT of one outer transaction — and only the ``COMMIT``, whose fsync is the one slow part,
runs on a dedicated thread. Many runs' journal appends share one fsync, and no Python code of
a transaction waits for the GIL behind the event loop (a writer thread did: every statement
released the GIL and had to win it back from a busy loop, up to a switch interval each time).
A transaction that raises is rolled back to its savepoint alone; the others commit.

Reads run on a small pool of reader threads, each with its own connection; WAL lets them
proceed while a commit syncs.

Faults of the file rather than of a transaction — a full disk, a lock another process holds,
a read-only file, an I/O error — fail the whole batch with
:class:`~tether.errors.StoreUnavailableError` (the API answers 503 with ``Retry-After``). A
batch waits at most :data:`BUSY_TIMEOUT` for a lock (on the sync thread, never on the loop), and
after a fault a fresh connection is opened if the old one cannot be trusted, so writes resume on
their own when the fault clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

log = logging.getLogger("tether.store")
T = TypeVar("T")
MAX_BATCH = 512
GATHER_TURNS = 2
"""Turns of the event loop a batch waits for more writes when fewer are queued than the last
batch held: under load the appends of one worker frame arrive a turn or two apart, and every
commit saved is ~0.3 ms of server CPU (W2 at 64 in flight: +7–10 %, paired runs). An idle
server (one write at a time) never waits."""
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
    future: asyncio.Future[Any]


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    return conn


def _begin(conn: sqlite3.Connection) -> None:
    """Open the batch's write transaction; waits (up to :data:`BUSY_TIMEOUT`) for another process's lock."""
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _commit(conn: sqlite3.Connection) -> None:
    """Commit (and fsync) the batch; on failure roll it back so the connection is usable again."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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
        conn = _connect(path, self._synchronous)
        migrate_sqlite(conn)
        # Statements run on the event loop must never block it on another process's lock:
        # BEGIN IMMEDIATE is tried without waiting, and retried on the sync thread when busy.
        conn.execute("PRAGMA busy_timeout=0")
        self._writer_conn: sqlite3.Connection | None = conn
        self._syncer = _Syncer()
        self._pending: list[_Job] = []
        self._draining = False
        self._last_batch = 0
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="tether-sqlite-reader")
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.batches = 0
        """Commits done (each may hold many transactions)."""
        self.transactions = 0
        """Write transactions committed."""

    # --- writes -----------------------------------------------------------------------

    async def write(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Job(fn, future))
        if not self._draining:
            self._draining = True
            # The task's first step runs after what is ready in this turn of the loop: every
            # write issued meanwhile joins the batch.
            task = loop.create_task(self._drain(), name="tether-sqlite-commit")
            task.add_done_callback(_drain_done)
        return await future

    async def _drain(self) -> None:
        """Run and commit batches until nothing is queued."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if len(self._pending) < self._last_batch:
                    for _ in range(GATHER_TURNS):
                        await asyncio.sleep(0)
                jobs, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._last_batch = len(jobs)
                try:
                    if self._writer_conn is None:
                        # The last fault left the connection untrusted: start afresh (off the loop:
                        # opening may wait for a lock).
                        self._writer_conn = await asyncio.to_thread(self._reopen)
                    conn = self._writer_conn
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as exc:
                        if not _is_busy(exc):
                            raise
                        # Another process holds the write lock: wait for it off the loop.
                        await self._syncer.run(loop, _begin, conn)
                    results = _run_jobs(conn, _Cursor(conn), jobs, self.path)
                    await self._syncer.run(loop, _commit, conn)
                except Exception as exc:  # the batch failed as a whole: every job hears why, none hangs
                    self._abandon_transaction()
                    fault = unavailable(exc, self.path) if isinstance(exc, sqlite3.Error) else None
                    if fault is not None:
                        self.faults += len(jobs)
                    results = [(job, False, fault or exc) for job in jobs]
                self.batches += 1
                self.transactions += len(jobs)
                if self.on_commit is not None:
                    self.on_commit(len(jobs))
                for job, ok, value in results:
                    _resolve(job, ok, value)
        finally:
            self._draining = False
            if self._pending:
                # Cancelled (the loop is closing) with work queued: fail it rather than hang.
                pending, self._pending = self._pending, []
                for job in pending:
                    _resolve(job, False, RuntimeError("the store closed before this write was committed"))

    def _reopen(self) -> sqlite3.Connection:
        conn = _connect(self.path, self._synchronous)
        conn.execute("PRAGMA busy_timeout=0")
        return conn

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
        while self._draining or self._pending:
            await asyncio.sleep(0.001)
        await asyncio.get_running_loop().run_in_executor(None, self._syncer.stop)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
        if self._writer_conn is not None:
            self._writer_conn.close()


class _Syncer:
    """The thread that commits (and fsyncs) batches, so the event loop goes on meanwhile.

    A bare thread fed by a :class:`queue.SimpleQueue`: a thread pool's ``submit`` cost the
    loop more than the commit's hand-off itself."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[
            tuple[
                Callable[[sqlite3.Connection], None],
                sqlite3.Connection,
                asyncio.AbstractEventLoop,
                asyncio.Future[None],
            ]
            | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="tether-sqlite-sync", daemon=True)
        self._thread.start()

    def run(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[sqlite3.Connection], None], conn: sqlite3.Connection
    ) -> asyncio.Future[None]:
        """``fn(conn)`` on the thread; the future is done (on ``loop``) when it returned."""
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((fn, conn, loop, future))
        return future

    def _serve(self) -> None:
        while (work := self._queue.get()) is not None:
            fn, conn, loop, future = work
            try:
                fn(conn)
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
                loop.call_soon_threadsafe(_settle, future, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, None)

    def stop(self) -> None:
        """Finish queued work and end the thread."""
        self._queue.put(None)
        self._thread.join()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _run_jobs(conn: sqlite3.Connection, cursor: _Cursor, jobs: list[_Job], path: Path) -> list[tuple[_Job, bool, Any]]:
    """Each job in its own savepoint of the open transaction: one that raises is undone alone.

    Raises:
        sqlite3.Error: a fault of the file (:func:`unavailable`), which fails the whole batch.
    """
    results: list[tuple[_Job, bool, Any]] = []
    for job in jobs:
        conn.execute("SAVEPOINT tx")
        try:
            value = job.fn(cursor)
        except sqlite3.Error as exc:
            if unavailable(exc, path) is not None:
                raise  # the file failed, not this transaction: the whole batch fails
            conn.execute("ROLLBACK TO tx")
            conn.execute("RELEASE tx")
            results.append((job, False, exc))
        except Exception as exc:
            conn.execute("ROLLBACK TO tx")
            conn.execute("RELEASE tx")
            results.append((job, False, exc))
        else:
            conn.execute("RELEASE tx")
            results.append((job, True, value))
    return results


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def _resolve(job: _Job, ok: bool, value: Any) -> None:
    if job.future.done():
        return
    if ok:
        job.future.set_result(value)
    else:
        job.future.set_exception(value)


def _drain_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the store's commit loop failed", exc_info=exc)
