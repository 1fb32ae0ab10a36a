"""Wire shapes of the protocol between the runtime and a deployment (HTTP + JSON).

- ``GET /tether/manifest`` → :class:`ManifestResponse`.
- ``POST /tether/invoke`` with :class:`InvokeRequest` → :class:`InvokeResponse`; the endpoint
  answers 409 when its manifest digest is not the one the run is pinned to. With ``query``,
  the same request asks for a query's answer instead of an attempt.
- ``POST {runtime_url}/v1/internal/runs/{run_id}/journal`` with :class:`AppendRequest` →
  :class:`AppendResponse`; 409 ``fenced`` when the attempt is stale or an entry contradicts
  a durable one.

Bodies are plain JSON objects; these TypedDicts document them and type the code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change of the shapes below."""

MANIFEST_PATH = "/tether/manifest"
INVOKE_PATH = "/tether/invoke"


def journal_path(run_id: str) -> str:
    """The runtime's append endpoint for ``run_id``."""
    return f"/v1/internal/runs/{run_id}/journal"


class ManifestResponse(TypedDict):
    """What an endpoint serves."""

    manifest: dict[str, Any]
    digest: str
    protocol: int
    code: NotRequired[dict[str, str]]
    """``{path: sha256}`` of the app's files (endpoints; a bundle's come from its artifact)."""
    environment: NotRequired[dict[str, Any]]
    """The fingerprint of the interpreter serving it (see :mod:`tether._environment`)."""


class QueryCall(TypedDict):
    """A query to answer instead of an attempt (see :mod:`tether.sdk._query`)."""

    name: str
    input: dict[str, Any]


class InvokeRequest(TypedDict):
    """One attempt of one run."""

    run_id: str
    attempt: int
    token: str
    deployment_id: str
    deployment_label: str
    manifest_digest: str
    component: str
    input: dict[str, Any]
    journal: list[dict[str, Any]]
    runtime_url: str
    dry_run: NotRequired[bool]
    """Replay only: execute nothing, append nothing; answer ``compatible`` or ``mismatch``."""
    query: NotRequired[QueryCall]
    """Answer this query of the run from its journal (``answered`` with the output, or
    ``failed``); always sent with ``dry_run`` and no token, so nothing can be appended."""
    code_digest: NotRequired[str]
    """The code digest the run is pinned to (registered endpoints check it against their own)."""
    environment_digest: NotRequired[str]
    """The environment digest the run is pinned to (registered endpoints check it too)."""


class ErrorInfo(TypedDict):
    """A failure, as journaled and reported."""

    type: str
    message: str
    traceback: NotRequired[str]


class InvokeResponse(TypedDict):
    """How an attempt ended."""

    outcome: Literal[
        "completed", "failed", "suspended", "mismatch", "stuck", "fenced", "compatible", "continue_as_new", "answered"
    ]
    """``stuck``: the code cannot go on with what the journal holds (``error`` says why, e.g. a
    ``SignalRejected`` payload); the run waits for an operator, as after a ``mismatch``."""
    output: NotRequired[Any]
    error: NotRequired[ErrorInfo]
    waiting_on: NotRequired[list[int]]
    input: NotRequired[dict[str, Any]]
    """For ``continue_as_new``: the next run's input."""
    upgrade: NotRequired[bool]
    """For ``continue_as_new``: pin the next run to the environment's current deployment."""
    replayed: NotRequired[int]
    """For ``compatible``: how many journal indexes the dry run got through."""
    mismatch: NotRequired[dict[str, Any]]


class NewEntry(TypedDict):
    """An entry an attempt appends."""

    index: int
    kind: str
    name: str
    args_digest: str
    completed: bool
    args: NotRequired[Any]
    result: NotRequired[Any]
    error: NotRequired[ErrorInfo | None]
    manual_digest: NotRequired[str | None]
    duration: NotRequired[float]
    """Seconds the action took in the worker (steps, runs, model calls), for metrics."""
    tries: NotRequired[int]
    """How many times the worker tried the action, when more than once (retries), for metrics."""


