"""The PostgreSQL backend: several tether nodes on one database.

The shape is the SQLite backend's group commit: every write transaction of this node is
queued, and a writer takes whatever is queued (up to :data:`MAX_BATCH`) and runs it as one
PostgreSQL transaction, committed once, so throughput is bounded by round trips, not by runs.
:data:`WRITERS` writers, each on its own connection and thread, take batches from the one
queue: while one waits for its COMMIT to be flushed, the next runs. Reads run on a pool of
connections (psycopg-pool), each on a REPEATABLE READ READ ONLY snapshot.

The operations of a batch run straight in its transaction, not one savepoint each (a
savepoint is a round trip and a subtransaction, and PostgreSQL slows every snapshot once a
transaction holds more than 64): when one raises, the transaction is abandoned and the batch
runs again without it, in savepoints this time.

Concurrency with other writers and nodes is PostgreSQL's: READ COMMITTED write transactions
that lock the run rows they change (``SELECT ... FOR UPDATE``), claims that skip rows another
holds (``FOR UPDATE SKIP LOCKED``), and ``NOTIFY`` in the transaction that makes a change
another node waits for, delivered after commit to every node's ``LISTEN`` connection. A batch
that meets a deadlock or serialization failure, or loses its connection before it commits,
runs again (on a new connection, waiting for the database to come back). A COMMIT whose answer
is lost is settled by asking the database whether the transaction (its id is read when it
begins) committed: its operations then either stand or run again, never twice.
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
WRITERS = 2
"""Batches a node runs at once by default (``tether server --store-writers``): two let one batch
run while the other's COMMIT is flushed; more made smaller batches that cost more CPU per run
on a 2-core machine (bench W2: 1 writer 2,708–4,105 steps/s, 2: 3,619–4,221, 4: 2,861–2,942)."""
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


class _Failed(Exception):
    """An operation of a batch raised: the batch runs again without it (``job``; None: the
    culprit is unknown) and with a savepoint per operation."""

    def __init__(self, job: _Job | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.job = job
        self.error = error


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

    def __init__(self, url: str, *, connect_timeout: float = 10.0, writers: int = WRITERS) -> None:
        """Connect to ``url`` (``postgresql://USER@HOST:PORT/DB``), migrating the schema.

        ``writers``: how many write transactions (batches) this node runs at once, each on its
        own connection and thread.

        Raises:
            StoreUnavailableError: the database cannot be reached, naming the URL.
        """
        self.url = url
        self._connect_timeout = connect_timeout
        try:
            first = self._connect()
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                "unreachable", f"cannot open the PostgreSQL store at {_safe(url)}: {exc}".strip()
            ) from None
        try:
            self._migrate(first)
        except BaseException as exc:
            first.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailableError(
                    "unreachable", f"cannot migrate the PostgreSQL store at {_safe(url)}: {exc}"
                ) from None
            raise
        # Each writer's connection; the others connect on their first batch.
        self._writer_conns: list[psycopg.Connection[Any] | None] = [first] + [None] * (max(1, writers) - 1)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._counts = threading.Lock()
        self._writers = [
            threading.Thread(target=self._write_loop, args=(slot,), name=f"tether-pg-writer-{slot}", daemon=True)
            for slot in range(len(self._writer_conns))
        ]
        for thread in self._writers:
            thread.start()
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

    def _write_loop(self, slot: int) -> None:
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
            self._run_batch(slot, jobs)
            if stop:
                return

    def _writer_connection(self, slot: int, deadline: float) -> psycopg.Connection[Any]:
        """Writer ``slot``'s connection, made (waiting for the database) if it is new or was lost."""
        delay = 0.05
        conn = self._writer_conns[slot]
        first = conn is None
        while _lost(conn):
            try:
                conn = self._writer_conns[slot] = self._connect()
                if not first:
                    log.warning("reconnected to the PostgreSQL store")
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self._closing.is_set():
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        assert conn is not None
        return conn

    def _run_batch(self, slot: int, jobs: list[_Job]) -> None:
        deadline = time.monotonic() + RECONNECT_FOR
        tries = 0
        isolate = False
        failed: list[tuple[_Job, bool, Any]] = []
        results: list[tuple[_Job, bool, Any]] = []
        while jobs:
            tries += 1
            try:
                results = self._try_batch(slot, jobs, deadline, isolate)
                break
            except _Failed as refusal:
                # One operation refused (its own error, not the database's): the transaction
                # holds its partial effects, so the batch runs again without it, each operation
                # in a savepoint from now on (a batch runs at most twice for its refusals).
                if refusal.job is not None:
                    failed.append((refusal.job, False, refusal.error))
                    jobs = [job for job in jobs if job is not refusal.job]
                isolate = True
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
        results = failed + results
        with self._counts:
            self.batches += 1
            self.transactions += len(results)
        if self.on_commit is not None:
            self.on_commit(len(results))
        for job, ok, value in results:
            job.loop.call_soon_threadsafe(_resolve, job, ok, value)

    def _try_batch(self, slot: int, jobs: list[_Job], deadline: float, isolate: bool) -> list[tuple[_Job, bool, Any]]:
        """Run ``jobs`` as one transaction and commit it.

        Each operation runs straight in the transaction (a SAVEPOINT per operation costs a
        round trip and a subtransaction, and PostgreSQL slows every snapshot once a transaction
        holds more than 64 of them); with ``isolate``, each in its own savepoint instead, so
        that one refusing rolls back only itself.

        Raises:
            _Failed: an operation raised (without ``isolate``); nothing was committed.
            _Retry: a deadlock, serialization failure or lost connection before COMMIT, or a
                COMMIT whose answer was lost and that PostgreSQL says did not happen.
        """
        conn = self._writer_connection(slot, deadline)
        cursor = _Cursor(conn)
        results: list[tuple[_Job, bool, Any]] = []
        try:
            # The transaction's id, known before COMMIT is sent: if its answer is lost, the
            # database says afterwards whether it committed (pg_xact_status).
            begun = conn.execute(b"BEGIN; SELECT pg_current_xact_id()::text")
            begun.nextset()
            row = begun.fetchone()
            assert row is not None
            xid = str(row[0])
            backend = conn.info.backend_pid
            for job in jobs:
                if isolate:
                    cursor.control("SAVEPOINT tx")
                try:
                    value = job.fn(cursor)
                except BaseException as exc:
                    if is_retryable(exc) or _lost(conn):
                        raise _Retry(exc) from exc
                    if not isolate:
                        # An operation that met a transaction an earlier one broke is not to
                        # blame: the savepoints of the next run find out which one was.
                        blamed = None if isinstance(exc, psycopg.errors.InFailedSqlTransaction) else job
                        raise _Failed(blamed, exc) from exc
                    cursor.control("ROLLBACK TO SAVEPOINT tx")
                    cursor.control("RELEASE SAVEPOINT tx")
                    results.append((job, False, exc))
                else:
                    if isolate:
                        cursor.control("RELEASE SAVEPOINT tx")
                    results.append((job, True, value))
        except (_Retry, _Failed):
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
            lost = _lost(conn)
            self._abandon(conn)
            if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
                raise _Retry(exc) from exc
            if not lost:
                # PostgreSQL answered: the COMMIT failed, and nothing of the batch is stored.
                return [(job, False, exc) for job in jobs]
            # The answer was lost: the COMMIT may or may not have happened. Ask, on a new
            # connection, rather than run the batch twice or fail what was stored.
            if self._committed(slot, xid, backend, deadline, exc):
                return results
            raise _Retry(exc) from exc
        return results

    def _committed(self, slot: int, xid: str, backend: int, deadline: float, cause: BaseException) -> bool:
        """Whether transaction ``xid``, whose COMMIT's answer was lost, committed.

        While it is still in progress (its server process, ``backend``, has not noticed that
        the connection is gone, as in a network partition), that process is ended: the
        transaction then commits or aborts for good, never later.

        Raises:
            psycopg.OperationalError: the database stayed unreachable past ``deadline``.
        """
        delay = 0.01
        while True:
            conn = self._writer_connection(slot, deadline)
            try:
                row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self._closing.is_set():
                    raise
                time.sleep(delay)
                continue
            status = None if row is None else row[0]
            if status == "committed":
                log.warning("the answer to a COMMIT was lost (%s); the transaction had committed", cause)
                return True
            if status == "aborted":
                log.warning("the answer to a COMMIT was lost (%s); the transaction had not committed", cause)
                return False
            if status != "in progress" or time.monotonic() > deadline:
                raise psycopg.OperationalError(f"cannot tell whether transaction {xid} committed ({status})")
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
            time.sleep(delay)
            delay = min(0.5, delay * 2)

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
        for _ in self._writers:
            self._queue.put(None)
        loop = asyncio.get_running_loop()
        for thread in self._writers:
            await loop.run_in_executor(None, thread.join)
        if self._listener is not None:
            await loop.run_in_executor(None, self._listener.join, 5.0)
        self._readers.shutdown(wait=True)
        await loop.run_in_executor(None, self._pool.close)
        for conn in self._writer_conns:
            if conn is not None and not conn.closed:
                conn.close()


def _safe(url: str) -> str:
    """``url`` without its password."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"
