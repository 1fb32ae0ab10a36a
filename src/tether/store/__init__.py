"""Durable storage: a dialect-neutral :class:`Store` over a SQLite or PostgreSQL backend."""

from __future__ import annotations

from pathlib import Path

from tether.store.base import Backend, Deployment, Environment, IssuedToken, Run, Scope, Store, Token


def open_store(url_or_dir: str | Path, *, synchronous: str = "FULL") -> Store:
    """Open the store named by a ``sqlite:///path`` URL or a data directory.

    Raises:
        ValueError: for a URL tether cannot open (PostgreSQL arrives with its backend).
    """
    from tether.store.sqlite import SqliteBackend

    text = str(url_or_dir)
    if text.startswith("sqlite:///"):
        return Store(SqliteBackend(Path(text.removeprefix("sqlite:///")), synchronous=synchronous))
    if "://" in text:
        raise ValueError(f"unsupported store URL {text!r}: use a data directory or sqlite:///PATH")
    return Store(SqliteBackend(Path(text) / "tether.db", synchronous=synchronous))


__all__ = ["Backend", "Deployment", "Environment", "IssuedToken", "Run", "Scope", "Store", "Token", "open_store"]
