"""The PostgreSQL backend: several tether nodes on one database.

The shape is the SQLite backend's: every write transaction of this node is queued to one
writer thread, which runs whatever is queued (up to :data:`MAX_BATCH`) as one PostgreSQL
transaction, each in its own SAVEPOINT, and commits once (group commit: throughput is bounded
by round trips, not by runs). Reads run on a pool of connections (psycopg-pool), each on a
REPEATABLE READ READ ONLY snapshot.

Concurrency with other nodes is PostgreSQL's: READ COMMITTED write transactions that lock the
run rows they change (``SELECT ... FOR UPDATE``), claims that skip rows another node holds
(``FOR UPDATE SKIP LOCKED``), and ``NOTIFY`` in the transaction that makes a change another
node waits for, delivered after commit to every node's ``LISTEN`` connection. A batch that
meets a deadlock or serialization failure, or loses its connection before it commits, runs
again (on a new connection, waiting for the database to come back); one whose COMMIT was sent
but not acknowledged is failed, never run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from tether.errors import StoreUnavailableError
from tether.store.base import Backend, Row
from tether.store.schema import check_version, migrations, statements

T = TypeVar("T")
MAX_BATCH = 512
READERS = 4
CHANNEL = "tether"
RECONNECT_FOR = 120.0
"""Seconds a node keeps trying to reach a database that went away before failing writes."""
MIGRATION_LOCK = 0x7E7E_0001
"""The advisory lock that serializes migrations when several nodes start at once."""

log = logging.getLogger("tether.store.postgres")


@functools.lru_cache(maxsize=4096)
def _pg(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


_CONTROL = ("SAVEPOINT ", "RELEASE ", "ROLLBACK TO ", "BEGIN", "COMMIT")


class _Cursor:
    """The :class:`tether.store.base.Tx` of a psycopg connection.

    Transaction control (BEGIN, SAVEPOINT, RELEASE, ROLLBACK TO) needs no answer before the
    next statement, so it is held back and sent with it: consecutive control statements travel
    as one simple query (one round trip instead of one each); a batch of many operations, each
    in its savepoint, saves two round trips per operation.
    """

    __slots__ = ("_conn", "_cur", "_pending")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._cur = conn.cursor(row_factory=dict_row)
        self._pending: list[str] = []

    def control(self, sql: str) -> None:
        """Queue a transaction-control statement; it runs before the next statement."""
        self._pending.append(sql)

    def flush(self, then: str | None = None) -> None:
        """Send the queued control statements (and ``then``, a parameterless statement)."""
        if then is not None:
            self._pending.append(then)
        if self._pending:
            statements, self._pending = self._pending, []
            self._conn.execute("; ".join(statements).encode())

    def discard(self) -> None:
        """Forget queued control statements (the transaction is being abandoned)."""
        self._pending.clear()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if not params and sql.startswith(_CONTROL):
            self._pending.append(sql)
            return 0
        self.flush()
        self._cur.execute(_pg(sql), params)
        return self._cur.rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self.flush()
        self._cur.execute(_pg(sql), params)
        row: Row | None = self._cur.fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.flush()
        self._cur.execute(_pg(sql), params)
        rows: list[Row] = list(self._cur.fetchall())
        return rows


@dataclass(slots=True)
class _Job:
    fn: Callable[[_Cursor], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _resolve(job: _Job, ok: bool, value: Any) -> None:
    if job.future.done():
        return
    if ok:
        job.future.set_result(value)
    else:
        job.future.set_exception(value)


def is_retryable(exc: BaseException) -> bool:
    """Whether a transaction that failed with ``exc`` may simply run again."""
    return isinstance(
        exc,
        psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected | psycopg.OperationalError,
    )


def _lost(conn: psycopg.Connection[Any] | None) -> bool:
    return conn is None or conn.closed or conn.broken


class _Retry(Exception):
    """A batch must run again from the start (deadlock, serialization failure, lost connection)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class PostgresBackend(Backend):
    """See the module docstring."""

    shared = True
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        """Connect to ``url`` (``postgresql://USER@HOST:PORT/DB``), migrating the schema.

        Raises:
            StoreUnavailableError: the database cannot be reached, naming the URL.
        """
        self.url = url
        self._connect_timeout = connect_timeout
        try:
            self._writer_conn: psycopg.Connection[Any] | None = self._connect()
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                "unreachable", f"cannot open the PostgreSQL store at {_safe(url)}: {exc}".strip()
            ) from None
        try:
            self._migrate(self._writer_conn)
        except BaseException as exc:
            self._writer_conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailableError(
                    "unreachable", f"cannot migrate the PostgreSQL store at {_safe(url)}: {exc}"
                ) from None
            raise
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="tether-pg-writer", daemon=True)
        self._writer.start()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=READERS,
            kwargs={"connect_timeout": int(connect_timeout)},
            configure=self._configure_reader,
            open=True,
            name="tether-readers",
        )
        self._readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="tether-pg-reader")
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self.batches = 0
        """Commits done (each may hold many transactions)."""
        self.transactions = 0
        """Write transactions committed."""

    def _connect(self) -> psycopg.Connection[Any]:
        # autocommit: the writer sends its own BEGIN (with the batch's first statement), so
        # psycopg must not open a transaction of its own first.
        return psycopg.connect(self.url, autocommit=True, connect_timeout=int(self._connect_timeout))

    @staticmethod
    def _configure_reader(conn: psycopg.Connection[Any]) -> None:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True

    @staticmethod
    def _migrate(conn: psycopg.Connection[Any]) -> int:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0] or 0) if row else 0
            check_version(current)
            for version, sql in migrations("postgresql"):
                if version <= current:
                    continue
                for statement in statements(sql):
                    conn.execute(statement.encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                current = version
        return current

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

    def _writer_connection(self, deadline: float) -> psycopg.Connection[Any]:
        """The writer's connection, made again (waiting for the database) if it was lost."""
        delay = 0.05
        while _lost(self._writer_conn):
            try:
                self._writer_conn = self._connect()
                log.warning("reconnected to the PostgreSQL store")
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self._closing.is_set():
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        assert self._writer_conn is not None
        return self._writer_conn

    def _run_batch(self, jobs: list[_Job]) -> None:
        deadline = time.monotonic() + RECONNECT_FOR
        tries = 0
        while True:
            tries += 1
            try:
                results = self._try_batch(jobs, deadline)
                break
            except _Retry as retry:
                if time.monotonic() > deadline or self._closing.is_set():
                    error = StoreUnavailableError("unreachable", f"the PostgreSQL store failed: {retry.cause}")
                    results = [(job, False, error) for job in jobs]
                    break
                # Deadlocks and serialization failures clear on a retry after a short random pause.
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**tries)))
            except psycopg.OperationalError as exc:
                error = StoreUnavailableError("unreachable", f"the PostgreSQL store is unreachable: {exc}")
                results = [(job, False, error) for job in jobs]
                break
        self.batches += 1
        self.transactions += len(jobs)
        if self.on_commit is not None:
            self.on_commit(len(jobs))
        for job, ok, value in results:
            job.loop.call_soon_threadsafe(_resolve, job, ok, value)

    def _try_batch(self, jobs: list[_Job], deadline: float) -> list[tuple[_Job, bool, Any]]:
        conn = self._writer_connection(deadline)
        cursor = _Cursor(conn)
        results: list[tuple[_Job, bool, Any]] = []
        try:
            cursor.control("BEGIN")
            for job in jobs:
                cursor.control("SAVEPOINT tx")
                try:
                    value = job.fn(cursor)
                except BaseException as exc:
                    if is_retryable(exc) or _lost(conn):
                        raise _Retry(exc) from exc
                    cursor.control("ROLLBACK TO SAVEPOINT tx")
                    cursor.control("RELEASE SAVEPOINT tx")
                    results.append((job, False, exc))
                else:
                    cursor.control("RELEASE SAVEPOINT tx")
                    results.append((job, True, value))
        except _Retry:
            cursor.discard()
            self._abandon(conn)
            raise
        except psycopg.Error as exc:
            cursor.discard()
            self._abandon(conn)
            if is_retryable(exc) or _lost(conn):
                raise _Retry(exc) from exc
            return [(job, False, exc) for job in jobs]
        try:
            # The last RELEASE travels with the COMMIT: one round trip.
            cursor.flush(then="COMMIT")
        except psycopg.Error as exc:
            # The COMMIT may or may not have happened: running the batch again could apply it
            # twice, so its callers are told it failed (a retried append is acknowledged).
            self._abandon(conn)
            if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
                raise _Retry(exc) from exc
            error = StoreUnavailableError("unreachable", f"the PostgreSQL store failed while committing: {exc}")
            return [(job, False, error) for job in jobs]
        return results

    @staticmethod
    def _abandon(conn: psycopg.Connection[Any]) -> None:
        if not _lost(conn):
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    async def write(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, loop, future))
        return await future

    # --- reads ------------------------------------------------------------------------

    def _read(self, fn: Callable[[Any], T]) -> T:
        deadline = time.monotonic() + RECONNECT_FOR
        delay = 0.05
        while True:
            try:
                with self._pool.connection() as conn:
                    return fn(_Cursor(conn))
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or self._closing.is_set():
                    raise StoreUnavailableError("unreachable", f"the PostgreSQL store is unreachable: {exc}") from None
                self._pool.check()
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    async def read(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, fn)

    # --- wake-ups across nodes ----------------------------------------------------------

    def publish(self, tx: Any, topic: str, payload: str = "") -> None:
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{topic}\t{payload}"))

    def subscribe(self, callback: Callable[[str, str], None]) -> None:
        loop = asyncio.get_running_loop()

        def deliver(topic: str, payload: str) -> None:
            loop.call_soon_threadsafe(callback, topic, payload)

        self._listener = threading.Thread(target=self._listen, args=(deliver,), name="tether-pg-listen", daemon=True)
        self._listener.start()

    def _listen(self, deliver: Callable[[str, str], None]) -> None:
        delay = 0.05
        first = True
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=int(self._connect_timeout)) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        # Whatever was published while we were away: look at everything again.
                        deliver("ready", "")
                        deliver("reconnected", "")
                    first = False
                    delay = 0.05
                    while not self._closing.is_set():
                        for note in conn.notifies(timeout=0.5):
                            topic, _, payload = note.payload.partition("\t")
                            deliver(topic, payload)
            except psycopg.Error as exc:
                if self._closing.is_set():
                    return
                log.warning("lost the PostgreSQL notification connection (%s); reconnecting", exc)
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    async def close(self) -> None:
        self._closing.set()
        self._queue.put(None)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._writer.join)
        if self._listener is not None:
            await loop.run_in_executor(None, self._listener.join, 5.0)
        self._readers.shutdown(wait=True)
        await loop.run_in_executor(None, self._pool.close)
        if self._writer_conn is not None and not self._writer_conn.closed:
            self._writer_conn.close()


def _safe(url: str) -> str:
    """``url`` without its password."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"
