"""The OpenAPI document, generated from the route table (:mod:`tether.server._spec`), the access
policy (:mod:`tether.server._access`) and the models of :mod:`tether.api_models`; served at
``GET /openapi.json``, and as a page at ``GET /api``.

The document is built once, when the app is created; no request pays for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tether._version import __version__
from tether.api_models import ErrorBody
from tether.dashboard._render import render
from tether.server._access import POLICY
from tether.server._spec import PATH_SCHEMAS, SPECS, Content, Operation, is_api

REF = "#/components/schemas/{model}"
ERROR_MEANING = {
    400: "Bad input (a malformed body or parameter, a query parameter the route does not take): "
    "the message says what to fix.",
    401: "No valid API token.",
    403: "The token's scope does not allow this route, or a cross-site write.",
    404: "Unknown (or another tenant's) object.",
    409: "Conflicts with the current state, or refused.",
    413: "The body is over its limit.",
    421: "A Host the server does not answer to.",
    422: "The payload violates the pinned deployment's schema.",
    503: "Not available for now; retry later.",
}
TAGS = [
    ("operations", "Health, metrics and this document."),
    ("ingress", "Start runs, read their results, state and journal, send signals."),
    ("deployments", "Deploy, read, compare, check and remove deployments."),
    ("environments", "Point environments at deployments."),
    ("runs", "List runs, escape hatches, audit."),
    ("access", "Who may do what: tokens and tenants."),
    ("internal", "For the runtime's own workers."),
]


def check_routes(routes: Iterable[BaseRoute]) -> None:
    """Refuse an API route without an operation in ``SPECS``, and an operation without a route.

    Raises:
        RuntimeError: naming what to add or remove.
    """
    served = set()
    for route in routes:
        if not isinstance(route, Route) or not is_api(route.path):
            continue
        for method in (route.methods or set()) - {"HEAD"}:
            served.add((method, route.path))
            if (method, route.path) not in SPECS:
                raise RuntimeError(
                    f"{method} {route.path} has no entry in tether.server._spec.SPECS: add one "
                    "(what it accepts and answers; the OpenAPI document is generated from it)"
                )
    stale = sorted(set(SPECS) - served)
    if stale:
        raise RuntimeError(f"tether.server._spec.SPECS describes routes that are not served: {stale}")


def _schemas(operations: Iterable[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """JSON Schemas of every model used, as component references, and the components."""
    wanted: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for op in operations:
        for contents in op.answers.values():
            for content in contents:
                if isinstance(content.schema, type):
                    wanted[(content.schema, "serialization")] = None
        for content in op.body:
            if isinstance(content.schema, type):
                wanted[(content.schema, "validation")] = None
    keyed = list(wanted)
    refs, top = models_json_schema(keyed, ref_template=REF)  # type: ignore[arg-type]
    return dict(refs), dict(top.get("$defs", {}))


def _content(contents: Iterable[Content], refs: dict[Any, Any], mode: str) -> dict[str, Any]:
    out = {}
    for content in contents:
        schema = refs[(content.schema, mode)] if isinstance(content.schema, type) else content.schema
        out[content.media_type] = {"schema": schema}
    return out


def _describe(contents: Iterable[Content], fallback: str) -> str:
    words = [c.description for c in contents if c.description]
    return " ".join(words) or fallback


def _operation(method: str, path: str, op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    rule = POLICY[(method, path)]
    out: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_SCHEMAS.get(name, {"type": "string", "minLength": 1}),
            "description": op.path_params.get(name, ""),
        }
        for name in re.findall(r"{(\w+)}", path)
    ]
    params += [
        {"name": p.name, "in": "query", "required": p.required, "schema": p.schema, "description": p.description}
        for p in op.query
    ]
    params += [
        {"name": p.name, "in": "header", "required": p.required, "schema": p.schema, "description": p.description}
        for p in op.headers
    ]
    if params:
        out["parameters"] = params
    if op.body:
        out["requestBody"] = {"required": op.body_required, "content": _content(op.body, refs, "validation")}
    responses: dict[str, Any] = {}
    for status, contents in sorted(op.answers.items()):
        responses[str(status)] = {
            "description": _describe(contents, "Success."),
            "content": _content(contents, refs, "serialization"),
        }
    errors = set(op.errors) | {400, 421}
    if not rule.public:
        errors |= {401, 403}
    if op.body:
        errors |= {400, 413}
    error = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}
    for status in sorted(errors):
        responses[str(status)] = {"description": ERROR_MEANING.get(status, "An error."), "content": error}
    out["responses"] = responses
    if rule.public:
        out["security"] = []
    else:
        out["description"] = (out.get("description", "") + f" Needs {rule.needs} (in token mode).").strip()
    if op.internal:
        out["x-internal"] = True
    return out


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.strip("/").replace(".", "_").split("/") if w]
    return "_".join([method.lower(), *words])


def _order(key: tuple[str, str]) -> tuple[str, int]:
    method, path = key
    return path, ["GET", "POST", "PUT", "DELETE"].index(method) if method in ("GET", "POST", "PUT", "DELETE") else 9


def document(routes: Iterable[BaseRoute] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (of ``routes`` when given, else of every spec)."""
    if routes is None:
        keys = sorted(SPECS, key=_order)
    else:
        keys = sorted(
            (
                (method, r.path)
                for r in routes
                if isinstance(r, Route) and is_api(r.path)
                for method in (r.methods or set()) - {"HEAD"}
            ),
            key=_order,
        )
    refs, components = _schemas(SPECS[k] for k in keys)
    paths: dict[str, dict[str, Any]] = {}
    for method, path in keys:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, SPECS[(method, path)], refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tether",
            "version": __version__,
            "description": (
                "The HTTP API of a tether server. Errors are always "
                '{"error": {"code", "message"}} (docs/errors.md). While no API token exists the server '
                "trusts every request on loopback (local mode); once one does, send "
                "Authorization: Bearer TOKEN."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: the document, built when the app was."""
    body: bytes = request.app.state.openapi_bytes
    return Response(body, media_type="application/json")


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's operations as the page lists them, grouped by tag in the tags' order."""
    order = {name: i for i, (name, _) in enumerate(TAGS)}
    items = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            items.append({"method": method.upper(), "path": path, **op})
    items.sort(key=lambda o: (order.get(o["tags"][0], 99), o["path"], o["method"]))
    return items


async def api_page(request: Request) -> Response:
    """``GET /api``: the document as a page, served by the server itself (nothing from elsewhere)."""
    doc: dict[str, Any] = request.app.state.openapi
    return render(
        "api.html",
        page="api",
        doc=doc,
        operations=_operations(doc),
        tags=TAGS,
        schemas=doc["components"]["schemas"],
    )


ROUTES = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/api", api_page, methods=["GET"]),
]
