"""Who may call which route: one table, keyed by method and route path, and the principal a
request acts as.

Every route the server serves has an entry (``create_app`` refuses to build otherwise), so a new
route cannot slip in unguarded. The table is pure data; :mod:`tether.server._auth` applies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tether.errors import BadRequestError
from tether.store import Scope
from tether.store._tenants import DEFAULT_TENANT, Token

_ALL = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Access:
    """What a route asks of a request."""

    name: str
    """How docs/security.md and error messages name it."""
    scopes: frozenset[Scope]
    """The token scopes allowed to call it; empty for routes that take no API token."""
    needs: str
    """What to ask for when refused, in words."""

    @property
    def public(self) -> bool:
        """Whether the route takes no API token (anyone, or an attempt token in the body)."""
        return not self.scopes


PUBLIC = Access("public", frozenset(), "nothing")
"""Anyone: health, the dashboard's sign-in page and its static files."""
ATTEMPT = Access("attempt", frozenset(), "the attempt token")
"""Workers and endpoints: authenticated by the attempt token in the body, never by API tokens."""
ANY = Access("any", _ALL, "any token")
"""Any valid token."""
RUN_READ = Access("run-read", _ALL, "a read, ingress or admin token")
"""One run's own data: its holder started it (ingress) or may read everything (read)."""
READ = Access("read", frozenset({Scope.READ, Scope.ADMIN, Scope.OPERATOR}), "a read or admin token")
"""Listing the tenant's objects, pages of the dashboard."""
INGRESS = Access("ingress", frozenset({Scope.INGRESS, Scope.ADMIN, Scope.OPERATOR}), "an ingress or admin token")
"""Starting and signalling runs."""
ADMIN = Access("admin", frozenset({Scope.ADMIN, Scope.OPERATOR}), "an admin token")
"""Changing deployments and environments, escape hatches, audit, the tenant's tokens."""
OPERATOR = Access("operator", frozenset({Scope.OPERATOR}), "an operator token")
"""Tenants, and the whole server."""

