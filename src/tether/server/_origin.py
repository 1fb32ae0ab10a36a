"""Refusing requests that another site's page makes a browser send (cross-site request forgery).

The server has no login yet, so a page on any site open in an operator's browser could post to
``http://127.0.0.1:7070`` and kill a run or move an environment. Browsers say where such a
request comes from (``Origin``, ``Sec-Fetch-Site``); the CLI, the client and workers send
neither, so they are never refused. Safe methods (GET, HEAD, OPTIONS) change nothing and pass.
"""

from __future__ import annotations

import urllib.parse

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tether import _json
from tether.dashboard._render import render

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MESSAGE = (
    "refused: a page from another site asked this browser to change something here; "
    "use the dashboard's own pages, the CLI or the HTTP client"
)


def cross_site(headers: Headers) -> bool:
    """Whether a browser says the request comes from a page of another site."""
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # a sandboxed or file: page
        return True
    return urllib.parse.urlsplit(origin).netloc != headers.get("host", "")


class SameOriginMiddleware:
    """Answer 403 to a state-changing request from another site's page: JSON under ``/v1``,
    the dashboard's error page elsewhere."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on unless it is a cross-site write."""
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or not cross_site(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        response: Response
        if str(scope["path"]).startswith("/v1/"):
            body = {"error": {"code": "forbidden", "message": MESSAGE}}
            response = Response(_json.dumps(body), status_code=403, media_type="application/json")
        else:
            response = render("error.html", 403, title="403", code="forbidden", message=MESSAGE)
        await response(scope, receive, send)
