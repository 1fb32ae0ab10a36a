"""Admin: deployments, environments, runs, audit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tether import _json
from tether.core.status import RunStatus
from tether.errors import BadRequestError, TetherError
from tether.server.api._http import (
    actor,
    json_response,
    page_request,
    page_response,
    read_body,
    read_json,
    read_object,
    runtime,
    tenant,
    whole_number,
)
from tether.server.runtime import MAX_BUNDLE_BYTES
from tether.store._runs import run_key
from tether.store.base import Deployment
from tether.store.records import Environment, Run

REASON_BODY = '{"reason": "..."}, or no body'


async def create_deployment(request: Request) -> Response:
    """``POST /v1/deployments?env=E&app=module:attr``: the body is the bundle (``.tar.gz``).

    Answers 201 with a new deployment, 200 when identical content was deployed before. With
    ``Accept: application/x-ndjson`` the answer streams the environment build's progress as
    it happens: ``{"log": line}`` lines, then one ``{"status": 201|200, "deployment": {...}}``
    or ``{"status": 4xx, "error": {...}}`` line (the HTTP status is then 200).
    """
    env = request.query_params.get("env") or None
    if request.headers.get("content-type", "").startswith("application/json"):
        # A JSON body registers a user-hosted endpoint: {"url": ..., "secret": ...}.
        body = await read_json(request)
        url, secret = _str_field(body, "url"), _str_field(body, "secret")
        if url is None or secret is None:
            raise BadRequestError('register an endpoint with {"url": URL, "secret": SECRET}')
        deployment, created = await runtime(request).register(
            tenant(request), url, secret=secret, env=env, actor=actor(request)
        )
        return json_response(_deployed(deployment, created, env), 201 if created else 200)
    data = await read_body(request, MAX_BUNDLE_BYTES)
    rt, tenant_id, who = runtime(request), tenant(request), actor(request)
    app_ref = request.query_params.get("app") or None
    isolation = request.query_params.get("isolation") or None
    if "application/x-ndjson" not in request.headers.get("accept", ""):
        deployment, created = await rt.deploy(tenant_id, data, app_ref=app_ref, env=env, actor=who, isolation=isolation)
        return json_response(_deployed(deployment, created, env), 201 if created else 200)

    async def stream() -> AsyncIterator[bytes]:
        lines: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.create_task(
            rt.deploy(
                tenant_id, data, app_ref=app_ref, env=env, actor=who, progress=lines.put_nowait, isolation=isolation
            )
        )
        try:
            while not task.done() or not lines.empty():
                getter = asyncio.ensure_future(lines.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield _json.dumps({"log": getter.result()}) + b"\n"
                else:
                    getter.cancel()
            try:
                deployment, created = task.result()
            except TetherError as exc:
                yield _json.dumps({"status": exc.status, **exc.to_json()}) + b"\n"
                return
            yield _json.dumps({"status": 201 if created else 200, "deployment": _deployed(deployment, created, env)})
            yield b"\n"
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    return StreamingResponse(stream(), media_type="application/x-ndjson")


def _deployed(deployment: Deployment, created: bool, env: str | None) -> dict[str, Any]:
    body = deployment.to_json()
    body["created"] = created
    body["env"] = env
    return body


async def list_deployments(request: Request) -> Response:
    """``GET /v1/deployments?limit=&cursor=``: oldest first, a page at a time."""
    limit, after = page_request(request, "deployments", (int,), default=100, high=1000)
    items = await runtime(request).deployments(
        tenant(request), after=None if after is None else int(after[0]), limit=limit + 1
    )
    # A label is "v" and the tenant's sequence number of the deployment (the list's order).
    return page_response("deployments", "deployments", items, limit, lambda d: (int(d["label"][1:]),), lambda d: d)


async def get_deployment(request: Request) -> Response:
    """``GET /v1/deployments/{dep}`` (id or label)."""
    return json_response(await runtime(request).deployment(tenant(request), request.path_params["dep"]))


async def delete_deployment(request: Request) -> Response:
    """``DELETE /v1/deployments/{dep}``: refused (409) unless drained."""
    dep = await runtime(request).remove(tenant(request), request.path_params["dep"], actor(request))
    return json_response(dep.to_json())


async def diff_deployments(request: Request) -> Response:
    """``GET /v1/deployments/{a}/diff/{b}``."""
    rt = runtime(request)
    return json_response(await rt.diff(tenant(request), request.path_params["a"], request.path_params["b"]))


async def list_envs(request: Request) -> Response:
    """``GET /v1/envs?limit=&cursor=``: by name, a page at a time."""
    limit, after = page_request(request, "envs", (str,), default=100, high=1000)
    envs = await runtime(request).store.list_envs(
        tenant(request), after=None if after is None else str(after[0]), limit=limit + 1
    )

    def key(env: Environment) -> tuple[str]:
        return (env.name,)

    return page_response("environments", "envs", envs, limit, key, lambda e: e.to_json())


def _targets(body: Any) -> list[tuple[str, int]]:
    if isinstance(body, dict) and isinstance(body.get("deployment"), str):
        return [(body["deployment"], 100)]
    if isinstance(body, dict) and isinstance(body.get("targets"), list):
        out = []
        for item in body["targets"]:
            if not isinstance(item, dict) or not isinstance(item.get("deployment"), str):
                raise BadRequestError('each target is {"deployment": "v3", "weight": 90}')
            weight = whole_number(item.get("weight", 100))
            if weight is None:
                raise BadRequestError("a target's weight must be a positive integer")
            out.append((item["deployment"], weight))
        return out
    raise BadRequestError('set an environment with {"deployment": "v3"} or {"targets": [{"deployment", "weight"}]}')


async def put_env(request: Request) -> Response:
    """``PUT /v1/envs/{env}``: ``{"deployment": ref}`` or ``{"targets": [...]}``, optional ``reason``."""
    body = await read_object(request, what='{"deployment": "v3"} or {"targets": [{"deployment", "weight"}]}')
    reason = _str_field(body, "reason")
    env = await runtime(request).set_env(
        tenant(request), request.path_params["env"], _targets(body), actor=actor(request), reason=reason
    )
    return json_response(env.to_json())


async def promote_env(request: Request) -> Response:
    """``POST /v1/envs/{env}/promote``: ``{"from": SOURCE}``, optional ``reason``."""
    body = await read_object(request, what='{"from": "staging"}')
    source = _str_field(body, "from")
    if source is None:
        raise BadRequestError('name the environment to promote from: {"from": "staging"}')
    reason = _str_field(body, "reason")
    env = await runtime(request).promote_env(
        tenant(request), request.path_params["env"], source, actor=actor(request), reason=reason
    )
    return json_response(env.to_json())


async def rollback_env(request: Request) -> Response:
    """``POST /v1/envs/{env}/rollback``."""
    body = await read_object(request, what=REASON_BODY, default={})
    reason = _str_field(body, "reason")
    env = await runtime(request).store.rollback_env(
        tenant(request), request.path_params["env"], actor=actor(request), reason=reason
    )
    return json_response(env.to_json())


async def env_history(request: Request) -> Response:
    """``GET /v1/envs/{env}/history?limit=&cursor=``, newest first, a page at a time."""
    name = request.path_params["env"]
    limit, after = page_request(request, f"history:{name}", (int,), default=100, high=1000)
    history = await runtime(request).store.env_history(
        tenant(request), name, before=None if after is None else int(after[0]), limit=limit + 1
    )
    return page_response("history", f"history:{name}", history, limit, lambda h: (h["id"],), lambda h: h)


async def list_runs(request: Request) -> Response:
    """``GET /v1/runs?status=&workflow=&deployment=&env=&node=&limit=&cursor=``: stuck first,
    then newest first, a page at a time."""
    rt = runtime(request)
    params = request.query_params
    status = params.get("status")
    if status is not None and status not in {s.value for s in RunStatus}:
        raise BadRequestError(f"unknown status {status!r}; use one of {', '.join(s.value for s in RunStatus)}")
    deployment_id = None
    if params.get("deployment"):
        deployment_id = (await rt.store.get_deployment(tenant(request), params["deployment"])).id
    limit, after = page_request(request, "runs", (int, float, str), default=100, high=10_000)
    runs = await rt.store.list_runs(
        tenant(request),
        status=status,
        workflow=params.get("workflow"),
        deployment_id=deployment_id,
        env=params.get("env"),
        node=params.get("node"),
        limit=limit + 1,
        after=after,
    )

    def render(run: Run) -> dict[str, Any]:
        return run.to_json()

    return page_response("runs", "runs", runs, limit, run_key, render)


async def cancel_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/cancel`` with optional ``{"reason": ...}``; audited."""
    body = await read_object(request, what=REASON_BODY, default={})
    reason = _str_field(body, "reason")
    run = await runtime(request).cancel(tenant(request), request.path_params["id"], actor=actor(request), reason=reason)
    return json_response(run.to_json())


