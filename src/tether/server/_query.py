"""Refuse query parameters an API route does not take (400, naming those it does).

A mistyped filter (``GET /v1/runs?stauts=failed``) would otherwise be ignored and answer every
run: the caller would act on a list it never asked for. The names each route takes are those
of its operation in :data:`tether.server._spec.SPECS`, so the document and the server agree.
"""

from __future__ import annotations

import urllib.parse

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tether import _json
from tether.server._spec import SPECS, is_api

ROUTE = "tether.route"
"""The ASGI scope key under which ``tether.server._auth`` leaves the matched route."""


class QueryParamsMiddleware:
    """Answer 400 to an API request with a query parameter its route does not take."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app
        self.allowed = {key: frozenset(p.name for p in op.query) for key, op in SPECS.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, unless it names a parameter its route does not take."""
        route = scope.get(ROUTE)
        query = scope.get("query_string", b"")
        if query and isinstance(route, Route) and is_api(route.path):
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            allowed = self.allowed.get((method, route.path), frozenset())
            names = {name for name, _ in urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)}
            unknown = sorted(names - allowed)
            if unknown:
                takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
                named = ", ".join(map(repr, unknown))
                message = f"{method} {route.path} takes no query parameter {named}: {takes}"
                body = _json.dumps({"error": {"code": "bad_request", "message": message}})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
