"""Authentication and authorization of every request, and the ``Host`` allow-list.

Two modes (docs/security.md):

- **local**: no API token was ever created and the server listens on loopback only. Every
  request acts in the tenant ``default`` with every right, and the audit log names the
  ``X-Tether-Actor`` header, as before tokens existed.
- **tokens**: as soon as one token exists (or whenever the server listens beyond loopback),
  every route but the public ones (:mod:`tether.server._access`) needs a valid token:
  ``Authorization: Bearer`` on the API, the session cookie (or a bearer token) on the
  dashboard. The token's scope must be one the route allows (else 403), and the request acts in
  the token's tenant only, where another tenant's objects simply do not exist (404).

The ``Host`` allow-list comes first: a request naming a host the server does not answer to is
refused before anything else (a page on evil.example whose name resolves to 127.0.0.1 sends
``Host: evil.example``: DNS rebinding).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tether import _json
from tether.dashboard import _session
from tether.dashboard._render import VIEWER, Viewer, render
from tether.errors import ForbiddenError, HostNotAllowedError, TetherError, UnauthenticatedError
from tether.server._access import Principal, access, local_principal, token_principal
from tether.server._query import ROUTE
from tether.store import Store

PRINCIPAL = "tether.principal"
"""The ASGI scope key under which the request's :class:`Principal` travels."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
"""Names the server always answers to, with any port."""
LOCAL_RECHECK = 1.0
"""Seconds a server in local mode trusts its last look for tokens in the store."""
NO_TOKEN = (
    "this server needs an API token: send 'Authorization: Bearer TOKEN' "
    "(the CLI: --token or TETHER_TOKEN); an admin creates one with 'tether tokens create'"
)


def _json_error(exc: TetherError) -> Response:
    body = _json.dumps({"error": {"code": exc.code, "message": exc.message}})
    return Response(body, status_code=exc.status, media_type="application/json")


def _is_api(path: str) -> bool:
    return path.startswith("/v1/") or path in ("/metrics", "/openapi.json")