POLICY: dict[tuple[str, str], Access] = {
    # operations
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): READ,
    ("GET", "/openapi.json"): ANY,
    # ingress
    ("POST", "/v1/envs/{env}/workflows/{name}/runs"): INGRESS,
    ("POST", "/v1/deployments/{dep}/workflows/{name}/runs"): INGRESS,
    ("GET", "/v1/runs/{id}"): RUN_READ,
    ("GET", "/v1/runs/{id}/result"): RUN_READ,
    ("GET", "/v1/runs/{id}/signals"): RUN_READ,
    ("POST", "/v1/runs/{id}/signals/{name}"): INGRESS,
    ("GET", "/v1/runs/{id}/state"): RUN_READ,
    ("GET", "/v1/runs/{id}/journal"): RUN_READ,
    ("POST", "/v1/runs/{id}/queries/{name}"): RUN_READ,
    # admin
    ("POST", "/v1/deployments"): ADMIN,
    ("GET", "/v1/deployments"): READ,
    ("GET", "/v1/deployments/{dep}"): READ,
    ("DELETE", "/v1/deployments/{dep}"): ADMIN,
    ("GET", "/v1/deployments/{a}/diff/{b}"): READ,
    ("GET", "/v1/envs"): READ,
    ("PUT", "/v1/envs/{env}"): ADMIN,
    ("POST", "/v1/envs/{env}/promote"): ADMIN,
    ("POST", "/v1/envs/{env}/rollback"): ADMIN,
    ("GET", "/v1/envs/{env}/history"): READ,
    ("GET", "/v1/runs"): READ,
    ("POST", "/v1/runs/{id}/cancel"): ADMIN,
    ("POST", "/v1/runs/{id}/pause"): ADMIN,
    ("POST", "/v1/runs/{id}/resume"): ADMIN,
    ("POST", "/v1/runs/{id}/kill"): ADMIN,
    ("POST", "/v1/runs/{id}/restart"): ADMIN,
    ("POST", "/v1/runs/{id}/fork"): ADMIN,
    ("POST", "/v1/runs/{id}/move"): ADMIN,
    ("POST", "/v1/deployments/{dep}/check"): ADMIN,
    ("GET", "/v1/audit"): ADMIN,
    # who may do what
    ("GET", "/v1/whoami"): ANY,
    ("GET", "/v1/tokens"): ADMIN,
    ("POST", "/v1/tokens"): ADMIN,
    ("DELETE", "/v1/tokens/{id}"): ADMIN,
    ("GET", "/v1/tenants"): OPERATOR,
    ("POST", "/v1/tenants"): OPERATOR,
    # the nodes sharing the store: the whole server's concern, not a tenant's
    ("GET", "/v1/nodes"): OPERATOR,
    # internal
    ("POST", "/v1/internal/runs/{id}/journal"): ATTEMPT,
    # dashboard
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/"): READ,
    ("GET", "/api"): ANY,
    ("GET", "/deployments/{dep}"): READ,
    ("GET", "/diff"): READ,
    ("GET", "/envs"): READ,
    ("GET", "/map"): READ,
    # the nodes and what runs on each: the whole server's concern, as GET /v1/nodes
    ("GET", "/nodes"): OPERATOR,
    ("GET", "/runs"): READ,
    ("GET", "/runs/{id}"): READ,
    ("GET", "/runs/{id}/move"): READ,
    ("POST", "/envs"): ADMIN,
    ("POST", "/envs/{env}/promote"): ADMIN,
    ("POST", "/envs/{env}/rollback"): ADMIN,
    ("POST", "/deployments/{dep}/remove"): ADMIN,
    ("POST", "/runs/{id}/signal"): INGRESS,
    ("POST", "/runs/{id}/cancel"): ADMIN,
    ("POST", "/runs/{id}/pause"): ADMIN,
    ("POST", "/runs/{id}/resume"): ADMIN,
    ("POST", "/runs/{id}/kill"): ADMIN,
    ("POST", "/runs/{id}/restart"): ADMIN,
    ("POST", "/runs/{id}/move"): ADMIN,
}
"""``(method, route path)`` → who may call it. HEAD is answered as GET."""


def access(method: str, path: str) -> Access:
    """The entry for a route.

    Raises:
        KeyError: the route has none (a programming error; ``create_app`` checks every route).
    """
    return POLICY[("GET" if method == "HEAD" else method, path)]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a token's holder, or (local mode, no token exists) whoever
    reached the loopback port."""

    tenant_id: str
    scope: Scope
    actor: str
    """What the audit log records."""
    token: Token | None = None
    """The token used; None in local mode."""
    session: str | None = None
    """The dashboard session id, when signed in with the session cookie (CSRF applies)."""

    @property
    def local(self) -> bool:
        """Whether no token is in play (local mode: every request is trusted, as before tokens)."""
        return self.token is None

    def to_json(self) -> dict[str, object]:
        """The answer of ``GET /v1/whoami``."""
        return {
            "tenant": self.tenant_id,
            "scope": self.scope.value,
            "actor": self.actor,
            "mode": "local" if self.local else "token",
            "token": None if self.token is None else self.token.to_json(),
        }


def local_principal(actor_header: str | None) -> Principal:
    """The principal of every request while no token exists: today's behaviour, unchanged."""
    return Principal(DEFAULT_TENANT, Scope.OPERATOR, (actor_header or "anonymous")[:200])


def token_principal(token: Token, *, session: str | None = None) -> Principal:
    """The principal of a request that presented ``token``."""
    return Principal(token.tenant_id, token.scope, token.actor, token, session)


_DURATION = re.compile(r"^(\d{1,7})([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"45m"`` or ``"90s"`` in seconds.

    Raises:
        BadRequestError: the text is not such a duration, or is zero.
    """
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise BadRequestError(f"cannot read the duration {text!r}: write a number and a unit, e.g. 30d, 12h, 45m, 90s")
    return float(int(match.group(1)) * _UNIT[match.group(2)])
