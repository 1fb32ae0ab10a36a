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
    """How transactions are run against one database."""

    on_commit: Callable[[int], None] | None = None
    """Told how many write transactions each commit held (group commit); may run on any thread."""
    faults: int = 0
    """Operations refused so far for a fault of the store itself (:class:`~tether.errors.StoreUnavailableError`)."""

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
