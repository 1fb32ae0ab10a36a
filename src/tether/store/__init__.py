"""Durable storage: a dialect-neutral :class:`Store` over a SQLite or PostgreSQL backend."""

from __future__ import annotations

from pathlib import Path

from tether.store.base import (
    DEFAULT_LEASE_TIMEOUT,
    Backend,
    Deployment,
    Environment,
    IssuedToken,
    Run,
    Scope,
    Store,
    Token,
)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(
    url_or_dir: str | Path,
    *,
    synchronous: str = "FULL",
    node_id: str | None = None,
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    writers: int | None = None,
) -> Store:
    """Open the store named by a ``postgresql://`` or ``sqlite:///path`` URL, or a data directory.

    Args:
        url_or_dir: where the store is.
        synchronous: SQLite's ``synchronous`` pragma (ignored by PostgreSQL).
        node_id: this node's id (default: a new one).
        lease_timeout: seconds this node's leases on runs last unless renewed.
        writers: PostgreSQL: how many write batches run at once, each on its own connection
            (default :data:`tether.store.postgres.WRITERS`); ignored by SQLite, whose one writer
            is the file's.

    Raises:
        ValueError: for a URL tether cannot open.
        StoreUnavailableError: the PostgreSQL database cannot be reached.
    """
    text = str(url_or_dir)
    backend: Backend
    if text.startswith(POSTGRES_SCHEMES):
        try:
            from tether.store.postgres import PostgresBackend
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise ValueError("a PostgreSQL store needs psycopg: pip install 'tether[postgres]'") from None
        backend = PostgresBackend(text) if writers is None else PostgresBackend(text, writers=writers)
    else:
        from tether.store.sqlite import SqliteBackend

        if text.startswith("sqlite:///"):
            backend = SqliteBackend(Path(text.removeprefix("sqlite:///")), synchronous=synchronous)
        elif "://" in text:
            raise ValueError(
                f"unsupported store URL {text!r}: use a data directory, sqlite:///PATH or "
                "postgresql://USER@HOST:PORT/DATABASE"
            )
        else:
            backend = SqliteBackend(Path(text) / "tether.db", synchronous=synchronous)
    return Store(backend, node_id=node_id, lease_timeout=lease_timeout)


__all__ = ["Backend", "Deployment", "Environment", "IssuedToken", "Run", "Scope", "Store", "Token", "open_store"]
