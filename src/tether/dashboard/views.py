"""Dashboard pages: deployments, environments, runs and a run's journal.

Each view calls the same service functions as the HTTP API (``Runtime`` and its store); the
pages are Jinja2 templates, and ``static/dashboard.js`` patches the live parts in place.
"""

from __future__ import annotations

import datetime
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tether import _json
from tether.core.status import RunStatus
from tether.errors import TetherError
from tether.server.api._http import runtime, tenant

HERE = Path(__file__).parent
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
ACTOR = "dashboard"
"""Who the audit log names for actions taken from the dashboard."""

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _as_json(value: Any) -> str:
    return _json.dumps(value).decode()


templates.filters["when"] = _when
templates.filters["as_json"] = _as_json


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/``."""
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def error_page(exc: TetherError) -> HTMLResponse:
    """A not-found, bad-request or conflict answer as a page."""
    return render("error.html", exc.status, title=f"{exc.status}", code=exc.code, message=exc.message)


async def _labels(request: Request) -> dict[str, str]:
    return {str(d["id"]): str(d["label"]) for d in await runtime(request).deployments(tenant(request))}


async def deployments_page(request: Request) -> Response:
    """``GET /``: every deployment with its status, environments, runs in flight and workers."""
    items = await runtime(request).deployments(tenant(request))
    return render("deployments.html", page="deployments", deployments=list(reversed(items)))


async def envs_page(request: Request) -> Response:
    """``GET /envs``: each environment's pointer (or split) and its history."""
    rt, tid = runtime(request), tenant(request)
    labels = await _labels(request)
    envs = []
    for env in await rt.store.list_envs(tid):
        envs.append({"env": env, "history": await rt.store.env_history(tid, env.name)})
    return render("envs.html", page="envs", envs=envs, labels=labels)


async def rollback(request: Request) -> Response:
    """``POST /envs/{env}/rollback`` (a form with ``reason``): undo the environment's latest change."""
    form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
    reason = (form.get("reason") or [""])[0].strip() or None
    try:
        await runtime(request).store.rollback_env(
            tenant(request), request.path_params["env"], actor=ACTOR, reason=reason
        )
    except TetherError as exc:
        return error_page(exc)
    return RedirectResponse("/envs", status_code=303)


async def runs_page(request: Request) -> Response:
    """``GET /runs?status=&workflow=&deployment=``: stuck runs first, with why they are stuck."""
    rt, tid = runtime(request), tenant(request)
    params = request.query_params
    status = params.get("status") or None
    workflow = params.get("workflow") or None
    deployment = params.get("deployment") or None
    try:
        if status is not None and status not in {s.value for s in RunStatus}:
            return render("error.html", 400, title="400", code="bad_request", message=f"unknown status {status!r}")
        deployment_id = (await rt.store.get_deployment(tid, deployment)).id if deployment else None
        runs = await rt.store.list_runs(tid, status=status, workflow=workflow, deployment_id=deployment_id, limit=200)
    except TetherError as exc:
        return error_page(exc)
    runs.sort(key=lambda r: r.status is not RunStatus.STUCK)
    return render(
        "runs.html",
        page="runs",
        runs=runs,
        labels=await _labels(request),
        statuses=[s.value for s in RunStatus],
        filters={"status": status or "", "workflow": workflow or "", "deployment": deployment or ""},
    )


async def run_page(request: Request) -> Response:
    """``GET /runs/{id}``: the run, its state and its journal as a timeline."""
    rt, tid = runtime(request), tenant(request)
    try:
        run = await rt.store.get_run(tid, request.path_params["id"])
        journal = await rt.store.journal(tid, run.id)
        state = await rt.store.run_state(tid, run.id)
    except TetherError as exc:
        return error_page(exc)
    labels = await _labels(request)
    return render("run.html", page="runs", run=run, journal=journal, state=state, labels=labels)


async def static(request: Request) -> Response:
    """``GET /static/{name}``: the dashboard's own CSS and JS (nothing from a CDN)."""
    path = STATIC.get(request.path_params["name"])
    if path is None:
        return render("error.html", 404, title="404", code="not_found", message="no such file")
    return FileResponse(path)


ROUTES = [
    Route("/", deployments_page, methods=["GET"]),
    Route("/envs", envs_page, methods=["GET"]),
    Route("/envs/{env}/rollback", rollback, methods=["POST"]),
    Route("/runs", runs_page, methods=["GET"]),
    Route("/runs/{id}", run_page, methods=["GET"]),
    Route("/static/{name}", static, methods=["GET"]),
]
"""The dashboard's routes, registered by ``tether.server.app``."""
