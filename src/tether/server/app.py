"""The server's ASGI app factory: routes, error handlers, and the lifespan that owns the store,
the worker pool, the dispatcher and tracing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether import _json
from tether.dashboard import login
from tether.dashboard import views as dashboard
from tether.server import openapi
from tether.server._access import POLICY
from tether.server._auth import AllowedHosts, AuthMiddleware, HostAllowListMiddleware
from tether.server._origin import SameOriginMiddleware
from tether.server._query import QueryParamsMiddleware
from tether.server.api import access, admin, ingress, internal
from tether.server.api._http import json_response, principal
from tether.server.dispatcher import Dispatcher
from tether.server.errors import HANDLERS
from tether.server.metrics import Metrics
from tether.server.retention import Retention
from tether.server.runtime import Notifier, Runtime
from tether.server.tracing import open_tracing
from tether.server.workers import WorkerPool
from tether.store import Scope, Store, open_store
from tether.store._ops import READY, RUN
from tether.store.base import DEFAULT_LEASE_TIMEOUT

log = logging.getLogger("tether.server")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """How a server runs."""

    data_dir: Path
    """Where SQLite, extracted bundles and worker logs live."""
    runtime_url: str
    """The URL workers use to reach this server."""
    store: str | None = None
    """A store URL; default: SQLite in ``data_dir``."""
    synchronous: str = "FULL"
    """SQLite ``synchronous`` pragma."""
    worker_idle_timeout: float = 300.0
    """Seconds a worker with nothing to do stays up."""
    warm_spares: bool = True
    """Keep a started interpreter ready to become the next worker a deployment needs."""
    import_timeout: float = 60.0
    """Seconds a worker may take to import its app and start (a deploy slower than this is refused)."""
    max_in_flight: int = 256
    """Attempts dispatched at once."""
    require_tokens: bool = False
    """Token mode even while no token exists (the server listens beyond loopback)."""
    allowed_hosts: tuple[str, ...] = ()
    """``Host`` names answered besides the loopback names and ``runtime_url``'s host."""
    retention: float | None = None
    """Seconds a finished run is kept before it is pruned (None: kept forever)."""
    retention_for: tuple[tuple[str, float], ...] = ()
    """``(environment, seconds)``: the runs started through that environment are kept this long instead."""
    node_id: str | None = None
    """This node's id among the nodes sharing a PostgreSQL store (default: a new one)."""
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    """Seconds this node's leases on runs last unless its heartbeat renews them."""
    store_writers: int | None = None
    """PostgreSQL: write batches run at once (None: the backend's default)."""


async def healthz(_: Request) -> Response:
    """``GET /healthz``."""
    return json_response({"ok": True})


async def metrics(request: Request) -> Response:
    """``GET /metrics`` in Prometheus text format: the whole server for an operator token (and
    while no token exists), else only the runs of the token's tenant."""
    rt: Runtime = request.app.state.runtime
    meter: Metrics = request.app.state.metrics
    counts = await rt.store.counts()
    who = principal(request)
    if who.scope is Scope.OPERATOR:
        body = meter.render(counts)
    else:
        body = meter.render_tenant({key: n for key, n in counts.items() if key[0] == who.tenant_id})
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _on_publish(dispatcher: Dispatcher, notifier: Notifier, topic: str, payload: str) -> None:
    """A change published by some node (this one too) on a shared store."""
    if topic == READY:
        dispatcher.poke()
    elif topic == RUN:
        notifier.notify(payload)
    elif topic == "reconnected":
        dispatcher.poke()


async def _heartbeat(store: Store, pool: WorkerPool) -> None:
    """Renew this node's leases and take over the runs of nodes whose leases lapsed, three
    times per lease timeout; a failure (the database away) is retried at the next beat."""
    while True:
        await asyncio.sleep(store.lease_timeout / 3)
        try:
            taken = await store.heartbeat({"alive": len(pool.alive())})
        except Exception:
            log.exception("heartbeat failed; retrying")
            continue
        if taken:
            log.warning("took over %d runs whose node stopped renewing its leases", taken)


def create_app(options: ServerOptions) -> Starlette:
    """Build the server app; the store opens and closes with the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(
            options.store or options.data_dir,
            synchronous=options.synchronous,
            node_id=options.node_id,
            lease_timeout=options.lease_timeout,
            writers=options.store_writers,
        )
        try:
            tracing = open_tracing(journal=store.journal)
        except BaseException:
            await store.close()
            raise
        secret = await store.secret()

        async def on_append(items: list[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
            return await dispatcher.append_batch(items, owner=owner)

        meter = Metrics()
        pool = WorkerPool(
            options.data_dir,
            on_append=on_append,
            idle_timeout=options.worker_idle_timeout,
            warm_spares=options.warm_spares,
            start_timeout=options.import_timeout,
        )
        notifier = Notifier()
        dispatcher = Dispatcher(
            store,
            pool,
            secret=secret,
            runtime_url=options.runtime_url,
            max_in_flight=options.max_in_flight,
            on_change=notifier.notify,
            metrics=meter,
            tracing=tracing,
        )
        runtime = Runtime(store, pool, dispatcher, notifier)
        keep = options.retention_for
        retention = Retention(store, options.retention, dict(keep)) if options.retention or keep else None
        meter.watch(
            lambda: {
                "workers": len(pool.alive()),
                "spares": pool.spares(),
                "cold_starts": pool.cold_starts,
                "attempts": dispatcher.attempts_started,
                "timers": dispatcher.timers_fired,
                "redispatched": dispatcher.stalled_redispatched,
                "pruned": retention.pruned if retention is not None else 0,
                "store_faults": store.backend.faults,
            }
        )
        store.backend.on_commit = meter.commit_transactions.observe
        app.state.metrics = meter
        await store.join(options.runtime_url)
        recovered = await store.recover()
        if recovered:
            log.info("recovering %d runs whose attempts were in flight", recovered)
        app.state.runtime = runtime
        app.state.secret = secret
        store.backend.subscribe(functools.partial(_on_publish, dispatcher, notifier))
        dispatcher.start()
        if retention is not None:
            retention.start()
        heartbeat = asyncio.create_task(_heartbeat(store, pool), name="tether-heartbeat")
        try:
            yield
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if retention is not None:
                await retention.close()
            await dispatcher.close()
            with contextlib.suppress(Exception):
                released = await store.leave()
                if released:
                    log.info("released %d runs in flight to the other nodes", released)
            # After the dispatcher: the attempts it abandoned end their spans first.
            await tracing.close()
            await pool.close()
            await store.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *ingress.ROUTES,
        *admin.ROUTES,
        *access.ROUTES,
        *internal.ROUTES,
        *openapi.ROUTES,
        *login.ROUTES,
        *dashboard.ROUTES,
    ]
    for route in routes:
        for method in (route.methods or set()) - {"HEAD"}:
            if (method, route.path) not in POLICY:
                raise RuntimeError(f"{method} {route.path} has no entry in tether.server._access.POLICY: add one")
    openapi.check_routes(routes)
    hosts = AllowedHosts((*options.allowed_hosts, urllib.parse.urlsplit(options.runtime_url).netloc))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(HostAllowListMiddleware, hosts=hosts),
            Middleware(SameOriginMiddleware),
            Middleware(AuthMiddleware, routes=routes, require_tokens=options.require_tokens),
            Middleware(QueryParamsMiddleware),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.require_tokens = options.require_tokens
    app.state.openapi = openapi.document(routes)
    app.state.openapi_bytes = _json.dumps(app.state.openapi)
    return app
