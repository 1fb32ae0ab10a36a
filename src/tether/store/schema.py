"""Numbered migrations (``migrations/NNNN_name.sql``) and the version table that tracks them."""

from __future__ import annotations

import sqlite3
from importlib import resources

LATEST = 10


def migrations() -> list[tuple[int, str]]:
    """Every migration as ``(version, sql)``, in order."""
    found = []
    for item in resources.files("tether.store.migrations").iterdir():
        name = item.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), item.read_text()))
    return sorted(found)


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Apply the migrations a SQLite database lacks; return its version afterwards."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = row[0] or 0
    if current > LATEST:
        raise RuntimeError(
            f"the database is at schema version {current}, newer than this tether ({LATEST}): upgrade tether"
        )
    for version, sql in migrations():
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current
