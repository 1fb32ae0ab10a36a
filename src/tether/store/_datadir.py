"""One server per data directory: an exclusive lock held for the server's whole life.

Two servers writing one SQLite store would each think they own its runs (recovery would start
every run twice). The lock is a ``flock`` on ``DATA_DIR/server.lock``, released by the kernel
when the process ends, even after ``kill -9``; the file names the holder so the refusal can.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from tether.errors import ConflictError

LOCK_FILE = "server.lock"


def lock_data_dir(data_dir: Path, url: str) -> IO[str]:
    """Take the data directory for this process; keep the returned file open while serving.

    Raises:
        ConflictError: another live server holds it (the message names its pid and URL).
    """
    path = data_dir / LOCK_FILE
    handle = open(path, "a+")  # held open for the life of the server
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
    handle.write(f"pid {os.getpid()} at {url}\n")
    handle.flush()
    return handle