def _str_field(body: Any, key: str) -> str | None:
    value = body.get(key) if isinstance(body, dict) else None
    if value is not None and not isinstance(value, str):
        raise BadRequestError(f"{key} must be a string")
    return value


async def _act(request: Request, action: str) -> Response:
    body = await read_object(request, what=REASON_BODY, default={})
    rt, run_id = runtime(request), request.path_params["id"]
    who, why = actor(request), _str_field(body, "reason")
    handlers = {"pause": rt.pause, "resume": rt.resume, "kill": rt.kill}
    run = await handlers[action](tenant(request), run_id, actor=who, reason=why)
    return json_response(run.to_json())


async def pause_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/pause`` with optional ``{"reason"}``; audited."""
    return await _act(request, "pause")


async def resume_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/resume`` with optional ``{"reason"}``; audited."""
    return await _act(request, "resume")


async def kill_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/kill`` with optional ``{"reason"}``; audited."""
    return await _act(request, "kill")


async def restart_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/restart`` with optional ``{"env" | "deployment", "reason"}``; audited."""
    body = await read_object(request, what='{"env" | "deployment", "reason"} (all optional)', default={})
    run = await runtime(request).restart(
        tenant(request),
        request.path_params["id"],
        env=_str_field(body, "env"),
        deployment=_str_field(body, "deployment"),
        actor=actor(request),
        reason=_str_field(body, "reason"),
    )
    return json_response(run.to_json(), 201)


