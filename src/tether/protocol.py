"""Wire shapes of the protocol between the runtime and a deployment (HTTP + JSON).

- ``GET /tether/manifest`` → :class:`ManifestResponse`.
- ``POST /tether/invoke`` with :class:`InvokeRequest` → :class:`InvokeResponse`; the endpoint
  answers 409 when its manifest digest is not the one the run is pinned to.
- ``POST {runtime_url}/v1/internal/runs/{run_id}/journal`` with :class:`AppendRequest` →
  :class:`AppendResponse`; 409 ``fenced`` when the attempt is stale or an entry contradicts
  a durable one.

Bodies are plain JSON objects; these TypedDicts document them and type the code.
"""

from __future__ import annotations

import hashlib
import hmac
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

    outcome: Literal["completed", "failed", "suspended", "mismatch", "stuck", "fenced", "compatible", "continue_as_new"]
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
"""Carries ``sha256=<hex HMAC of the request body>`` on every runtime request to an endpoint."""


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body`` (a GET signs its path)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is the one ``secret`` gives ``body``."""
    return signature is not None and hmac.compare_digest(sign(secret, body), signature)
