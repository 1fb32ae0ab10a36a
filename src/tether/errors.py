"""Errors of tether: one root, stable codes, typed attributes.

The tree::

    TetherError                       code                 HTTP
    ├── TerminalError                 terminal             (user code: never retried)
    │   ├── StepFailedError           step_failed          (a step failed for good)
    │   ├── ChildFailedError          child_failed         (a child run failed)
    │   ├── AgentError                agent_failed         (no valid final answer)
    │   ├── IntegrationError          integration          (a framework agent cannot run as asked)
    │   └── RunCancelledError         cancelled            (the run is being cancelled)
    ├── SignalTimeoutError            signal_timeout       (also a TimeoutError)
    ├── JournalMismatchError          journal_mismatch     409
    ├── BadRequestError               bad_request          400
    │   └── BundleError               bad_bundle           400
    │       └── RequirementsError     bad_requirements     400
    ├── UnauthenticatedError          unauthenticated      401
    ├── ForbiddenError                forbidden            403
    ├── NotFoundError                 not_found            404
    ├── HostNotAllowedError           host_not_allowed     421
    ├── ConflictError                 conflict             409
    │   ├── FencedError               fenced               409
    │   └── QueryFailedError          query_failed         409
    │       └── QueryRefusedError     query_refused        409 (a query issued a journaled command)
    ├── SnapshotError                 snapshot_changed     409
    ├── SchemaError                   schema_violation     422
    ├── PayloadTooLargeError          too_large            413
    ├── WorkerUnavailableError        worker_unavailable   503
    ├── StoreUnavailableError         store_unavailable    503 (with Retry-After)
    └── ApiError                      (the server's code)  (raised by the client)

Every error serialises as ``{"error": {"code": ..., "message": ...}}`` on the HTTP API.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TetherError(Exception):
    """Root of every error tether raises."""

    code: ClassVar[str] = "internal"
    """Stable machine-readable code, used in HTTP error bodies."""
    status: ClassVar[int] = 500
    """The HTTP status the API answers with."""

    def __init__(self, message: str) -> None:
        """Create the error with its human-readable message."""
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        """The API error body."""
        return {"error": {"code": self.code, "message": self.message}}


class TerminalError(TetherError):
    """Raise from a step or a workflow to fail without retrying."""

    code = "terminal"


class StepFailedError(TerminalError):
    """A step failed and its retries are exhausted; the failure is journaled.

    On replay the same error is raised again from the journal, with the same ``error_type``
    and ``message``, so workflow code that catches it behaves identically.
    """

    code = "step_failed"

    def __init__(self, name: str, error_type: str, message: str) -> None:
        """Describe the failed step."""
        super().__init__(f"step {name} failed: {error_type}: {message}")
        self.name = name
        self.error_type = error_type
        self.reason = message


class ChildFailedError(TerminalError):
    """A child run ended without an output (failed, cancelled or killed)."""

    code = "child_failed"

    def __init__(self, workflow: str, error_type: str, message: str) -> None:
        """Describe the failed child."""
        super().__init__(f"child {workflow} failed: {error_type}: {message}")
        self.workflow = workflow
        self.error_type = error_type
        self.reason = message


class AgentError(TerminalError):
    """An agent gave no valid final answer: it ran out of turns, or its answer failed validation."""

    code = "agent_failed"

    def __init__(self, agent: str, message: str) -> None:
        """Name the agent and what went wrong."""
        super().__init__(f"agent {agent}: {message}")
        self.agent = agent


class IntegrationError(TerminalError):
    """A framework agent (OpenAI Agents SDK, Pydantic AI) cannot run as asked.

    It is not registered with the app, uses a feature tether cannot make durable, or the
    framework's extra is not installed; the message says what to do instead.
    """

    code = "integration"


class RunCancelledError(TerminalError):
    """The run is being cancelled: raised at its waits (``sleep``, ``signal``).

    Catch it to compensate (steps still run), then re-raise it, or return: a run that ends by
    raising it is ``cancelled``.
    """

    code = "cancelled"

    def __init__(self) -> None:
        """The run was cancelled by an operator."""
        super().__init__("the run was cancelled")


class SignalTimeoutError(TetherError, TimeoutError):
    """``ctx.signal(name, timeout=...)`` saw no signal in time."""

    code = "signal_timeout"

    def __init__(self, name: str) -> None:
        """Name the signal that timed out."""
        super().__init__(f"no signal {name!r} arrived before its timeout")
        self.name = name


class JournalMismatchError(TetherError):
    """The code replayed against a run's journal issued something the journal does not hold."""

    code = "journal_mismatch"
    status = 409

    def __init__(self, run_id: str, index: int, expected: str | None, issued: str | None) -> None:
        """Render the diff from its parts."""
        if issued is None:
            text = f"entry {index}: journal has {expected}, code finished without issuing it"
        else:
            text = f"entry {index}: journal has {expected}, code issued {issued}"
        super().__init__(f"run {run_id}: {text}")
        self.run_id = run_id
        self.index = index
        self.expected = expected
        self.issued = issued


