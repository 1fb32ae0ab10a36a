"""Internal API: the journal appends of running attempts (authenticated by attempt token)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.errors import BadRequestError, FencedError
from tether.server.api._http import json_response, read_json, runtime, whole_number

MAX_APPEND_BYTES = 16 * 1024 * 1024
MAX_APPEND_DEPTH = 128
"""Deepest nesting of an append: the API's limit for what users send, plus the append's own
levels (the body, its entries, an entry, its result's envelope), with room to spare."""
_ENTRY_KEYS = ("index", "kind", "name", "args_digest", "completed")


def _check(body: Any) -> tuple[int, str, list[Any]]:
    if not isinstance(body, dict):
        raise BadRequestError("an append is a JSON object with attempt, token and entries")
    attempt, token, entries = whole_number(body.get("attempt")), body.get("token"), body.get("entries")
    if attempt is None or not isinstance(token, str) or not isinstance(entries, list):
        raise BadRequestError("an append needs an integer attempt, a string token and a list of entries")
    for entry in entries:
        if not isinstance(entry, dict) or any(key not in entry for key in _ENTRY_KEYS):
            raise BadRequestError(f"every entry needs {', '.join(_ENTRY_KEYS)}")
        index = whole_number(entry["index"])
        if index is None:
            raise BadRequestError("entry index must be an integer")
        entry["index"] = index
    return attempt, token, entries


async def append(request: Request) -> Response:
    """``POST /v1/internal/runs/{id}/journal``: durable before it answers; fenced."""
    run_id = request.path_params["id"]
    attempt, token, entries = _check(await read_json(request, limit=MAX_APPEND_BYTES, depth=MAX_APPEND_DEPTH))
    (result,) = await runtime(request).dispatcher.append_batch(
        [{"run_id": run_id, "attempt": attempt, "token": token, "entries": entries}]
    )
    if "error" in result:
        raise FencedError(result["error"]["message"])
    return json_response({"completions": result["completions"]})


ROUTES = [Route("/v1/internal/runs/{id}/journal", append, methods=["POST"])]
