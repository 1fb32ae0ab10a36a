"""The seam between the store's operations and a database: transactions and cursors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from tether.store.records import Row

T = TypeVar("T")


class Tx(Protocol):
    """A cursor inside one transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        ...


class Backend(ABC):
    """How transactions are run against one database, and the dialect hooks that let several
    nodes share it.

    The store's operations are correct under concurrent writers when each write transaction
    that reads a run's row in order to change the run locks that row first (``for_update``),
    claims skip rows another node holds (``skip_locked``), and every change another node may
    wait for is published (``publish``) in the transaction that makes it. On SQLite, whose one
    writer runs every write transaction serially, these are empty strings and no-ops:
    the hot path (journal appends) pays nothing for them.
    """

    on_commit: Callable[[int], None] | None = None
    """Told how many write transactions each commit held (group commit); may run on any thread."""
    faults: int = 0
    """Operations refused so far for a fault of the store itself (:class:`~tether.errors.StoreUnavailableError`)."""

    shared: bool = False
    """Whether several nodes may use this database at once (it is a server, not a file)."""

    for_update: str = ""
    """Appended to a SELECT of one run's row in a write transaction: locks it until commit."""

    skip_locked: str = ""
    """Appended to a claim's SELECT: takes the rows, skipping those another node holds."""

    def publish(self, tx: Tx, topic: str, payload: str = "") -> None:  # noqa: B027 - a no-op hook
        """Tell every node's :meth:`subscribe` callback, once ``tx`` commits (nothing on SQLite,
        whose only node learns of its own changes directly)."""

    def subscribe(self, callback: Callable[[str, str], None]) -> None:  # noqa: B027 - a no-op hook
        """Call ``callback(topic, payload)`` on the event loop calling this, for every publish
        by any node (including this one); nothing on a backend that is not shared."""

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a transient database failure after which the transaction can run
        again (serialization failure, deadlock, lost connection)."""
        return False

    @abstractmethod
    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a write transaction; its effects are durable when this returns.

        If ``fn`` raises, none of its effects persist and the exception propagates.
        """

    @abstractmethod
    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a consistent snapshot."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release connections."""