class BadRequestError(TetherError):
    """The request is malformed."""

    code = "bad_request"
    status = 400


class BundleError(BadRequestError):
    """An uploaded bundle cannot be read or its app cannot be loaded."""

    code = "bad_bundle"


class RequirementsError(BundleError):
    """A bundle's dependencies (``requirements.txt``, ``pyproject.toml`` + ``uv.lock``) cannot be
    resolved or installed; the message carries uv's own words."""

    code = "bad_requirements"


class SnapshotError(TetherError):
    """What a deployment would load is not what it was deployed with: its stored artifact, its
    unpacked files or its environment changed. The run stops ``stuck``; nothing runs.

    ``kind`` names what changed (``ArtifactChanged``, ``CodeChanged``, ``EnvironmentChanged``,
    ``EndpointChanged``) and ``changes`` lists each difference (a file, a package).
    """

    code = "snapshot_changed"
    status = 409

    def __init__(self, kind: str, message: str, changes: list[str] | None = None) -> None:
        """Describe what changed."""
        super().__init__(message)
        self.kind = kind
        self.changes = list(changes or [])

    def to_reason(self) -> dict[str, Any]:
        """The run's ``stuck_reason``."""
        return {"type": self.kind, "message": self.message, "changes": self.changes}


class UnauthenticatedError(TetherError):
    """The request carries no usable credential: no token, or one that is unknown, revoked or expired."""

    code = "unauthenticated"
    status = 401


class ForbiddenError(TetherError):
    """The credential is valid but its scope does not allow this request."""

    code = "forbidden"
    status = 403


class HostNotAllowedError(TetherError):
    """The request names a ``Host`` the server does not answer to (the DNS rebinding guard)."""

    code = "host_not_allowed"
    status = 421


class NotFoundError(TetherError):
    """The named tenant object does not exist."""

    code = "not_found"
    status = 404


class ConflictError(TetherError):
    """The request conflicts with the current state, or is refused."""

    code = "conflict"
    status = 409


class FencedError(ConflictError):
    """A journal append came from a stale attempt or contradicts a durable entry."""

    code = "fenced"


class QueryFailedError(ConflictError):
    """A query handler could not answer: it raised, or the run's deployment cannot be invoked."""

    code = "query_failed"


class QueryRefusedError(QueryFailedError):
    """A query handler issued a journaled command (a step, a sleep, a signal wait...).

    A query reads the run as its journal left it; it never adds to the journal or changes the
    run. Raised in the handler at the call, and answered 409 by the API.
    """

    code = "query_refused"


class SchemaError(TetherError):
    """A payload violates the pinned deployment's schema."""

    code = "schema_violation"
    status = 422


class WorkerUnavailableError(TetherError):
    """A deployment's worker could not be started or reached for now; retried later."""

    code = "worker_unavailable"
    status = 503


class StoreUnavailableError(TetherError):
    """The store cannot take writes for now: its disk is full, another process holds its lock,
    or it became read-only; or (PostgreSQL) the database cannot be reached. Reads go on; the
    server retries on its own once the fault clears.

    ``reason`` is ``full``, ``locked``, ``read_only``, ``io`` or ``unreachable`` (PostgreSQL);
    ``retry_after`` the seconds a client should wait before it tries again (the HTTP answer's
    ``Retry-After``).
    """

    code = "store_unavailable"
    status = 503

    def __init__(self, reason: str, message: str, *, retry_after: int = 5) -> None:
        """Describe the fault and when to try again."""
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class PayloadTooLargeError(TetherError):
    """A payload is over the configured size bound."""

    code = "too_large"
    status = 413


class ApiError(TetherError):
    """An error answer from a tether server, as seen by :class:`tether.client.Client`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        """Keep the server's status and code."""
        super().__init__(message)
        self.http_status = status
        self.error_code = code

    def to_json(self) -> dict[str, Any]:
        """The error body as the server sent it."""
        return {"error": {"code": self.error_code, "message": self.message}}
