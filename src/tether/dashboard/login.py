"""Signing in to the dashboard with an API token, and signing out.

Only used in token mode (docs/security.md). ``POST /login`` checks the token, starts a session
in the store and sets the signed session cookie (HTTP-only, ``SameSite=Strict``; ``Secure``
behind HTTPS); the token itself is never kept in the browser. The sign-in form carries its own
CSRF value (a double-submit cookie), so another site cannot sign a browser in as someone else.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tether.dashboard import _session
from tether.dashboard._render import render
from tether.server.api._http import read_body, runtime

MAX_LOGIN_BYTES = 16 * 1024


def _next(target: str | None) -> str:
    """Where to go after signing in: a path of this dashboard only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(request: Request, status: int, message: str | None, target: str) -> Response:
    # Kept while it lives, so two open sign-in pages (or a reload) do not void each other.
    nonce = request.cookies.get(_session.LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render("login.html", status, page="", message=message, next=target, login_csrf=nonce)
    response.set_cookie(
        _session.LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def _token_mode(request: Request) -> bool:
    return bool(request.app.state.require_tokens or await runtime(request).store.any_tokens())


async def login_page(request: Request) -> Response:
    """``GET /login``: the sign-in form (straight to the deployments while no token exists)."""
    if not await _token_mode(request):
        return RedirectResponse("/", 303)
    return _login_page(request, 200, None, _next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    """``POST /login`` with ``token`` (and the form's ``csrf``): start a session."""
    raw = await read_body(request, MAX_LOGIN_BYTES)
    form = urllib.parse.parse_qs(raw.decode(errors="replace"))
    target = _next((form.get("next") or [""])[0])
    if not await _token_mode(request):
        return RedirectResponse(target, 303)
    posted = (form.get("csrf") or [""])[0]
    expected = request.cookies.get(_session.LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(posted, expected):
        return _login_page(request, 403, "the sign-in form expired or came from elsewhere: sign in again here", target)
    store = runtime(request).store
    token, why = await store.authenticate((form.get("token") or [""])[0], time.time())
    if token is None:
        return _login_page(request, 401, why, target)
    session = await store.create_session(token.id, ttl=_session.TTL)
    response = RedirectResponse(target, 303)
    response.delete_cookie(_session.LOGIN_COOKIE, path="/login")
    response.set_cookie(
        _session.COOKIE,
        _session.cookie_value(request.app.state.secret, session),
        max_age=int(_session.TTL),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    """``POST /logout`` (with the page's ``csrf``): end the session and clear its cookie."""
    raw = await read_body(request, MAX_LOGIN_BYTES)
    form = urllib.parse.parse_qs(raw.decode(errors="replace"))
    secret: bytes = request.app.state.secret
    session = _session.session_id(secret, request.cookies.get(_session.COOKIE, ""))
    if session is not None:
        if not _session.csrf_ok(secret, session, next(iter(form.get("csrf") or []), None)):
            return render(
                "error.html",
                403,
                title="403",
                code="forbidden",
                message="refused: the form carries no valid CSRF token; sign out from the dashboard's own page",
            )
        await runtime(request).store.end_session(session)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(_session.COOKIE, path="/")
    return response


ROUTES = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
"""Signing in and out."""
