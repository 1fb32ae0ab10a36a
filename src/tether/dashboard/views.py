"""Dashboard pages: deployments and their manifests, diffs, environments, the version map, runs
and a run's journal, and the nodes serving the store with the runs each is running now.

Each view calls the same service functions as the HTTP API (``Runtime`` and its store); the
pages are Jinja2 templates, and ``static/dashboard.js`` patches the live parts in place. The
forms that change something post to :mod:`tether.dashboard.actions`.
"""

from __future__ import annotations

import bisect
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from tether._readable import signals_by_entry, summarize
from tether.core.paging import CursorError, cut, decode_cursor, encode_cursor
from tether.core.status import TERMINAL, RunStatus
from tether.dashboard import actions
from tether.dashboard._map import layout
from tether.dashboard._render import HERE, error_page, render
from tether.errors import BadRequestError, ConflictError, NotFoundError, TetherError
from tether.server.api._http import runtime, tenant
from tether.store._runs import run_key
from tether.store.records import Run

STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}


async def _labels(request: Request) -> dict[str, str]:
    return {str(d["id"]): str(d["label"]) for d in await runtime(request).deployments(tenant(request))}


async def deployments_page(request: Request) -> Response:
    """``GET /``: every deployment with its status, environments, runs in flight and workers."""
    items = await runtime(request).deployments(tenant(request))
    return render("deployments.html", page="deployments", deployments=list(reversed(items)))


