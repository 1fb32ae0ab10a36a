"""A bundle worker: serve one deployment's app over the framed link (``python -m tether._worker``).

Started by the runtime from the stored artifact. With ``--expect-stdin`` it first reads, from
standard input, what the deployment was recorded with (``{"files": {path: sha256} | null,
"environment": fingerprint | null}``) and proves it before importing a line of the app: the
folder must hold exactly those files, and this interpreter must have that fingerprint
(:mod:`tether._environment`).

A *warm spare* is started before anyone needs it, on an empty folder and without ``--app``:
it imports tether, computes the environment's fingerprint and then waits on standard input.
When a deployment needs a worker, the runtime fills the folder with the deployment's files and
writes the spec (with ``"app"`` and the bundle's declared ``"env"``); from there on it is an
ordinary worker — the same proof, before the same import — that skipped the interpreter's start.

It prints one line: ``TETHER_WORKER_READY <port> <manifest digest>`` once it listens,
``TETHER_WORKER_REFUSED <json>`` (``{"type": "CodeChanged" | "EnvironmentChanged", "message",
"changes"}``) when the proof fails, or ``TETHER_WORKER_ERROR <message>`` when the app cannot be
loaded; it exits 3 after either of the last two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from tether import _bundle, _environment
from tether._gc import tune_gc
from tether._loader import load_app
from tether.errors import BundleError
from tether.sdk._link import LinkServer


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
    parser.add_argument("--app", default=None, help="module:attribute (a spare reads it from stdin)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--expect-stdin", action="store_true", help="read the snapshot to prove from stdin")
    parser.add_argument("--spare", action="store_true", help="a warm spare: wait for the spec (with the app) on stdin")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)
    # The runtime reads one protocol line from standard output: keep that pipe for it, and send
    # everything else written there (the app's prints at import, and later) to the log.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    environment = _environment.fingerprint(exclude=[str(args.app_dir)])
    if args.spare:
        _warm_up()
    expected = json.loads(sys.stdin.read() or "{}") if args.expect_stdin else {}
    app_ref = args.app if args.app is not None else expected.get("app")
    if not isinstance(app_ref, str):
        print(
            "TETHER_WORKER_ERROR " + json.dumps("no app reference (--app, or 'app' in the spec)"),
            file=protocol,
            flush=True,
        )
        return 3
    refusal = _prove(args.app_dir, expected, environment)
    if refusal is not None:
        print("TETHER_WORKER_REFUSED " + json.dumps(refusal), file=protocol, flush=True)
        return 3
    late_env = expected.get("env")
    if isinstance(late_env, dict):
        # A spare learns the bundle's declared variables only now; the runtime hands over only
        # names no interpreter reads at start-up (see tether.server.workers.LATE_ENV_SAFE).
        os.environ.update({str(k): str(v) for k, v in late_env.items()})
    try:
        app = load_app(args.app_dir, app_ref)
        secret = expected.get("link_secret")
        link = LinkServer(app, environment=environment, secret=secret if isinstance(secret, str) else None)
    except BundleError as exc:
        print("TETHER_WORKER_ERROR " + json.dumps(exc.message), file=protocol, flush=True)
        return 3
    tune_gc()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    print(f"TETHER_WORKER_READY {port} {link.digest}", file=protocol, flush=True)
    protocol.close()
    asyncio.run(_serve(link, sock))
    return 0


def _warm_up() -> None:
    """What every app's load pays for on first use, paid by a spare while it waits: pydantic's
    plugin discovery (a scan of every installed distribution's entry points) and its schema
    machinery."""
    from pydantic import BaseModel, TypeAdapter

    class _Probe(BaseModel):
        value: int = 0

    TypeAdapter(int).json_schema()
    _Probe.model_json_schema()


def _prove(app_dir: Path, expected: dict[str, object], environment: dict[str, object]) -> dict[str, object] | None:
    """Why this worker must not serve the deployment (code or environment differ), or None."""
    files = expected.get("files")
    if isinstance(files, dict):
        problems = _bundle.verify_tree(app_dir, files)
        if problems:
            return {
                "type": "CodeChanged",
                "message": "the unpacked bundle differs from the deployed one: " + _environment.summary(problems),
                "changes": problems,
            }
    recorded = expected.get("environment")
    if isinstance(recorded, dict):
        lines = _environment.changes(recorded, environment)
        if lines:
            return {
                "type": "EnvironmentChanged",
                "message": "the worker's environment differs from the one the deployment was made in: "
                + _environment.summary(lines),
                "changes": lines,
            }
    return None


async def _serve(link: LinkServer, sock: socket.socket) -> None:
    server = await asyncio.start_server(link.handle, sock=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