async def fork_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/fork`` with ``{"from_entry": N, "deployment"?, "reason"?}``; audited."""
    body = await read_object(request, what='{"from_entry": N}')
    from_entry = whole_number(body.get("from_entry"))
    if from_entry is None:
        raise BadRequestError('fork needs {"from_entry": N}: the number of journal entries to keep')
    run = await runtime(request).fork(
        tenant(request),
        request.path_params["id"],
        from_entry=from_entry,
        deployment=_str_field(body, "deployment"),
        actor=actor(request),
        reason=_str_field(body, "reason"),
    )
    return json_response(run.to_json(), 201)


async def move_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/move`` with ``{"to": dep, "force"?: bool, "reason"?}``: refused (409)
    with the mismatch unless a dry run of the journal on ``to`` succeeds; audited."""
    body = await read_object(request, what='{"to": DEPLOYMENT}')
    to = _str_field(body, "to")
    if to is None:
        raise BadRequestError('move needs {"to": DEPLOYMENT}')
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadRequestError("force must be true or false")
    run = await runtime(request).move(
        tenant(request),
        request.path_params["id"],
        to,
        force=force,
        actor=actor(request),
        reason=_str_field(body, "reason"),
    )
    return json_response(run.to_json())


async def check_deployment(request: Request) -> Response:
    """``POST /v1/deployments/{dep}/check`` with optional ``{"workflow", "runs": [ids]}``: dry-run
    the journal of every in-flight run (or those named) on the deployment."""
    body = await read_object(request, what='{"workflow"?, "runs"?: [ids]}', default={})
    runs = body.get("runs")
    if runs is not None and not (isinstance(runs, list) and all(isinstance(r, str) for r in runs)):
        raise BadRequestError("runs must be a list of run ids")
    result = await runtime(request).check(
        tenant(request), request.path_params["dep"], workflow=_str_field(body, "workflow"), run_ids=runs
    )
    return json_response(result)


async def audit(request: Request) -> Response:
    """``GET /v1/audit?limit=&target=&cursor=``, newest first, a page at a time."""
    limit, after = page_request(request, "audit", (int,), default=200, high=10_000)
    target = request.query_params.get("target") or None
    records = await runtime(request).store.audit(
        tenant(request), limit + 1, target=target, before=None if after is None else int(after[0])
    )
    return page_response("audit", "audit", records, limit, lambda r: (r["id"],), lambda r: r)


ROUTES = [
    Route("/v1/deployments", create_deployment, methods=["POST"]),
    Route("/v1/deployments", list_deployments, methods=["GET"]),
    Route("/v1/deployments/{dep}", get_deployment, methods=["GET"]),
    Route("/v1/deployments/{dep}", delete_deployment, methods=["DELETE"]),
    Route("/v1/deployments/{a}/diff/{b}", diff_deployments, methods=["GET"]),
    Route("/v1/envs", list_envs, methods=["GET"]),
    Route("/v1/envs/{env}", put_env, methods=["PUT"]),
    Route("/v1/envs/{env}/promote", promote_env, methods=["POST"]),
    Route("/v1/envs/{env}/rollback", rollback_env, methods=["POST"]),
    Route("/v1/envs/{env}/history", env_history, methods=["GET"]),
    Route("/v1/runs", list_runs, methods=["GET"]),
    Route("/v1/runs/{id}/cancel", cancel_run, methods=["POST"]),
    Route("/v1/runs/{id}/pause", pause_run, methods=["POST"]),
    Route("/v1/runs/{id}/resume", resume_run, methods=["POST"]),
    Route("/v1/runs/{id}/kill", kill_run, methods=["POST"]),
    Route("/v1/runs/{id}/restart", restart_run, methods=["POST"]),
    Route("/v1/runs/{id}/fork", fork_run, methods=["POST"]),
    Route("/v1/runs/{id}/move", move_run, methods=["POST"]),
    Route("/v1/deployments/{dep}/check", check_deployment, methods=["POST"]),
    Route("/v1/audit", audit, methods=["GET"]),
]