def split_host(value: str) -> tuple[str, str | None]:
    """A ``Host`` header (or an allow-list entry) as ``(lowercase name, port or None)``."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return name + "]", port or None
    name, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return value, None
    return name, port


class AllowedHosts:
    """The names (optionally ``name:port``) the server answers to; loopback names always."""

    def __init__(self, entries: Iterable[str]) -> None:
        """Parse the entries (``--allowed-host``)."""
        self.entries = {split_host(e) for e in (*LOOPBACK_HOSTS, *entries) if e.strip()}

    def allows(self, host: str | None) -> bool:
        """Whether a request with this ``Host`` header is answered."""
        if not host:
            return False
        name, port = split_host(host)
        if name == "::1":
            name = "[::1]"
        return (name, None) in self.entries or (port is not None and (name, port) in self.entries)


class HostAllowListMiddleware:
    """Answer 421 (JSON) to a request whose ``Host`` is not on the allow-list."""

    def __init__(self, app: ASGIApp, *, hosts: AllowedHosts) -> None:
        """Wrap ``app``."""
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request naming a host not on the list; pass the rest on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        if self.hosts.allows(host):
            await self.app(scope, receive, send)
            return
        error = HostNotAllowedError(
            f"refused: this server does not answer to the host {host!r} (it guards against DNS rebinding); "
            "use its own address, or start it with --allowed-host NAME if that name is really its own"
        )
        await _json_error(error)(scope, receive, send)


class AuthMiddleware:
    """Find the route, authenticate the request (in token mode) and check its scope; put the
    :class:`Principal` under ``scope["tether.principal"]``."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute], require_tokens: bool) -> None:
        """Wrap ``app``, whose routes are ``routes``.

        Args:
            app: the app.
            routes: its routes, to find the one a request is for.
            require_tokens: token mode even while no token exists (the server listens beyond
                loopback): then every guarded route is refused until one does.
        """
        self.app = app
        self.routes = [r for r in routes if isinstance(r, Route)]
        self.require_tokens = require_tokens
        self._tokens_exist = False
        self._checked_at = -LOCAL_RECHECK

    def _route(self, scope: Scope) -> Route | None:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
        return None

    async def _token_mode(self, store: Store, state: Any, *, presented: bool = False) -> bool:
        # Tokens are never deleted (revoked ones stay), so once true this stays true. While
        # false, the store is asked at most once per LOCAL_RECHECK seconds rather than on every
        # request (a read per request cost a third of a 1-step run's latency): a token made
        # through the API switches at once (``state.tokens_created``); one written to the data
        # directory by 'tether tokens create --data-dir' is seen within that interval.
        if self.require_tokens or self._tokens_exist or getattr(state, "tokens_created", False):
            self._tokens_exist = True
            return True
        now = time.monotonic()
        # A request that presents a token is never judged by a stale answer: a token made a
        # moment ago with 'tether tokens create --data-dir' must not be ignored (and the request
        # taken for a trusted local one, under whatever X-Tether-Actor it names).
        if presented or now - self._checked_at >= LOCAL_RECHECK:
            self._tokens_exist = await store.any_tokens()
            self._checked_at = now
        return self._tokens_exist

    async def _authenticate(self, scope: Scope, store: Store, secret: bytes) -> Principal:
        """The principal of a request in token mode.

        Raises:
            UnauthenticatedError: no credential, or one that is not (or no longer) valid.
        """
        headers = Headers(scope=scope)
        now = time.time()
        header = headers.get("authorization")
        if header is not None:
            kind, _, text = header.partition(" ")
            if kind.lower() != "bearer" or not text.strip():
                raise UnauthenticatedError("the Authorization header must be 'Bearer TOKEN'")
            token, why = await store.authenticate(text.strip(), now)
            if token is None:
                raise UnauthenticatedError(why)
            return token_principal(token)
        cookie = cookie_parser(headers.get("cookie", "")).get(_session.COOKIE)
        if cookie and not _is_api(scope["path"]):
            session = _session.session_id(secret, cookie)
            token = await store.session_token(session, now) if session else None
            if session is not None and token is not None:
                return token_principal(token, session=session)
            raise UnauthenticatedError("your dashboard session has ended: sign in again")
        raise UnauthenticatedError(NO_TOKEN)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate and authorize, or answer the refusal."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        scope[ROUTE] = route  # for the middleware within (query parameters), which need not match again
        rule = access(scope["method"], route.path) if route is not None else None
        if rule is not None and rule.public:
            await self.app(scope, receive, send)
            return
        state: Any = scope["app"].state
        store: Store = state.runtime.store
        try:
            presented = "authorization" in Headers(scope=scope)
            if await self._token_mode(store, state, presented=presented):
                principal = await self._authenticate(scope, store, state.secret)
            else:
                principal = local_principal(Headers(scope=scope).get("x-tether-actor"))
            if rule is not None and principal.scope not in rule.scopes:
                assert route is not None
                raise ForbiddenError(
                    f"forbidden: {principal.actor} has the scope {principal.scope.value}; "
                    f"{scope['method']} {route.path} needs {rule.needs} of tenant {principal.tenant_id!r}"
                )
        except TetherError as exc:
            await self._refuse(scope, exc)(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        csrf = None if principal.session is None else _session.csrf_token(state.secret, principal.session)
        viewer = Viewer(principal.actor, principal.tenant_id, principal.scope.value, csrf, not principal.local)
        reset = VIEWER.set(viewer)
        try:
            await self.app(scope, receive, send)
        finally:
            VIEWER.reset(reset)

    @staticmethod
    def _refuse(scope: Scope, exc: TetherError) -> Response:
        """JSON on the API; on the dashboard, the sign-in page for a page view, else an error page."""
        path = str(scope["path"])
        if _is_api(path):
            return _json_error(exc)
        if isinstance(exc, UnauthenticatedError) and scope["method"] in ("GET", "HEAD"):
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            response: Response = RedirectResponse("/login?next=" + urllib.parse.quote(target, safe=""), 303)
            response.delete_cookie(_session.COOKIE, path="/")  # a dead session's cookie, if any
            return response
        return render("error.html", exc.status, title=f"{exc.status}", code=exc.code, message=exc.message)
