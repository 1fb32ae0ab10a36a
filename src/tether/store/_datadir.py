"""One server per data directory: an exclusive lock held for the server's whole life.

Two servers writing one SQLite store would each think they own its runs (recovery would start
every run twice). The lock is a ``flock`` on ``DATA_DIR/server.lock``, released by the kernel
when the process ends, even after ``kill -9``; the file names the holder so the refusal can.
"""

from __future__ import annotations

import errno
import fcntl
import os
import urllib.parse
from pathlib import Path
from typing import IO

from tether.errors import BadRequestError, ConflictError

LOCK_FILE = "server.lock"


def lock_data_dir(data_dir: Path, url: str) -> IO[str]:
    """Take the data directory for this process; keep the returned file open while serving.

    Raises:
        ConflictError: another live server holds it (the message names its pid, URL and port).
        BadRequestError: the directory cannot be created or written (read-only, not permitted).
    """
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # held open for the life of the server
        database = data_dir / "tether.db"
        if database.exists() and not os.access(database, os.R_OK | os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(database))
    except OSError as exc:
        raise BadRequestError(unwritable(data_dir, exc)) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConflictError(
            f"another tether server ({holder}) already serves {data_dir}: stop it first, or start this one "
            "with another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    port = urllib.parse.urlsplit(url).port
    handle.write(f"pid {os.getpid()} at {url} (port {port})\n")
    handle.flush()
    return handle


def unwritable(data_dir: Path, exc: OSError) -> str:
    """Why the server cannot use ``data_dir``, and what to do."""
    what = "is on a read-only file system" if exc.errno == errno.EROFS else f"cannot be written ({exc.strerror})"
    where = exc.filename or data_dir
    return (
        f"the data directory {data_dir} {what}: {where}. The server keeps its store, bundles and worker logs "
        "there: make it writable, or start with another --data-dir"
    )
