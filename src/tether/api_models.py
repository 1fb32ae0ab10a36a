"""The objects of the public HTTP API, as pydantic models: what the server answers, what it
accepts, and what :class:`tether.client.Client` returns.

The server's OpenAPI document (``GET /openapi.json``) is generated from these models and the
route table in :mod:`tether.server._spec`, so the document, the client and the server share one
definition. The server itself does not validate requests with them: each handler keeps its own
cheap checks (the hot path stays free of per-request model validation), and the contract test
(``tests/contract``) proves that what it answers conforms.

Answers are open (``extra="allow"``): a newer server may add fields, and an older client keeps
working. Every answer model can also be read like the dict it was before
(``run["status"]`` as well as ``run.status``), so code written against the dict form goes on working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatusName = Literal[
    "pending", "running", "suspended", "paused", "stuck", "completed", "failed", "cancelled", "killed"
]
"""A run's status (``tether.core.status.RunStatus``)."""
ScopeName = Literal["read", "ingress", "admin", "operator"]
"""A token's scope."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""Environment names."""
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Tenant names."""
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Token names."""


class ApiObject(BaseModel):
    """Base of every answer: open to new fields, readable by attribute and, as before, by key."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def __getitem__(self, key: str) -> Any:
        """The field ``key`` by its wire name (``diff["from"]``), as on the dict this used to be.

        Raises:
            KeyError: the server did not send that field.
        """
        name = _field_name(type(self), key)
        if name in type(self).model_fields:
            if name not in self.model_fields_set:
                raise KeyError(key)
            return getattr(self, name)
        extra = self.model_extra or {}
        return extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key`` by its wire name, or ``default`` when the server did not send it."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def keys(self) -> list[str]:
        """The wire names of the fields the server sent."""
        fields = type(self).model_fields
        sent = [fields[n].alias or n for n in fields if n in self.model_fields_set]
        return sent + list(self.model_extra or {})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as the server sent it (wire names, extra fields kept)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def __eq__(self, other: object) -> bool:
        """Equal to another answer with the same fields, or — as the dict this used to be — to a
        dict of its JSON form."""
        if isinstance(other, dict):
            return self.to_dict() == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


def _field_name(model: type[BaseModel], key: str) -> str:
    for name, info in model.model_fields.items():
        if info.alias == key:
            return name
    return key


class Request(BaseModel):
    """Base of request bodies: unknown fields are ignored by the server, so they are allowed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- errors and operations ------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable code (docs/errors.md).")
    message: str = Field(description="What is wrong and, where there is one, what to do instead.")


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message"}}``."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class Health(ApiObject):
    """``GET /healthz``."""

    ok: bool


# --- runs -------------------------------------------------------------------------------------


class Run(ApiObject):
    """One execution of a workflow, pinned to its deployment."""

    id: str
    workflow: str
    deployment_id: str
    env: str | None
    status: RunStatusName
    input: Any = Field(description="The workflow's input, as started.")
    output: Any = Field(description="The workflow's output once completed, else null.")
    error: Any = Field(description='`{"type", "message"}` of a failed or cancelled run, else null.')
    stuck_reason: Any = Field(description="Why a stuck run stopped (a journal mismatch or a snapshot change).")
    last_error: Any = Field(description="The latest infrastructure failure of an attempt.")
    attempt: int
    node: str | None = Field(
        default=None, description="The node running the attempt now (its lease holder); null when none is."
    )
    parent_run_id: str | None
    idempotency_key: str | None
    linked_from: str | None = Field(description="The run this one was restarted or forked from.")
    link_kind: str | None = Field(description="`restart` or `fork`.")
    created_at: float
    updated_at: float
    completed_at: float | None


class RunList(ApiObject):
    """``GET /v1/runs``."""

    runs: list[Run]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class JournalEntry(ApiObject):
    """One entry of a run's journal."""

    index: int
    kind: str
    name: str
    args_digest: str
    completed: bool
    result: Any
    error: Any
    attempt: int
    created_at: float
    completed_at: float | None
    manual_digest: str | None = None
    args: Any = None
    extra: dict[str, Any] | None = None


class Journal(ApiObject):
    """``GET /v1/runs/{id}/journal``."""

    entries: list[JournalEntry]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class SignalRecord(ApiObject):
    """A signal sent to a run."""

    id: int
    name: str
    payload: Any
    created_at: float = Field(description="When the signal arrived.")
    sent_by: str | None = Field(
        default=None, description="Who sent it, as the audit log names them; null if not recorded."
    )
    consumed_by_entry: int | None = Field(
        description="The journal index of the wait that took it; null while buffered."
    )


