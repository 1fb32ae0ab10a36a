"""A bundle worker: serve one deployment's app on a loopback port (``python -m tether._worker``).

Started by the runtime from the stored artifact. Prints one line, ``TETHER_WORKER_READY
<port> <manifest digest>``, once it listens, or ``TETHER_WORKER_ERROR <message>`` and exits 3
when the app cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from tether._loader import load_app
from tether.errors import BundleError
from tether.sdk.endpoint import create_endpoint


def _exit_with_parent(parent_pid: int) -> None:
    """Exit when the runtime that started us is gone (even after kill -9).

    An orphaned worker would go on executing steps for attempts the restarted runtime has
    already fenced off; exiting promptly keeps side effects to the documented at-least-once.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="tether-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tether._worker")
    parser.add_argument("--app-dir", required=True, type=Path)
    parser.add_argument("--app", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)
    try:
        app = load_app(args.app_dir, args.app)
        endpoint = create_endpoint(app)
    except BundleError as exc:
        print("TETHER_WORKER_ERROR " + json.dumps(exc.message), flush=True)
        return 3
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(endpoint, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    print(f"TETHER_WORKER_READY {port} {app.manifest_digest()}", flush=True)
    # From now on the app's own prints go to the log, never into the runtime's pipe.
    os.dup2(2, 1)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