def _manuals(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Each agent's manual as its model is shown it: instructions, model, tools, answer schema.

    The manifest names an agent's tools; their descriptions and parameter schemas are the tool
    components' own, which is what the model reads (see ``AgentDefinition.manual``).
    """
    components = manifest.get("components", {})
    manuals = []
    for name, agent in sorted(components.items()):
        if agent.get("kind") != "agent":
            continue
        tools = []
        for tool in agent.get("tools", []):
            spec = components.get(tool, {})
            tools.append(
                {"name": tool, "description": spec.get("description", ""), "parameters": spec.get("input_schema")}
            )
        manuals.append({"agent": name, **agent, "tool_specs": tools})
    return manuals


async def deployment_page(request: Request) -> Response:
    """``GET /deployments/{dep}``: one deployment, its manifest and its agents' manuals."""
    rt, tid = runtime(request), tenant(request)
    try:
        item = await rt.deployment(tid, request.path_params["dep"])
    except TetherError as exc:
        return error_page(exc)
    others = [d for d in await rt.deployments(tid) if d["id"] != item["id"]]
    envs = await rt.store.list_envs(tid)
    components = sorted(item["manifest"].get("components", {}).items())
    return render(
        "deployment.html",
        page="deployments",
        d=item,
        components=components,
        manuals=_manuals(item["manifest"]),
        others=list(reversed(others)),
        envs=[e.name for e in envs],
    )


async def diff_page(request: Request) -> Response:
    """``GET /diff?from=A&to=B``: what changed between two deployments, and the runs it touches."""
    rt, tid = runtime(request), tenant(request)
    a, b = request.query_params.get("from") or "", request.query_params.get("to") or ""
    deployments = list(reversed(await rt.deployments(tid)))
    diff = None
    try:
        if a and b:
            diff = await rt.diff(tid, a, b)
        elif a or b:
            raise BadRequestError("a diff needs two deployments: choose both 'from' and 'to'")
    except TetherError as exc:
        return error_page(exc)
    return render("diff.html", page="deployments", diff=diff, deployments=deployments, chosen={"from": a, "to": b})


async def envs_page(request: Request) -> Response:
    """``GET /envs``: each environment's pointer (or split), its history, and forms to change it."""
    rt, tid = runtime(request), tenant(request)
    every = await rt.deployments(tid)
    deployments = [d for d in reversed(every) if d["status"] != "removed"]
    labels = {str(d["id"]): str(d["label"]) for d in every}
    envs = []
    for env in await rt.store.list_envs(tid):
        envs.append({"env": env, "history": await rt.store.env_history(tid, env.name)})
    return render("envs.html", page="envs", envs=envs, labels=labels, deployments=deployments)


RUNS_PER_PAGE = 200
ENTRIES_PER_PAGE = 500


async def map_page(request: Request) -> Response:
    """``GET /map``: environments as arrows to deployments, runs in flight on each as bars,
    draining deployments fading as their runs finish: what to look at before retiring one."""
    rt, tid = runtime(request), tenant(request)
    deployments = await rt.deployments(tid)
    envs = [e.to_json() for e in await rt.store.list_envs(tid)]
    drawn = layout(deployments, envs, await rt.store.run_totals(tid))
    labels = {str(d["id"]): str(d["label"]) for d in deployments}
    return render("map.html", page="map", map=drawn, envs=envs, labels=labels)


async def runs_page(request: Request) -> Response:
    """``GET /runs?status=&workflow=&deployment=&env=&cursor=``: stuck runs first, with why they
    are stuck, 200 a page."""
    rt, tid = runtime(request), tenant(request)
    params = request.query_params
    filters = {k: params.get(k) or "" for k in ("status", "workflow", "deployment", "env", "node")}
    try:
        if filters["status"] and filters["status"] not in {s.value for s in RunStatus}:
            raise BadRequestError(
                f"unknown status {filters['status']!r}: choose one of " + ", ".join(s.value for s in RunStatus)
            )
        deployment_id = (
            (await rt.store.get_deployment(tid, filters["deployment"])).id if filters["deployment"] else None
        )
        after = None
        if params.get("cursor"):
            try:
                after = decode_cursor("runs", params["cursor"], (int, float, str))
            except CursorError as exc:
                raise BadRequestError(
                    f"cannot read this page's cursor: {exc}; start again from the first page"
                ) from None
        found = await rt.store.list_runs(
            tid,
            status=filters["status"] or None,
            workflow=filters["workflow"] or None,
            deployment_id=deployment_id,
            env=filters["env"] or None,
            node=filters["node"] or None,
            limit=RUNS_PER_PAGE + 1,
            after=after,
        )
    except TetherError as exc:
        return error_page(exc)
    page = cut(found, RUNS_PER_PAGE, run_key)
    next_page = None
    if page.next_key is not None:
        kept = {k: v for k, v in filters.items() if v}
        next_page = "/runs?" + urlencode({**kept, "cursor": encode_cursor("runs", page.next_key)})
    return render(
        "runs.html",
        page="runs",
        runs=page.items,
        next_page=next_page,
        paged=after is not None,
        labels=await _labels(request),
        statuses=[s.value for s in RunStatus],
        envs=[e.name for e in await rt.store.list_envs(tid)],
        filters=filters,
    )


RUNS_PER_NODE = 50


def _alive(node: dict[str, Any]) -> str:
    """``this one``, ``yes`` or ``no``: the words ``tether nodes`` uses too."""
    if not node["alive"]:
        return "no"
    return "this one" if node["self"] else "yes"


async def nodes_page(request: Request) -> Response:
    """``GET /nodes``: the nodes serving the store (one on SQLite, several on one PostgreSQL),
    whether each is alive, its leases and workers, and the runs of the viewer's tenant each is
    running now, 50 a node (the rest on the run list filtered by node)."""
    rt, tid = runtime(request), tenant(request)
    now = time.time()
    nodes = []
    for node in await rt.store.nodes():
        held = await rt.store.list_runs(tid, node=node["id"], limit=RUNS_PER_NODE + 1)
        workers = node["workers"].get("alive") if node["workers"] else None
        nodes.append(
            {
                **node,
                "state": _alive(node),
                # This node's own pool is known now; the others' as of their last heartbeat.
                "workers_now": len(rt.pool.alive()) if node["self"] else workers,
                "heartbeat_age": max(0.0, now - node["heartbeat_at"]),
                "lapsed_for": max(0.0, now - node["heartbeat_at"] - node["lease_timeout"]),
                "runs": held[:RUNS_PER_NODE],
                "more": len(held) > RUNS_PER_NODE,
            }
        )
    return render(
        "nodes.html",
        page="nodes",
        nodes=nodes,
        tenant=tid,
        shared=rt.store.backend.shared,
        labels=await _labels(request),
        per_node=RUNS_PER_NODE,
    )


def _pinned_at(run: Run, moves: list[dict[str, Any]]) -> tuple[list[float], list[str]]:
    """When the run's pin changed and to what: ``deployment_at`` looks an instant up in these.

    Entries do not store the deployment they were written on; a run only changes deployment
    through an audited move, so the audit log says which deployment held it at any instant.
    """
    moves = sorted(moves, key=lambda m: m["created_at"])
    first = str(moves[0]["details"]["from"]) if moves else run.deployment_id
    return [m["created_at"] for m in moves], [first, *(str(m["details"]["to"]) for m in moves)]


async def run_page(request: Request) -> Response:
    """``GET /runs/{id}``: the run, its state, signals, journal timeline, history and actions."""
    rt, tid = runtime(request), tenant(request)
    first = request.query_params.get("from") or "0"
    try:
        if not first.isdigit():
            raise BadRequestError(f"from is the index of the first entry to show (0 or more), not {first!r}")
        start = int(first)
        run = await rt.store.get_run(tid, request.path_params["id"])
        journal = await rt.store.journal(tid, run.id, after=start - 1, limit=ENTRIES_PER_PAGE)
        size = await rt.store.journal_size(tid, run.id)
        state = await rt.store.run_state(tid, run.id)
        signals = await rt.store.signals(tid, run.id)
        history = await rt.store.audit(tid, 200, target=run.id)
        pinned = await rt.store.get_deployment(tid, run.deployment_id)
    except TetherError as exc:
        return error_page(exc)
    deployments = list(reversed(await rt.deployments(tid)))
    labels = {str(d["id"]): str(d["label"]) for d in deployments}
    times, held = _pinned_at(run, [h for h in history if h["action"] == "run.move"])
    entry_deployments = [held[bisect.bisect_right(times, e.created_at)] for e in journal]
    taken = signals_by_entry(signals)
    summaries = [summarize(e.to_json(), taken.get(e.index)) for e in journal]
    workflow = pinned.manifest.get("components", {}).get(run.workflow, {})
    return render(
        "run.html",
        page="runs",
        notice=request.query_params.get("notice"),
        run=run,
        ended=run.status in TERMINAL,
        journal=list(zip(journal, entry_deployments, summaries, strict=True)),
        journal_size=size,
        journal_from=start,
        per_page=ENTRIES_PER_PAGE,
        state=state,
        signals=signals,
        declared_signals=sorted(workflow.get("signals", {}).items()),
        history=history,
        labels=labels,
        move_targets=[
            d
            for d in deployments
            if d["id"] != run.deployment_id and d["status"] != "removed" and run.workflow in d["workflows"]
        ],
        envs=[e.name for e in await rt.store.list_envs(tid)],
    )


async def move_page(request: Request) -> Response:
    """``GET /runs/{id}/move?to=D``: dry-run the run's journal on D, then offer the move."""
    rt, tid = runtime(request), tenant(request)
    to = request.query_params.get("to") or ""
    try:
        if not to:
            raise BadRequestError("choose the deployment to move the run to (?to=LABEL)")
        run = await rt.store.get_run(tid, request.path_params["id"])
        target = await rt.store.get_deployment(tid, to)
        if run.status in TERMINAL:
            raise ConflictError(f"run {run.id} is {run.status.value}: an ended run cannot move (restart it)")
        if run.workflow not in target.manifest.get("components", {}):
            raise NotFoundError(f"deployment {target.label} has no workflow {run.workflow!r}: choose another")
        verdict = await rt.dry_run(run, target)
    except TetherError as exc:
        return error_page(exc)
    return render("move.html", page="runs", run=run, target=target, verdict=verdict, labels=await _labels(request))


async def static(request: Request) -> Response:
    """``GET /static/{name}``: the dashboard's own CSS and JS (nothing from a CDN)."""
    path = STATIC.get(request.path_params["name"])
    if path is None:
        return render("error.html", 404, title="404", code="not_found", message="no such file")
    return FileResponse(path)


ROUTES = [
    *actions.ROUTES,
    Route("/", deployments_page, methods=["GET"]),
    Route("/deployments/{dep}", deployment_page, methods=["GET"]),
    Route("/diff", diff_page, methods=["GET"]),
    Route("/envs", envs_page, methods=["GET"]),
    Route("/map", map_page, methods=["GET"]),
    Route("/nodes", nodes_page, methods=["GET"]),
    Route("/runs", runs_page, methods=["GET"]),
    Route("/runs/{id}", run_page, methods=["GET"]),
    Route("/runs/{id}/move", move_page, methods=["GET"]),
    Route("/static/{name}", static, methods=["GET"]),
]
"""The dashboard's pages and the targets of its forms, registered by ``tether.server.app``."""
