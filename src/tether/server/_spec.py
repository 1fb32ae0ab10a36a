"""What each API route accepts and answers: one table, keyed like ``POLICY`` by method and route
path, from which :mod:`tether.server.openapi` generates the OpenAPI document.

Every route of the API (``/v1/...``, ``/healthz``, ``/metrics``, ``/openapi.json``) has an entry:
``create_app`` refuses to build otherwise, as it does for ``POLICY``, so the document cannot
leave a route out. To add a route: add its ``Route``, its ``POLICY`` entry in
:mod:`tether.server._access`, an :class:`Operation` here (its answers as models of
:mod:`tether.api_models`, the error statuses it may answer) and its section in
``docs/http-api.md`` (a test checks the document against the page both ways).

The table is declarative only: handlers do not validate requests against it (that would cost
every request a model validation). The contract test (``tests/contract``) proves that what
they answer conforms to it.

Errors every route shares are added by the generator, not listed here: ``400`` (a query
parameter the route does not take, see :mod:`tether.server._query`) and ``421`` (the ``Host``
guard) everywhere; ``401`` and ``403`` on every route that takes an API token (from ``POLICY``);
``413`` on every route that reads a body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import BaseModel

from tether import api_models as m

JsonSchema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Content:
    """A body: a media type and its schema (a model, or a JSON Schema for free-form JSON)."""

    media_type: str
    schema: type[BaseModel] | JsonSchema
    description: str = ""


@dataclass(frozen=True, slots=True)
class Param:
    """A query or header parameter."""

    name: str
    schema: JsonSchema
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One route and method: what it does, takes and answers."""

    summary: str
    tag: str
    answers: dict[int, tuple[Content, ...]]
    """Success statuses and their bodies."""
    errors: tuple[int, ...] = ()
    """Error statuses beyond the shared ones (see the module docstring)."""
    body: tuple[Content, ...] = ()
    """Accepted request bodies (one per media type)."""
    body_required: bool = False
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    description: str = ""
    internal: bool = False
    """For the runtime's own workers, not for clients."""
    path_params: dict[str, str] = field(default_factory=dict)
    """Descriptions of path parameters (every ``{name}`` of the path is a string)."""


def _json(schema: type[BaseModel] | JsonSchema, description: str = "") -> tuple[Content, ...]:
    return (Content("application/json", schema, description),)


ANY_JSON: JsonSchema = {}
"""Any JSON value."""
JSON_OBJECT: JsonSchema = {"type": "object"}
"""Any JSON object."""

WAIT = Param(
    "wait",
    {"type": "number", "minimum": 0, "maximum": 3600},
    "Seconds to wait for the run to end (or be stuck) before answering.",
)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
    "At most one run (or one delivery of a signal) per key.",
)
LIMIT_RUNS = Param("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}, "At most this many.")
LIMIT_AUDIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 200}, "At most this many.")
CURSOR = Param(
    "cursor",
    {"type": "string"},
    "The next_cursor of the previous page of this same list (opaque; any other text is refused, 400).",
)
LIMIT_PAGE = Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "At most this many.")
LIMIT_ENTRIES = Param(
    "limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}, "At most this many."
)
PAGED = (LIMIT_PAGE, CURSOR)
REASON = _json(m.ReasonBody, "Optional; recorded in the audit log.")
RUN = _json(m.Run)
ENV = _json(m.Environment)
DEP = "A deployment id (`dep_3f9a0c1b2d4e`) or its label (`v3`)."
RUN_ID = {"id": "A run id."}
PATH_SCHEMAS: dict[str, JsonSchema] = {"env": {"type": "string", "pattern": m.NAME_PATTERN}}
"""Path parameters narrower than any non-empty string."""