class AppendRequest(TypedDict):
    """A batch of entries from one attempt, committed atomically."""

    attempt: int
    token: str
    entries: list[NewEntry]


class Completion(TypedDict):
    """A waiting entry the runtime completed while appending it (e.g. a buffered signal)."""

    index: int
    result: Any
    error: ErrorInfo | None


class AppendResponse(TypedDict):
    """The acknowledgement: every entry is durable."""

    completions: list[Completion]


def manifest_refusal(
    served_digest: str,
    request: InvokeRequest,
    *,
    code_digest: str | None = None,
    environment_digest: str | None = None,
) -> dict[str, str] | None:
    """The refusal an endpoint answers when a run is pinned to another snapshot, else None.

    Code swapped under an endpoint must fail loudly, never serve a run pinned elsewhere: the
    manifest digest is always compared, and the code and environment digests whenever the
    request names them (the runtime recorded them when the endpoint was registered).
    """
    pinned = str(request.get("manifest_digest"))
    if pinned != served_digest:
        return {
            "code": "manifest_mismatch",
            "message": f"endpoint serves manifest {served_digest[:12]}, run pinned to {pinned[:12]}",
        }
    for field, served in (("code_digest", code_digest), ("environment_digest", environment_digest)):
        wanted = request.get(field)
        if wanted is not None and served is not None and wanted != served:
            what = field.removesuffix("_digest")
            return {
                "code": "manifest_mismatch",
                "message": f"endpoint serves {what} {served[:12]}, run pinned to {str(wanted)[:12]}",
            }
    return None


SIGNATURE_HEADER = "x-tether-signature"
"""Carries ``sha256=<hex HMAC>`` on every runtime request to an endpoint."""
TIMESTAMP_HEADER = "x-tether-timestamp"
"""Seconds since the epoch when the runtime signed the request (inside the HMAC)."""
NONCE_HEADER = "x-tether-nonce"
"""A random value used once (inside the HMAC): an endpoint refuses a request it has seen."""
MAX_SKEW = 300.0
"""Seconds a signed request stays acceptable; an endpoint remembers nonces at least that long."""


def sign(secret: str, body: bytes, *, timestamp: str = "", nonce: str = "") -> str:
    """The signature header's value for ``body`` (a GET signs its path) at ``timestamp`` with ``nonce``."""
    message = f"{timestamp}\n{nonce}\n".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, *, now: float) -> dict[str, str]:
    """The headers that authenticate one request: its time, a fresh nonce and the HMAC of both
    with the body, so a captured request cannot be replayed."""
    timestamp, nonce = f"{now:.3f}", secrets.token_hex(16)
    return {
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: sign(secret, body, timestamp=timestamp, nonce=nonce),
    }


class ReplayGuard:
    """An endpoint's memory of the nonces it accepted within :data:`MAX_SKEW`."""

    def __init__(self) -> None:
        """Start with no nonce seen."""
        self._seen: dict[str, float] = {}

    def check(self, secret: str, body: bytes, headers: Mapping[str, str], *, now: float) -> str | None:
        """Why the request must be refused (unsigned, stale, replayed), or None to accept it."""
        timestamp, nonce = headers.get(TIMESTAMP_HEADER), headers.get(NONCE_HEADER)
        signature = headers.get(SIGNATURE_HEADER)
        if not timestamp or not nonce or signature is None:
            return "the request is not signed with this endpoint's secret (timestamp, nonce and signature)"
        expected = sign(secret, body, timestamp=timestamp, nonce=nonce)
        if not hmac.compare_digest(expected, signature):
            return "the request is not signed with this endpoint's secret"
        try:
            sent = float(timestamp)
        except ValueError:
            return "the request's timestamp is not a number"
        if abs(now - sent) > MAX_SKEW:
            return f"the request was signed {now - sent:.0f}s ago, more than {MAX_SKEW:.0f}s: check both clocks"
        for old in [n for n, at in self._seen.items() if now - at > 2 * MAX_SKEW]:
            del self._seen[old]
        if nonce in self._seen:
            return "the request was already received (a replayed nonce): it is refused and runs nothing"
        self._seen[nonce] = now
        return None
