"""The ASGI app that serves an app over the runtime⇄deployment protocol (``/tether/*``).

Bundle workers started by the runtime and user-hosted endpoints (``tether serve``) both use
it, so both kinds of deployment are dispatched identically.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether import _bundle, _environment, _json
from tether.errors import FencedError
from tether.protocol import (
    INVOKE_PATH,
    MANIFEST_PATH,
    PROTOCOL_VERSION,
    AppendResponse,
    Completion,
    InvokeRequest,
    NewEntry,
    ReplayGuard,
    journal_path,
    manifest_refusal,
)
from tether.sdk._attempt import Attempt
from tether.sdk._query import answer_query
from tether.sdk.app import App


def _respond(body: Any, status: int = 200) -> Response:
    return Response(_json.dumps(body), status_code=status, media_type="application/json")


class HttpJournalSink:
    """Appends an attempt's entries to the runtime over HTTP."""

    def __init__(self, client: httpx.AsyncClient, request: InvokeRequest) -> None:
        """Bind the sink to one attempt (its run, number and token)."""
        self._client = client
        self._url = request["runtime_url"].rstrip("/") + journal_path(request["run_id"])
        self._attempt = request["attempt"]
        self._token = request["token"]

    async def append(self, entries: list[NewEntry]) -> list[Completion]:
        """POST the batch; the runtime answers once it is durable."""
        body = _json.dumps({"attempt": self._attempt, "token": self._token, "entries": entries})
        response = await self._client.post(self._url, content=body, headers={"content-type": "application/json"})
        if response.status_code == 409:
            raise FencedError(response.json().get("error", {}).get("message", "append refused"))
        response.raise_for_status()
        answer: AppendResponse = _json.loads(response.content)
        return answer["completions"]


def _unsigned(why: str) -> dict[str, Any]:
    return {"error": {"code": "unauthenticated", "message": why}}


def create_endpoint(
    app: App, *, secret: str, code: dict[str, str] | None = None, environment: dict[str, Any] | None = None
) -> Starlette:
    """Build the ASGI app serving ``app``'s manifest and invocations.

    Every request must carry the HMAC of its timestamp, a nonce and its body (a GET: its path)
    under ``secret``, the secret the deployment was registered with; anything else, a request
    signed more than five minutes away from now, or one whose nonce was seen, is refused with
    401 (a captured request cannot be replayed to run its steps again).

    ``code`` (``{path: sha256}`` of the app's files, as ``tether serve`` reads them at start)
    and ``environment`` (this interpreter's fingerprint, computed when omitted) are reported
    with the manifest; an invoke pinned to other code or another environment is refused with
    409, so a body swapped behind the URL stops the run as surely as a changed docstring.
    """
    if not secret:
        raise ValueError("an endpoint needs a secret: the runtime signs every request with it")
    manifest = app.manifest()
    digest = app.manifest_digest()
    code = dict(code or {})
    environment = environment if environment is not None else _environment.fingerprint()
    serves = {
        "manifest": manifest,
        "digest": digest,
        "protocol": PROTOCOL_VERSION,
        "code": code,
        "environment": environment,
    }
    code_digest = _bundle.code_digest(code)
    environment_digest = _environment.digest(environment)
    manifest_body = _json.dumps(serves)
    guard = ReplayGuard()
    state: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
            state["client"] = client
            yield

    async def get_manifest(request: Request) -> Response:
        refused = guard.check(secret, MANIFEST_PATH.encode(), request.headers, now=time.time())
        if refused is not None:
            return _respond(_unsigned(refused), 401)
        return Response(manifest_body, media_type="application/json")

    async def invoke(request: Request) -> Response:
        raw = await request.body()
        refused = guard.check(secret, raw, request.headers, now=time.time())
        if refused is not None:
            return _respond(_unsigned(refused), 401)
        try:
            body: InvokeRequest = _json.loads(raw)
        except _json.JSONDecodeError:
            return _respond({"error": {"code": "bad_request", "message": "body is not JSON"}}, 400)
        refusal = manifest_refusal(digest, body, code_digest=code_digest, environment_digest=environment_digest)
        if refusal is not None:
            return _respond({"error": refusal, "serves": serves}, 409)
        if "query" in body:
            return _respond(await answer_query(app, body))
        attempt = Attempt(app, body, HttpJournalSink(state["client"], body))
        return _respond(await attempt.execute())

    return Starlette(
        routes=[Route(MANIFEST_PATH, get_manifest, methods=["GET"]), Route(INVOKE_PATH, invoke, methods=["POST"])],
        lifespan=lifespan,
    )
