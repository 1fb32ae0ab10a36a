"""``tether server``: the runtime with its embedded store, on one loopback port by default."""

from __future__ import annotations

import asyncio
import compileall
import ipaddress
import logging
import socket
import sys
from pathlib import Path

import click
import uvicorn

import tether
from tether._gc import tune_gc
from tether.errors import BadRequestError, ConflictError
from tether.server.app import ServerOptions, create_app
from tether.server.retention import parse_duration, parse_override
from tether.store import POSTGRES_SCHEMES, _backup, open_store
from tether.store._datadir import lock_data_dir
from tether.store.base import DEFAULT_LEASE_TIMEOUT

GIL_SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while another waits for it (see ``sys.setswitchinterval``)."""


def compile_tether() -> None:
    """Compile tether's own modules to bytecode, where they are not yet (best effort).

    Every worker cold start imports tether from this installation, and workers never write
    bytecode (their folder must stay exactly as deployed). A wheel install comes compiled; an
    editable checkout does not, and then each cold start compiled ~80 modules again (~120 ms
    here). Up-to-date files are skipped; a read-only installation is left as it is.
    """
    compileall.compile_dir(Path(tether.__file__).parent, quiet=2)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tokens_exist(where: str | Path) -> bool:
    async def check() -> bool:
        store = open_store(where)
        try:
            return await store.any_tokens()
        finally:
            await store.close()

    return asyncio.run(check())


def _reachable(url: str) -> str | None:
    """Why the PostgreSQL store at ``url`` cannot be opened (None: it can), checked before the
    server says it listens."""
    from tether.errors import StoreUnavailableError

    async def check() -> None:
        store = open_store(url)
        await store.close()

    try:
        asyncio.run(check())
    except (StoreUnavailableError, ValueError, RuntimeError) as exc:
        return f"{exc}. Start PostgreSQL (scripts/postgres start prints a URL) or fix --store"
    return None


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".tether"),
    show_default=True,
    help="Where the SQLite store, bundles and worker logs live.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7070, show_default=True, help="Port to listen on (0: any free port).")
@click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    help="Store URL: postgresql://USER@HOST:PORT/DB lets several nodes share one database "
    "(default: SQLite in --data-dir).",
)
@click.option(
    "--node-id",
    default=None,
    help="This node's id among the nodes sharing a PostgreSQL store (default: host name and a random "
    "suffix). A node restarted under the same id takes its runs back at once.",
)
@click.option(
    "--lease-timeout",
    default=DEFAULT_LEASE_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds a node's lease on a running run lasts unless renewed; another node takes the run "
    "over once it lapses.",
)
@click.option(
    "--store-writers",
    default=None,
    type=click.IntRange(min=1, max=16),
    metavar="N",
    help="PostgreSQL: write batches this node runs at once, each on its own connection (default 2).",
)
@click.option(
    "--synchronous",
    type=click.Choice(["FULL", "NORMAL"], case_sensitive=False),
    default="FULL",
    show_default=True,
    help="SQLite durability: FULL fsyncs every group commit.",
)
@click.option(
    "--worker-idle-timeout",
    default=300.0,
    show_default=True,
    help="Seconds an idle bundle worker stays up before it exits.",
)
@click.option(
    "--warm-spares/--no-warm-spares",
    default=True,
    show_default=True,
    help="Keep one started interpreter per isolation tier ready to become the next worker a deployment "
    "needs (a cold wake then skips Python's start and tether's imports).",
)
@click.option(
    "--import-timeout",
    default=60.0,
    show_default=True,
    help="Seconds a worker may take to import its app and start; a deploy that takes longer is refused (400).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME[:PORT]",
    help="Also answer requests for this Host (repeatable); loopback names always. Others get 421.",
)
@click.option(
    "--retention",
    default=None,
    metavar="DURATION",
    help="Prune runs this long after they end (30d, 12h, 15m, 60s): their journals, signals and state; "
    "the audit log stays. Default: keep forever.",
)
@click.option(
    "--retention-for",
    "retention_for",
    multiple=True,
    metavar="ENV=DURATION",
    help="Keep the runs started through environment ENV this long instead (repeatable), e.g. prod=90d.",
)
@click.option("--log-level", default="warning", show_default=True, help="Server log level.")
def server(
    data_dir: Path,
    host: str,
    port: int,
    store_url: str | None,
    node_id: str | None,
    lease_timeout: float,
    store_writers: int | None,
    synchronous: str,
    worker_idle_timeout: float,
    warm_spares: bool,
    import_timeout: float,
    allowed_hosts: tuple[str, ...],
    retention: str | None,
    retention_for: tuple[str, ...],
    log_level: str,
) -> None:
    """Run the tether runtime: API, scheduler, dispatcher and workers.

    While no API token exists the server listens on loopback only and trusts every request;
    once one exists (tether tokens create), every request needs a token. See docs/security.md.
    """
    try:
        keep = None if retention is None else parse_duration(retention)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention") from None
    try:
        keep_for = tuple(parse_override(text) for text in retention_for)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention-for") from None
    if store_writers is not None and not (store_url or "").startswith(POSTGRES_SCHEMES):
        raise click.BadParameter(
            "applies to a PostgreSQL store only (--store postgresql://...); SQLite has one writer, the file's",
            param_hint="--store-writers",
        )
    loopback = is_loopback(host)
    if not loopback and not _tokens_exist(store_url or data_dir):
        raise click.UsageError(
            f"refusing to listen on {host}: no API token exists, so anyone who reaches the port could deploy "
            "and run code. Create one first (tether tokens create --data-dir DIR --tenant default --scope operator), "
            "or listen on --host 127.0.0.1. See docs/security.md."
        )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from None
    sock.listen(2048)
    actual = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{actual}"
    try:
        held = lock_data_dir(data_dir, url)
    except (ConflictError, BadRequestError) as exc:
        raise click.ClickException(exc.message) from None
    database = data_dir / _backup.DATABASE
    if store_url is None and database.exists() and (problem := _backup.damage(database)) is not None:
        held.close()
        raise click.ClickException(
            f"the store at {database} is damaged ({problem}): refusing to start on it. Restore a backup "
            "('tether restore BACKUP --data-dir DIR'), or move the damaged file away to start empty"
        )
    app = create_app(
        ServerOptions(
            data_dir=data_dir.resolve(),
            runtime_url=url,
            store=store_url,
            synchronous=synchronous.upper(),
            worker_idle_timeout=worker_idle_timeout,
            warm_spares=warm_spares,
            import_timeout=import_timeout,
            require_tokens=not loopback,
            allowed_hosts=allowed_hosts,
            retention=keep,
            retention_for=keep_for,
            node_id=node_id,
            lease_timeout=lease_timeout,
            store_writers=store_writers,
        )
    )
    # The store commits on a thread while the event loop runs Python: a thread that wants the
    # GIL back waits at most this long (CPython's default, 5 ms, held every commit back).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    config = uvicorn.Config(app, log_level=log_level.lower(), access_log=False, lifespan="on")
    compile_tether()
    tune_gc()
    if store_url is not None and store_url.startswith(POSTGRES_SCHEMES):
        problem = _reachable(store_url)
        if problem is not None:
            held.close()
            raise click.ClickException(problem)
    click.echo(f"tether server listening on {url} (data in {data_dir.resolve()})", err=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        held.close()
