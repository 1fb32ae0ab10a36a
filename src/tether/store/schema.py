"""Numbered migrations (``migrations/NNNN_name.sql``) and the version table that tracks them.

One sequence of versions for every dialect, one ``schema_version`` table. A migration is
written once, in SQL both databases accept, except where the DDL differs: then a sibling
``NNNN_name.postgresql.sql`` holds PostgreSQL's version. Failing that, the few type names
that differ are translated (:func:`postgresql_ddl`).
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

LATEST = 11
DIALECTS = ("sqlite", "postgresql")


def migrations(dialect: str = "sqlite") -> list[tuple[int, str]]:
    """Every migration as ``(version, sql)`` for ``dialect``, in order."""
    if dialect not in DIALECTS:
        raise ValueError(f"no migrations for dialect {dialect!r}")
    shared: dict[int, str] = {}
    special: dict[int, str] = {}
    for item in resources.files("tether.store.migrations").iterdir():
        name = item.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        if name.endswith(".postgresql.sql"):
            special[version] = item.read_text()
        else:
            shared[version] = item.read_text()
    if dialect == "sqlite":
        return sorted(shared.items())
    return sorted((v, special[v] if v in special else postgresql_ddl(sql)) for v, sql in shared.items())


_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
)


def postgresql_ddl(sql: str) -> str:
    """A SQLite migration in PostgreSQL's types: epoch seconds as DOUBLE PRECISION (PostgreSQL's
    REAL has 24 bits), integers as BIGINT, BLOB as BYTEA, autoincrement keys as BIGSERIAL."""
    for pattern, replacement in _TYPES:
        sql = pattern.sub(replacement, sql)
    return sql


def statements(sql: str) -> list[str]:
    """The statements of a migration file (separated by ``;`` at the end of a line)."""
    return [
        s
        for s in sql.split(";\n")
        if s.strip() and not all(line.lstrip().startswith("--") or not line.strip() for line in s.splitlines())
    ]


def check_version(current: int) -> None:
    """Refuse a database newer than this tether.

    Raises:
        RuntimeError: saying to upgrade.
    """
    if current > LATEST:
        raise RuntimeError(
            f"the database is at schema version {current}, newer than this tether ({LATEST}): upgrade tether"
        )


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Apply the migrations a SQLite database lacks; return its version afterwards."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = row[0] or 0
    check_version(current)
    for version, sql in migrations("sqlite"):
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current
