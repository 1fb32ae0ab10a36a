"""Request parsing and response helpers shared by the API modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tether import _json
from tether.core.paging import CursorError, Key, cut, decode_cursor, encode_cursor
from tether.errors import BadRequestError, PayloadTooLargeError
from tether.server._access import Principal
from tether.server._auth import PRINCIPAL
from tether.server.runtime import Runtime

MAX_JSON_BYTES = 1024 * 1024
"""Largest JSON body accepted, in bytes (413 beyond)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of a JSON body (400 beyond): deeper documents would exhaust the stack of the
code that validates and stores them, and no workflow input needs them."""
MAX_IDEMPOTENCY_KEY = 255
"""Longest ``Idempotency-Key`` header accepted, in characters."""


def json_response(body: Any, status: int = 200) -> Response:
    """Serialise ``body`` as JSON."""
    return Response(_json.dumps(body), status_code=status, media_type="application/json")


def runtime(request: Request) -> Runtime:
    """The runtime the app's lifespan opened."""
    found: Runtime = request.app.state.runtime
    return found


def principal(request: Request) -> Principal:
    """Who the request acts as (set by ``tether.server._auth`` on every guarded route)."""
    found = request.scope.get(PRINCIPAL)
    # A public route never reaches here: acting in some tenant by default would be a hole.
    assert isinstance(found, Principal), f"{request.url.path} is a public route: it has no tenant"
    return found


def tenant(request: Request) -> str:
    """The request's tenant: its token's (``default`` while no token exists)."""
    return principal(request).tenant_id


def actor(request: Request) -> str:
    """Who acts, for the audit log: ``token:<name>@<tenant>``; while no token exists, the
    ``X-Tether-Actor`` header, else ``anonymous``."""
    return principal(request).actor


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes.

    Raises:
        PayloadTooLargeError: the body is over ``limit``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is {declared} bytes; the limit is {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: Request, *, limit: int = MAX_JSON_BYTES, depth: int = MAX_JSON_DEPTH, default: Any = ...
) -> Any:
    """The JSON body.

    Raises:
        BadRequestError: the body is missing (and no default), is not JSON, or is nested
            deeper than ``depth``.
        PayloadTooLargeError: the body is over ``limit`` bytes.
    """
    raw = await read_body(request, limit)
    if not raw.strip():
        if default is not ...:
            return default
        raise BadRequestError("the request needs a JSON body")
    try:
        value = _json.loads(raw)
        _json.check_depth(raw, value, depth)
    except _json.DepthError:
        raise BadRequestError(
            f"the body is nested more than {depth} levels deep; the limit is {depth}: flatten it"
        ) from None
    except _json.JSONDecodeError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None
    return value


async def read_object(request: Request, *, what: str, default: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON object body (``what`` says what it holds, for the refusal).

    Raises:
        BadRequestError: the body is missing (and no default), is not JSON, or is not an object.
        PayloadTooLargeError: the body is over the limit.
    """
    body = await read_json(request, default=default if default is not None else ...)
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object: {what}")
    return body


def int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter within bounds.

    Raises:
        BadRequestError: the parameter is not a whole number between ``low`` and ``high``.
    """
    text = request.query_params.get(name)
    if text is None:
        return default
    text = text.strip()
    if not text.lstrip("-").isdigit() or not text.isascii():
        raise BadRequestError(f"query parameter {name} must be a whole number, not {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise BadRequestError(f"query parameter {name} must be between {low} and {high}")
    return value


MAX_INTEGER = 2**63 - 1
"""The largest integer a body may carry where the store keeps it (SQLite's INTEGER)."""


def whole_number(value: Any) -> int | None:
    """``value`` as an integer if it is one in JSON's sense (``3`` or ``3.0``, never ``true``)
    and fits the store (at most :data:`MAX_INTEGER` either way), else None. JSON Schema counts
    ``3.0`` as an integer, and so does the API."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -MAX_INTEGER <= value <= MAX_INTEGER:
        return value
    return None


def float_param(request: Request, name: str, default: float, *, low: float, high: float) -> float:
    """A numeric query parameter within bounds."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequestError(f"query parameter {name} must be a number, not {text!r}") from None
    if not low <= value <= high:
        raise BadRequestError(f"query parameter {name} must be between {low:g} and {high:g}")
    return value


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, if sent.

    Raises:
        BadRequestError: the key is blank or longer than :data:`MAX_IDEMPOTENCY_KEY`.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequestError(
            f"the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} characters, not blank: "
            "send a unique string per operation (a UUID does), or leave the header out"
        )
    return key


def page_request(
    request: Request, kind: str, shape: Sequence[type], *, default: int, high: int
) -> tuple[int, Key | None]:
    """The page a list route is asked for: ``?limit=`` (1 to ``high``) and ``?cursor=``.

    Raises:
        BadRequestError: the limit is out of bounds, or the cursor is not one of this list.
    """
    limit = int_param(request, "limit", default, low=1, high=high)
    text = request.query_params.get("cursor")
    if not text:
        return limit, None
    try:
        return limit, decode_cursor(kind, text, shape)
    except CursorError as exc:
        raise BadRequestError(
            f"cannot read cursor {text[:60]!r}: {exc}; pass back the next_cursor of the previous page "
            "of this same list, or leave cursor out to start at the beginning"
        ) from None


def page_response(
    name: str, kind: str, rows: Sequence[Any], limit: int, key_of: Callable[[Any], Key], render: Callable[[Any], Any]
) -> Response:
    """``{name: [...], "next_cursor": ...}`` from up to ``limit + 1`` rows read in the list's order;
    ``next_cursor`` is null on the last page."""
    page = cut(rows, limit, key_of)
    cursor = None if page.next_key is None else encode_cursor(kind, page.next_key)
    return json_response({name: [render(r) for r in page.items], "next_cursor": cursor})