SPECS: dict[tuple[str, str], Operation] = {
    # operations
    ("GET", "/healthz"): Operation(summary="Is the server up", tag="operations", answers={200: _json(m.Health)}),
    ("GET", "/metrics"): Operation(
        summary="Prometheus metrics",
        tag="operations",
        answers={200: (Content("text/plain", {"type": "string"}, "Prometheus text format 0.0.4."),)},
    ),
    ("GET", "/openapi.json"): Operation(
        summary="This document", tag="operations", answers={200: _json(JSON_OBJECT, "OpenAPI 3.1.")}
    ),
    # ingress
    ("POST", "/v1/envs/{env}/workflows/{name}/runs"): Operation(
        summary="Start a run on the deployment an environment points at",
        tag="ingress",
        body=_json(JSON_OBJECT, "The workflow's input: its parameters by name (no body means {})."),
        query=(WAIT,),
        headers=(IDEMPOTENCY_KEY,),
        answers={201: _json(m.Run, "A new run."), 200: _json(m.Run, "The run the Idempotency-Key already names.")},
        errors=(404, 409, 422),
        path_params={"env": "An environment name.", "name": "A workflow name."},
    ),
    ("POST", "/v1/deployments/{dep}/workflows/{name}/runs"): Operation(
        summary="Start a run pinned to a deployment",
        tag="ingress",
        body=_json(JSON_OBJECT, "The workflow's input: its parameters by name (no body means {})."),
        query=(WAIT,),
        headers=(IDEMPOTENCY_KEY,),
        answers={201: _json(m.Run, "A new run."), 200: _json(m.Run, "The run the Idempotency-Key already names.")},
        errors=(404, 409, 422),
        path_params={"dep": DEP, "name": "A workflow name."},
    ),
    ("GET", "/v1/runs/{id}"): Operation(
        summary="A run", tag="ingress", answers={200: RUN}, errors=(404,), path_params=RUN_ID
    ),
    ("GET", "/v1/runs/{id}/result"): Operation(
        summary="A run once it ended, waiting for it",
        tag="ingress",
        query=(WAIT,),
        answers={200: RUN},
        errors=(404,),
        path_params=RUN_ID,
    ),
    ("GET", "/v1/runs/{id}/signals"): Operation(
        summary="The signals sent to a run, oldest first",
        tag="ingress",
        query=(LIMIT_ENTRIES, CURSOR),
        answers={200: _json(m.SignalList)},
        errors=(404,),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/signals/{name}"): Operation(
        summary="Send a signal to a run",
        tag="ingress",
        body=_json(ANY_JSON, "The payload, any JSON value (no body means null)."),
        headers=(IDEMPOTENCY_KEY,),
        answers={
            202: _json(m.SignalDelivery, "Delivered to an open wait, or buffered."),
            200: _json(m.SignalDelivery, "A duplicate: the Idempotency-Key already delivered it."),
        },
        errors=(404, 409, 422),
        path_params={"id": "A run id.", "name": "A signal the run's workflow declares."},
    ),
    ("GET", "/v1/runs/{id}/state"): Operation(
        summary="A run's durable state",
        tag="ingress",
        answers={200: _json(JSON_OBJECT, "Keys to values, as written with ctx.set.")},
        errors=(404,),
        path_params=RUN_ID,
    ),
    ("GET", "/v1/runs/{id}/journal"): Operation(
        summary="A run's journal, by index",
        tag="ingress",
        query=(
            LIMIT_ENTRIES,
            CURSOR,
            Param("from", {"type": "string", "pattern": "^[0-9]{1,9}$"}, "The index of the first page's first entry."),
        ),
        answers={200: _json(m.Journal)},
        errors=(404,),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/queries/{name}"): Operation(
        summary="Ask a run a query, answered by its pinned deployment",
        tag="ingress",
        body=_json(JSON_OBJECT, "The query's input: its parameters by name (no body means {})."),
        answers={200: _json(m.QueryAnswer)},
        errors=(404, 409, 422),
        path_params={"id": "A run id.", "name": "A query the run's workflow declares on its pinned deployment."},
    ),
    # admin: deployments
    ("POST", "/v1/deployments"): Operation(
        summary="Deploy a bundle, or register an endpoint",
        tag="deployments",
        body=(
            Content("application/gzip", {"type": "string", "format": "binary"}, "The bundle: a .tar.gz of the app."),
            Content("application/json", m.RegisterBody, "Register the endpoint at url."),
        ),
        body_required=True,
        query=(
            Param("env", {"type": "string"}, "Point this environment at the deployment, in the same transaction."),
            Param("app", {"type": "string"}, "The app as module:attribute, when tether.toml does not name it."),
            Param("isolation", {"type": "string", "enum": ["process", "sandbox"]}, "The workers' isolation tier."),
        ),
        answers={
            201: _json(m.Deployed, "A new deployment."),
            200: (
                Content("application/json", m.Deployed, "Identical content was deployed before."),
                Content(
                    "application/x-ndjson",
                    {"type": "string"},
                    'With Accept: application/x-ndjson: {"log"} lines, then {"status", "deployment"|"error"}.',
                ),
            ),
        },
    ),
    ("GET", "/v1/deployments"): Operation(
        summary="The deployments, oldest first", tag="deployments", query=PAGED, answers={200: _json(m.DeploymentList)}
    ),
    ("GET", "/v1/deployments/{dep}"): Operation(
        summary="One deployment with its manifest, code and environment",
        tag="deployments",
        answers={200: _json(m.DeploymentDetail)},
        errors=(404,),
        path_params={"dep": DEP},
    ),
    ("DELETE", "/v1/deployments/{dep}"): Operation(
        summary="Remove a drained deployment",
        tag="deployments",
        answers={200: _json(m.Deployment)},
        errors=(404, 409),
        path_params={"dep": DEP},
    ),
    ("GET", "/v1/deployments/{a}/diff/{b}"): Operation(
        summary="What changed from one deployment to another",
        tag="deployments",
        answers={200: _json(m.Diff)},
        errors=(404,),
        path_params={"a": DEP, "b": DEP},
    ),
    ("POST", "/v1/deployments/{dep}/check"): Operation(
        summary="Dry-run in-flight runs' journals on a deployment",
        tag="deployments",
        body=_json(m.CheckBody),
        answers={200: _json(m.CheckReport)},
        errors=(404,),
        path_params={"dep": DEP},
    ),
    # admin: environments
    ("GET", "/v1/envs"): Operation(
        summary="The environments, by name", tag="environments", query=PAGED, answers={200: _json(m.EnvironmentList)}
    ),
    ("PUT", "/v1/envs/{env}"): Operation(
        summary="Point an environment at a deployment, or split it",
        tag="environments",
        body=_json(m.EnvSetBody),
        body_required=True,
        answers={200: ENV},
        errors=(404, 409),
        path_params={"env": "An environment name."},
    ),
    ("POST", "/v1/envs/{env}/promote"): Operation(
        summary="Point an environment where another points",
        tag="environments",
        body=_json(m.PromoteBody),
        body_required=True,
        answers={200: ENV},
        errors=(404,),
        path_params={"env": "An environment name."},
    ),
    ("POST", "/v1/envs/{env}/rollback"): Operation(
        summary="Undo an environment's latest change",
        tag="environments",
        body=REASON,
        answers={200: ENV},
        errors=(404, 409),
        path_params={"env": "An environment name."},
    ),
    ("GET", "/v1/envs/{env}/history"): Operation(
        summary="An environment's changes, newest first",
        tag="environments",
        query=PAGED,
        answers={200: _json(m.EnvHistory)},
        errors=(404,),
        path_params={"env": "An environment name."},
    ),
    # admin: runs
    ("GET", "/v1/runs"): Operation(
        summary="Runs, stuck first, then newest first",
        tag="runs",
        query=(
            Param(
                "status",
                {"type": "string", "enum": list(get_args(m.RunStatusName))},
                "Only runs with this status.",
            ),
            Param("workflow", {"type": "string"}, "Only runs of this workflow."),
            Param("deployment", {"type": "string"}, "Only runs pinned to this deployment (id or label)."),
            Param("env", {"type": "string"}, "Only runs started through this environment."),
            Param("node", {"type": "string"}, "Only runs whose attempt this node runs now (it holds their lease)."),
            LIMIT_RUNS,
            CURSOR,
        ),
        answers={200: _json(m.RunList)},
        errors=(404,),
    ),
    ("POST", "/v1/runs/{id}/cancel"): Operation(
        summary="Cancel a run cooperatively",
        tag="runs",
        body=REASON,
        answers={200: RUN},
        errors=(404, 409),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/pause"): Operation(
        summary="Stop giving a run attempts",
        tag="runs",
        body=REASON,
        answers={200: RUN},
        errors=(404, 409),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/resume"): Operation(
        summary="Resume a paused run",
        tag="runs",
        body=REASON,
        answers={200: RUN},
        errors=(404, 409),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/kill"): Operation(
        summary="End a run and its children at once",
        tag="runs",
        body=REASON,
        answers={200: RUN},
        errors=(404, 409),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/restart"): Operation(
        summary="A new run with the same input",
        tag="runs",
        body=_json(m.RestartBody),
        answers={201: _json(m.Run, "The new run.")},
        errors=(404, 409, 422),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/fork"): Operation(
        summary="A new run from the first N entries of a journal",
        tag="runs",
        body=_json(m.ForkBody),
        body_required=True,
        answers={201: _json(m.Run, "The new run.")},
        errors=(404, 409),
        path_params=RUN_ID,
    ),
    ("POST", "/v1/runs/{id}/move"): Operation(
        summary="Re-pin a run to another deployment after a dry run",
        tag="runs",
        body=_json(m.MoveBody),
        body_required=True,
        answers={200: RUN},
        errors=(404, 409),
        path_params=RUN_ID,
    ),
    ("GET", "/v1/audit"): Operation(
        summary="The audit log, newest first",
        tag="runs",
        query=(
            LIMIT_AUDIT,
            Param("target", {"type": "string"}, "Only records about this run, deployment or environment."),
            CURSOR,
        ),
        answers={200: _json(m.AuditLog)},
    ),
    # who may do what
    ("GET", "/v1/whoami"): Operation(summary="What this request acts as", tag="access", answers={200: _json(m.Whoami)}),
    ("GET", "/v1/tokens"): Operation(
        summary="The tenant's tokens (never their secrets)",
        tag="access",
        query=(Param("tenant", {"type": "string"}, "Another tenant (operator only)."), *PAGED),
        answers={200: _json(m.TokenList)},
        errors=(404,),
    ),
    ("POST", "/v1/tokens"): Operation(
        summary="Create a token (its text is shown this once)",
        tag="access",
        body=_json(m.TokenBody),
        body_required=True,
        answers={201: _json(m.IssuedToken)},
        errors=(404, 409),
    ),
    ("DELETE", "/v1/tokens/{id}"): Operation(
        summary="Revoke a token",
        tag="access",
        answers={200: _json(m.Token)},
        errors=(404,),
        path_params={"id": "A token id."},
    ),
    ("GET", "/v1/tenants"): Operation(
        summary="The tenants, by id", tag="access", query=PAGED, answers={200: _json(m.TenantList)}
    ),
    ("GET", "/v1/nodes"): Operation(
        summary="The nodes serving the store, their leases and workers", tag="access", answers={200: _json(m.NodeList)}
    ),
    ("POST", "/v1/tenants"): Operation(
        summary="Create a tenant",
        tag="access",
        body=_json(m.TenantBody),
        body_required=True,
        answers={201: _json(m.Tenant)},
        errors=(409,),
    ),
    # internal
    ("POST", "/v1/internal/runs/{id}/journal"): Operation(
        summary="Append to a run's journal (workers only; the attempt token is in the body)",
        tag="internal",
        internal=True,
        body=_json(m.AppendBody),
        body_required=True,
        answers={200: _json(m.AppendAnswer)},
        errors=(409,),
        path_params=RUN_ID,
    ),
}
"""``(method, route path)`` → its operation. HEAD is answered as GET and not listed."""


def is_api(path: str) -> bool:
    """Whether a route path belongs to the API (and so needs an entry in :data:`SPECS`)."""
    return path.startswith("/v1/") or path in ("/healthz", "/metrics", "/openapi.json")
