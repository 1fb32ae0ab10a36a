"""Map exceptions to JSON error responses: one registry, keyed by class along the MRO."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from tether import _json
from tether.errors import StoreUnavailableError, TetherError

log = logging.getLogger("tether.server")


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The one JSON error shape: ``{"error": {"code", "message"}}``."""
    body = _json.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def tether_error(_: Request, exc: Exception) -> Response:
    """A :class:`TetherError` answers with its own status and code (a store fault also with
    ``Retry-After``: the client may retry, the server recovers on its own)."""
    assert isinstance(exc, TetherError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, StoreUnavailableError) else None
    return error_response(exc.status, exc.code, exc.message, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the same shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    if exc.status_code == 405:
        # Allow names every method the URL answers (RFC 9110), across all the routes of its
        # path; Starlette's own names only those of the first route that matched.
        methods = _allowed(request)
        message = f"{request.method} is not allowed here: use {', '.join(methods)}"
        return error_response(405, code, message, {"Allow": ", ".join(methods)})
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


def _allowed(request: Request) -> list[str]:
    found: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            found |= route.methods or set()
    return sorted(found)


async def internal_error(_: Request, exc: Exception) -> Response:
    """Anything unexpected: logged with its traceback, answered as 500."""
    log.error("internal error", exc_info=exc)
    return error_response(500, "internal", f"internal error: {type(exc).__name__}: {exc}")


HANDLERS = {TetherError: tether_error, HTTPException: http_error, Exception: internal_error}
"""Exception class → handler; Starlette picks the nearest class along the MRO."""