class SignalList(ApiObject):
    """``GET /v1/runs/{id}/signals``."""

    signals: list[SignalRecord]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class QueryAnswer(ApiObject):
    """``POST /v1/runs/{id}/queries/{name}``: a query's answer, from the run's pinned deployment."""

    run_id: str
    query: str
    deployment_id: str
    deployment_label: str
    output: Any = None


class SignalDelivery(ApiObject):
    """The answer to sending a signal."""

    run_id: str
    signal: str
    delivered_to_entry: int | None
    buffered: bool
    woken: bool
    duplicate: bool


# --- deployments ----------------------------------------------------------------------------


class Deployment(ApiObject):
    """An immutable snapshot of an app (the lifecycle fields come with lists and reads)."""

    id: str
    label: str
    kind: Literal["bundle", "endpoint"]
    app: str | None
    app_ref: str | None
    url: str | None
    bundle_digest: str | None
    manifest_digest: str
    workflows: list[str]
    created_at: float
    created_by: str
    removed_at: float | None
    environment_mode: str | None
    isolation: str
    status: Literal["active", "draining", "drained", "removed"] | None = None
    environments: list[str] | None = None
    in_flight: int | None = None
    runs_by_status: dict[str, int] | None = None
    workers: int | None = None
    worker_started_at: float | None = None
    cold_starts: int | None = None
    cold_start_seconds: dict[str, float | None] | None = None


class DeploymentDetail(Deployment):
    """``GET /v1/deployments/{dep}``: a deployment with its manifest, code and environment."""

    manifest: dict[str, Any]
    code: dict[str, Any] | None
    environment: dict[str, Any] | None
    build_log: str | None


class Deployed(Deployment):
    """``POST /v1/deployments``: the deployment, and whether it is new."""

    created: bool
    env: str | None


class DeploymentList(ApiObject):
    """``GET /v1/deployments``."""

    deployments: list[Deployment]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class Change(ApiObject):
    """One difference between two deployments."""

    component: str
    change: str
    detail: str


class AffectedRun(ApiObject):
    """An in-flight run that a change would touch if runs were not pinned."""

    run_id: str
    workflow: str
    changed: list[str]


class Diff(ApiObject):
    """``GET /v1/deployments/{a}/diff/{b}``."""

    from_: Deployment = Field(alias="from")
    to: Deployment
    changes: list[Change]
    runs_affected_if_unpinned: list[AffectedRun]


class Verdict(ApiObject):
    """Whether one run's journal replays on a deployment."""

    run_id: str
    workflow: str
    status: RunStatusName
    deployment_id: str
    compatible: bool
    replayed: int | None = None
    mismatch: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    signals: list[dict[str, Any]] | None = None


class CheckReport(ApiObject):
    """``POST /v1/deployments/{dep}/check``."""

    deployment: Deployment
    runs: list[Verdict]
    compatible: int
    incompatible: int


# --- environments ---------------------------------------------------------------------------


class Target(ApiObject):
    """A deployment an environment points at, with its weight."""

    deployment_id: str
    weight: int


class Environment(ApiObject):
    """A named pointer to one deployment, or a weighted split over several."""

    name: str
    targets: list[Target]
    updated_at: float


class EnvironmentList(ApiObject):
    """``GET /v1/envs``."""

    environments: list[Environment]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class EnvChange(ApiObject):
    """One change of an environment's pointer."""

    id: int
    action: str
    targets: list[Target]
    previous: list[Target] | None
    actor: str
    reason: str | None
    undone: bool
    created_at: float


class EnvHistory(ApiObject):
    """``GET /v1/envs/{env}/history``."""

    history: list[EnvChange]

    # --- audit, tokens, tenants -----------------------------------------------------------------
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class AuditRecord(ApiObject):
    """One audited act."""

    id: int
    actor: str
    action: str
    target: str | None
    details: Any
    created_at: float


class AuditLog(ApiObject):
    """``GET /v1/audit``."""

    audit: list[AuditRecord]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class Token(ApiObject):
    """An API token, without its secret."""

    id: str
    tenant: str
    name: str
    scope: ScopeName
    actor: str
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None


class IssuedToken(Token):
    """``POST /v1/tokens``: the token and, this once, its text."""

    token: str = Field(description="What to send as `Authorization: Bearer`; never shown again.")


