"""Backups of the embedded SQLite store: an online copy, a checked restore, a check at start.

The copy uses SQLite's online backup API from a separate connection, so it can run while a
server writes: it copies one consistent snapshot (WAL mode lets it read while the writer
commits). A restore refuses a damaged backup and a data directory a live server holds, and
keeps the database it replaces. Extracted bundles and per-deployment environments are not part
of a backup: they are rebuilt from the artifacts and locks the database holds.
"""

from __future__ import annotations

import fcntl
import shutil
import sqlite3
import time
from pathlib import Path

from tether.errors import BadRequestError, ConflictError
from tether.store._datadir import LOCK_FILE

DATABASE = "tether.db"


def damage(path: Path) -> str | None:
    """Why the database at ``path`` cannot be trusted (SQLite's ``quick_check``), or None.

    A torn write-ahead log or a damaged page would otherwise surface later as lost or garbled
    runs; refusing at start says so while a backup can still be restored.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows)


def backup(data_dir: Path, target: Path) -> int:
    """Copy the store of ``data_dir`` to ``target`` (a new file), online; its size in bytes.

    Raises:
        BadRequestError: there is no store, or ``target`` exists.
    """
    source = data_dir / DATABASE
    if not source.is_file():
        raise BadRequestError(f"there is no tether store at {source}: name the server's --data-dir")
    if target.exists():
        raise BadRequestError(f"{target} exists: back up to a new file")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(target.name + ".partial")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30.0)
    dst = sqlite3.connect(scratch)
    try:
        src.backup(dst, pages=1024)
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        dst.close()
        src.close()
    problem = damage(scratch)
    if problem is not None:
        scratch.unlink()
        raise BadRequestError(f"the copy failed its check ({problem}): the store itself may be damaged")
    scratch.rename(target)
    return target.stat().st_size


def restore(source: Path, data_dir: Path) -> Path | None:
    """Make the backup ``source`` the store of ``data_dir``; where the replaced store went, if any.

    Raises:
        BadRequestError: ``source`` is missing or damaged.
        ConflictError: a server is running on ``data_dir``.
    """
    if not source.is_file():
        raise BadRequestError(f"there is no backup at {source}")
    problem = damage(source)
    if problem is not None:
        raise BadRequestError(f"the backup at {source} is damaged ({problem}): restore another one")
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(f"a tether server is running on {data_dir}: stop it, then restore") from None
        kept = None
        if (data_dir / DATABASE).exists():
            kept = data_dir / f"{DATABASE}.before-restore-{int(time.time())}"
            kept.mkdir()
            for suffix in ("", "-wal", "-shm"):
                old = data_dir / (DATABASE + suffix)
                if old.exists():
                    old.rename(kept / old.name)
        scratch = data_dir / (DATABASE + ".restoring")
        shutil.copyfile(source, scratch)
        scratch.rename(data_dir / DATABASE)
    return kept
