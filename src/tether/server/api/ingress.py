"""Ingress: start runs, read their results and state, send signals."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.errors import BadRequestError
from tether.server import queries
from tether.server.api._http import (
    actor,
    float_param,
    idempotency_key,
    json_response,
    page_request,
    page_response,
    read_json,
    runtime,
    tenant,
)


async def start_in_env(request: Request) -> Response:
    """``POST /v1/envs/{env}/workflows/{name}/runs``: body is the input object."""
    return await _start(request, env=request.path_params["env"], deployment=None)


async def start_on_deployment(request: Request) -> Response:
    """``POST /v1/deployments/{dep}/workflows/{name}/runs``."""
    return await _start(request, env=None, deployment=request.path_params["dep"])


async def _start(request: Request, *, env: str | None, deployment: str | None) -> Response:
    """Start a run; with ``?wait=SECONDS`` answer once it ended (or the wait is over)."""
    wait = float_param(request, "wait", 0.0, low=0, high=3600)
    body = await read_json(request, default={})
    rt = runtime(request)
    run, created = await rt.start_run(
        tenant(request),
        request.path_params["name"],
        body,
        env=env,
        deployment=deployment,
        idempotency_key=idempotency_key(request),
    )
    if wait > 0:
        run = await rt.result(tenant(request), run.id, wait, known=run)
    return json_response(run.to_json(), 201 if created else 200)


async def get_run(request: Request) -> Response:
    """``GET /v1/runs/{id}``."""
    run = await runtime(request).store.get_run(tenant(request), request.path_params["id"])
    return json_response(run.to_json())


async def get_result(request: Request) -> Response:
    """``GET /v1/runs/{id}/result?wait=SECONDS``: the run once it ended, or as it is after the wait."""
    wait = float_param(request, "wait", 0.0, low=0, high=3600)
    run = await runtime(request).result(tenant(request), request.path_params["id"], wait)
    return json_response(run.to_json())


async def signal(request: Request) -> Response:
    """``POST /v1/runs/{id}/signals/{name}``: body is the payload.

    ``202`` when delivered or buffered; ``200`` when its ``Idempotency-Key`` already delivered
    this very signal (``"duplicate": true``, nothing delivered again).
    """
    key = idempotency_key(request)
    payload = await read_json(request, default=None)
    answer = await runtime(request).signal(
        tenant(request),
        request.path_params["id"],
        request.path_params["name"],
        payload,
        idempotency_key=key,
        sent_by=actor(request),
    )
    return json_response(answer, 200 if answer["duplicate"] else 202)


async def state(request: Request) -> Response:
    """``GET /v1/runs/{id}/state``."""
    return json_response(await runtime(request).store.run_state(tenant(request), request.path_params["id"]))


async def journal(request: Request) -> Response:
    """``GET /v1/runs/{id}/journal?limit=&cursor=&from=``: the entries by index, a page at a time
    (1,000 by default); ``from`` starts the first page at that index instead of the first."""
    run_id = request.path_params["id"]
    limit, after = page_request(request, f"journal:{run_id}", (int,), default=1000, high=10_000)
    start = request.query_params.get("from")
    if start is not None and after is not None:
        raise BadRequestError("give either from (the first page) or cursor (the pages after it), not both")
    if start is not None and not start.isdigit():
        raise BadRequestError(f"from is the index of the first entry (0 or more), not {start!r}")
    last_seen = int(after[0]) if after is not None else (int(start) - 1 if start is not None else None)
    entries = await runtime(request).store.journal(tenant(request), run_id, after=last_seen, limit=limit + 1)
    return page_response("entries", f"journal:{run_id}", entries, limit, lambda e: (e.index,), lambda e: e.to_json())


async def signals(request: Request) -> Response:
    """``GET /v1/runs/{id}/signals?limit=&cursor=``: the signals sent to the run, oldest first,
    when each arrived and the entry that took it, a page at a time."""
    run_id = request.path_params["id"]
    limit, after = page_request(request, f"signals:{run_id}", (int,), default=1000, high=10_000)
    found = await runtime(request).store.signals(
        tenant(request), run_id, after=None if after is None else int(after[0]), limit=limit + 1
    )
    return page_response("signals", f"signals:{run_id}", found, limit, lambda s: (s["id"],), lambda s: s)


async def query(request: Request) -> Response:
    """``POST /v1/runs/{id}/queries/{name}``: body is the query's input object (or empty).

    Answered by the run's pinned deployment from its journal; the run is not changed.
    """
    payload = await read_json(request, default=None)
    answer = await queries.query(
        runtime(request), tenant(request), request.path_params["id"], request.path_params["name"], payload
    )
    return json_response(answer)


ROUTES = [
    Route("/v1/envs/{env}/workflows/{name}/runs", start_in_env, methods=["POST"]),
    Route("/v1/deployments/{dep}/workflows/{name}/runs", start_on_deployment, methods=["POST"]),
    Route("/v1/runs/{id}", get_run, methods=["GET"]),
    Route("/v1/runs/{id}/result", get_result, methods=["GET"]),
    Route("/v1/runs/{id}/signals", signals, methods=["GET"]),
    Route("/v1/runs/{id}/signals/{name}", signal, methods=["POST"]),
    Route("/v1/runs/{id}/state", state, methods=["GET"]),
    Route("/v1/runs/{id}/journal", journal, methods=["GET"]),
    Route("/v1/runs/{id}/queries/{name}", query, methods=["POST"]),
]