class TokenList(ApiObject):
    """``GET /v1/tokens``."""

    tokens: list[Token]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class Whoami(ApiObject):
    """``GET /v1/whoami``."""

    tenant: str
    scope: ScopeName
    actor: str
    mode: Literal["local", "token"]
    token: Token | None


class Tenant(ApiObject):
    """A tenant."""

    id: str
    created_at: float
    created_by: str
    tokens: int


class TenantList(ApiObject):
    """``GET /v1/tenants``."""

    tenants: list[Tenant]
    next_cursor: str | None = Field(
        default=None, description="Pass it back as ?cursor= for the next page; null on the last page."
    )


class Node(ApiObject):
    """A ``tether server`` node serving the store (several share one PostgreSQL)."""

    id: str
    url: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    lease_timeout: float
    alive: bool
    leases: int
    workers: dict[str, Any] | None
    self_: bool = Field(alias="self")


class NodeList(ApiObject):
    """``GET /v1/nodes``."""

    nodes: list[Node]


class Completion(ApiObject):
    """A waiting entry completed at once by an append (a buffered signal, a zero-length sleep)."""

    index: int
    result: Any
    error: Any


class AppendAnswer(ApiObject):
    """``POST /v1/internal/runs/{id}/journal``."""

    completions: list[Completion]


# --- request bodies -------------------------------------------------------------------------


class ReasonBody(Request):
    """An optional reason, recorded in the audit log."""

    reason: str | None = None


class TargetBody(Request):
    """One deployment of a split, by id or label."""

    deployment: str
    weight: int = Field(default=100, ge=1, le=2**63 - 1)


class EnvSetBody(Request):
    """``PUT /v1/envs/{env}``: ``deployment`` or ``targets``."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["deployment"]}, {"required": ["targets"]}]},
    )

    deployment: str = Field(default="", description="One deployment (id or label) for every new run.")
    targets: list[TargetBody] = Field(default_factory=list, min_length=1, description="A weighted split.")
    reason: str | None = None


class PromoteBody(Request):
    """``POST /v1/envs/{env}/promote``."""

    from_: str = Field(alias="from", pattern=NAME_PATTERN, description="The environment to copy the pointer of.")
    reason: str | None = None


class RestartBody(Request):
    """``POST /v1/runs/{id}/restart``."""

    env: str | None = None
    deployment: str | None = None
    reason: str | None = None


class ForkBody(Request):
    """``POST /v1/runs/{id}/fork``."""

    from_entry: int = Field(ge=0, le=2**63 - 1, description="How many journal entries the new run keeps.")
    deployment: str | None = None
    reason: str | None = None


class MoveBody(Request):
    """``POST /v1/runs/{id}/move``: a forced move needs a reason."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"force": {"const": True}}, "required": ["force"]},
            "then": {"properties": {"reason": {"type": "string", "minLength": 1}}, "required": ["reason"]},
        },
    )

    to: str
    force: bool = False
    reason: str | None = None


class CheckBody(Request):
    """``POST /v1/deployments/{dep}/check``."""

    workflow: str | None = None
    runs: list[str] | None = None


class RegisterBody(Request):
    """``POST /v1/deployments`` with a JSON body: register a user-hosted endpoint."""

    url: str
    secret: str


class TokenBody(Request):
    """``POST /v1/tokens``."""

    scope: ScopeName
    tenant: str | None = None
    name: str | None = Field(default=None, pattern=TOKEN_NAME_PATTERN)
    expires_in: str | float | None = Field(
        default=None,
        description='A duration ("30d", "12h", "45m", "90s") or a number of seconds; at most ten years.',
        json_schema_extra={
            "anyOf": [
                {"type": "string", "pattern": r"^0*[1-9][0-9]{0,6}[smhd]$"},
                {"type": "number", "exclusiveMinimum": 0, "maximum": 315360000},
                {"type": "null"},
            ]
        },
    )


class TenantBody(Request):
    """``POST /v1/tenants``."""

    name: str = Field(pattern=TENANT_PATTERN)


class AppendEntry(Request):
    """One journal entry of an append."""

    index: int = Field(ge=-(2**63 - 1), le=2**63 - 1)
    kind: str
    name: str
    args_digest: str
    completed: bool
    args: Any = None
    result: Any = None
    error: Any = None
    manual_digest: str | None = None


class AppendBody(Request):
    """``POST /v1/internal/runs/{id}/journal``."""

    attempt: int = Field(ge=-(2**63 - 1), le=2**63 - 1)
    token: str
    entries: list[AppendEntry]
