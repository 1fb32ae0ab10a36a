"""Who may do what: ``/v1/whoami``, ``/v1/tokens`` and ``/v1/tenants``.

An admin token manages the tokens of its own tenant (up to the scope ``admin``); an operator
token also creates tenants and tokens of any tenant and scope. To anyone else, another tenant
does not exist (404), like any other tenant's object.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.errors import BadRequestError, ForbiddenError, NotFoundError
from tether.server._access import Principal, parse_duration
from tether.server.api._http import (
    json_response,
    page_request,
    page_response,
    principal,
    read_json,
    runtime,
)
from tether.store import Scope

MAX_EXPIRY = 10 * 365 * 86400.0


def _tenant_for(who: Principal, named: str | None) -> str:
    """The tenant a request about tokens names: its own unless an operator names another.

    Raises:
        NotFoundError: a non-operator named another tenant (which, to it, does not exist).
    """
    if named is None or named == who.tenant_id:
        return who.tenant_id
    if who.scope is not Scope.OPERATOR:
        raise NotFoundError(f"no tenant {named!r}: a token manages the tokens of its own tenant only")
    return named


def _expiry(value: Any) -> float | None:
    """``expires_in`` as seconds from now: a duration (``"30d"``) or a number of seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        seconds = parse_duration(value)
    elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        seconds = float(value)
    else:
        raise BadRequestError('expires_in is a duration such as "30d" or a positive number of seconds')
    if seconds > MAX_EXPIRY:
        raise BadRequestError("expires_in is at most ten years; leave it out for a token that does not expire")
    return time.time() + seconds


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequestError(f"{key} must be a string")
    return value


async def whoami(request: Request) -> Response:
    """``GET /v1/whoami``: the tenant, scope and audit name the request acts as."""
    return json_response(principal(request).to_json())


async def create_token(request: Request) -> Response:
    """``POST /v1/tokens`` with ``{"scope", "tenant"?, "name"?, "expires_in"?}``: answers the token
    once, in ``token``; it cannot be shown again."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequestError('create a token with {"scope": "read" | "ingress" | "admin", "name"?, "expires_in"?}')
    who = principal(request)
    scope_name = _optional_str(body, "scope")
    if scope_name is None:
        raise BadRequestError('a token needs a scope: {"scope": "read" | "ingress" | "admin"}')
    scope = Scope.parse(scope_name)
    tenant_id = _tenant_for(who, _optional_str(body, "tenant"))
    if scope is Scope.OPERATOR and who.scope is not Scope.OPERATOR:
        raise ForbiddenError("only an operator token creates operator tokens: create an admin token instead")
    issued = await runtime(request).store.create_token(
        tenant_id,
        scope=scope,
        name=_optional_str(body, "name"),
        expires_at=_expiry(body.get("expires_in")),
        actor=who.actor,
    )
    request.app.state.tokens_created = True  # token mode from the very next request
    answer = issued.token.to_json()
    answer["token"] = issued.secret
    response = json_response(answer, 201)
    response.headers["cache-control"] = "no-store"
    return response


async def list_tokens(request: Request) -> Response:
    """``GET /v1/tokens?tenant=&limit=&cursor=``: the tenant's tokens (never their secrets),
    revoked ones too, oldest first, a page at a time."""
    who = principal(request)
    tenant_id = _tenant_for(who, request.query_params.get("tenant") or None)
    store = runtime(request).store
    if not await store.tenant_exists(tenant_id):
        raise NotFoundError(f"no tenant {tenant_id!r}: see 'tether tenants list'")
    kind = f"tokens:{tenant_id}"
    limit, after = page_request(request, kind, (float, str), default=100, high=1000)
    tokens = await store.list_tokens(
        tenant_id, after=None if after is None else (float(after[0]), str(after[1])), limit=limit + 1
    )
    return page_response("tokens", kind, tokens, limit, lambda t: (t.created_at, t.id), lambda t: t.to_json())


async def revoke_token(request: Request) -> Response:
    """``DELETE /v1/tokens/{id}``: revoke a token of the tenant (any tenant's, for an operator);
    its dashboard sessions end with it."""
    who = principal(request)
    store, token_id = runtime(request).store, request.path_params["id"]
    if who.scope is not Scope.OPERATOR:
        # An admin must not lock the operator out: operator tokens are revoked by operators.
        mine = {t.id: t for t in await store.list_tokens(who.tenant_id)}
        if token_id in mine and mine[token_id].scope is Scope.OPERATOR:
            raise ForbiddenError("only an operator token revokes an operator token")
    scope_tenant = None if who.scope is Scope.OPERATOR else who.tenant_id
    token = await store.revoke_token(scope_tenant, token_id, actor=who.actor)
    return json_response(token.to_json())


async def list_tenants(request: Request) -> Response:
    """``GET /v1/tenants?limit=&cursor=``: the tenants by id (operator only), a page at a time."""
    limit, after = page_request(request, "tenants", (str,), default=100, high=1000)
    found = await runtime(request).store.list_tenants(after=None if after is None else str(after[0]), limit=limit + 1)
    return page_response("tenants", "tenants", found, limit, lambda t: (t["id"],), lambda t: t)


async def create_tenant(request: Request) -> Response:
    """``POST /v1/tenants`` with ``{"name"}`` (operator only)."""
    body = await read_json(request)
    name = _optional_str(body, "name") if isinstance(body, dict) else None
    if name is None:
        raise BadRequestError('create a tenant with {"name": "team-a"}')
    created = await runtime(request).store.create_tenant(name, actor=principal(request).actor)
    return json_response(created, 201)


async def list_nodes(request: Request) -> Response:
    """``GET /v1/nodes``: the nodes serving the store, their leases and workers (operator only)."""
    return json_response({"nodes": await runtime(request).store.nodes()})


ROUTES = [
    Route("/v1/whoami", whoami, methods=["GET"]),
    Route("/v1/tokens", list_tokens, methods=["GET"]),
    Route("/v1/tokens", create_token, methods=["POST"]),
    Route("/v1/tokens/{id}", revoke_token, methods=["DELETE"]),
    Route("/v1/tenants", list_tenants, methods=["GET"]),
    Route("/v1/tenants", create_tenant, methods=["POST"]),
    Route("/v1/nodes", list_nodes, methods=["GET"]),
]
