"""The records the store reads and writes: deployments, runs, environments, attempts."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether import _json
from tether._bundle import code_digest as _code_digest
from tether.core.journal import JournalEntry
from tether.core.routing import Target
from tether.core.status import RunStatus
from tether.protocol import Completion

Row = Mapping[str, Any]


def _dumps(value: Any) -> str:
    return _json.dumps(value).decode()


def _loads(text: str | bytes | None) -> Any:
    return None if text is None else _json.loads(text)


@dataclass(frozen=True, slots=True)
class Deployment:
    """An immutable snapshot of an app, as stored."""

    tenant_id: str
    id: str
    label: str
    kind: str
    """``bundle`` (started by the runtime) or ``endpoint`` (a registered URL)."""
    app_ref: str | None
    url: str | None
    bundle_digest: str | None
    manifest_digest: str
    manifest: dict[str, Any]
    created_at: float
    created_by: str
    removed_at: float | None
    secret: str | None = None
    """A registered endpoint's shared secret (never shown by the API)."""
    code: dict[str, str] | None = None
    """``{path: sha256}`` of the code it runs (None: recorded before tether kept it; unchecked)."""
    environment: dict[str, Any] | None = None
    """``{"mode": "locked" | "fingerprint", "fingerprint": {...}, "lock": {...} | None}`` (None:
    recorded before tether kept it; unchecked). See :mod:`tether._environment`."""

    @property
    def isolation(self) -> str:
        """``process`` or ``sandbox``: how its workers are isolated (see :mod:`tether.server._sandbox`)."""
        return str((self.environment or {}).get("isolation", "process"))

    @property
    def code_digest(self) -> str | None:
        """One digest for :attr:`code`."""
        return None if self.code is None else _code_digest(self.code)

    @classmethod
    def from_row(cls, row: Row) -> Deployment:
        """Build from a ``deployments`` row."""
        return cls(
            tenant_id=row["tenant_id"],
            id=row["id"],
            label=row["label"],
            kind=row["kind"],
            app_ref=row["app_ref"],
            url=row["url"],
            bundle_digest=row["bundle_digest"],
            manifest_digest=row["manifest_digest"],
            manifest=_loads(row["manifest"]),
            created_at=row["created_at"],
            created_by=row["created_by"],
            removed_at=row["removed_at"],
            secret=row["secret"],
            code=_loads(row["code"]),
            environment=_loads(row["environment"]),
        )

    def to_json(self, *, with_manifest: bool = False) -> dict[str, Any]:
        """The API form."""
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "app": self.manifest.get("app"),
            "app_ref": self.app_ref,
            "url": self.url,
            "bundle_digest": self.bundle_digest,
            "manifest_digest": self.manifest_digest,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "removed_at": self.removed_at,
            "workflows": sorted(n for n, c in self.manifest.get("components", {}).items() if c["kind"] == "workflow"),
            "environment_mode": None if self.environment is None else self.environment.get("mode"),
            "isolation": self.isolation,
        }
        if with_manifest:
            out["manifest"] = self.manifest
            out["code"] = None if self.code is None else {"digest": self.code_digest, "files": self.code}
            out["environment"] = self.environment
        return out


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a workflow, pinned to its deployment."""

    id: str
    tenant_id: str
    deployment_id: str
    workflow: str
    env: str | None
    status: RunStatus
    input: Any
    output: Any
    error: Any
    stuck_reason: Any
    last_error: Any
    attempt: int
    ready_at: float | None
    parent_run_id: str | None
    parent_index: int | None
    idempotency_key: str | None
    created_at: float
    updated_at: float
    completed_at: float | None
    linked_from: str | None = None
    """The run this one was restarted or forked from."""
    link_kind: str | None = None
    """``restart`` or ``fork``."""
    node: str | None = None
    """The node running the run's attempt now (its lease holder), if one is."""

    @classmethod
    def from_row(cls, row: Row) -> Run:
        """Build from a ``runs`` row."""
        return cls(
            id=row["id"],
            tenant_id=row["tenant_id"],
            deployment_id=row["deployment_id"],
            workflow=row["workflow"],
            env=row["env"],
            status=RunStatus(row["status"]),
            input=_loads(row["input"]),
            output=_loads(row["output"]),
            error=_loads(row["error"]),
            stuck_reason=_loads(row["stuck_reason"]),
            last_error=_loads(row["last_error"]),
            attempt=row["attempt"],
            ready_at=row["ready_at"],
            parent_run_id=row["parent_run_id"],
            parent_index=row["parent_index"],
            idempotency_key=row["idempotency_key"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            completed_at=row["completed_at"],
            linked_from=row["linked_from"],
            link_kind=row["link_kind"],
            node=row["lease_owner"] if row["status"] == "running" and row["ready_at"] is None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The API form."""
        return {
            "id": self.id,
            "linked_from": self.linked_from,
            "link_kind": self.link_kind,
            "workflow": self.workflow,
            "deployment_id": self.deployment_id,
            "env": self.env,
            "status": self.status.value,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "stuck_reason": self.stuck_reason,
            "last_error": self.last_error,
            "attempt": self.attempt,
            "node": self.node,
            "parent_run_id": self.parent_run_id,
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
        }


@dataclass(frozen=True, slots=True)
class Environment:
    """A named pointer to one deployment, or a weighted split over several."""

    name: str
    targets: list[Target]
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        """The API form."""
        return {
            "name": self.name,
            "targets": [{"deployment_id": t.deployment_id, "weight": t.weight} for t in self.targets],
            "updated_at": self.updated_at,
        }


def _targets(text: str | None) -> list[Target]:
    return [Target(t["deployment_id"], int(t["weight"])) for t in (_loads(text) or [])]


def _targets_json(targets: Iterable[Target]) -> str:
    return _dumps([{"deployment_id": t.deployment_id, "weight": t.weight} for t in targets])


@dataclass(slots=True)
class AttemptStart:
    """What the dispatcher needs to invoke one attempt."""

    run: Run
    deployment: Deployment
    rows: list[Row]
    """The run's journal rows, by index: what replay needs (identity, outcome, attempt)."""

    @property
    def journal(self) -> list[JournalEntry]:
        """The journal as entries (without arguments or timestamps)."""
        return [entry_from_row(r) for r in self.rows]

    def wire_journal(self) -> list[dict[str, Any]]:
        """The journal in its protocol form, stored JSON embedded verbatim (never re-parsed)."""
        return [wire_entry(r) for r in self.rows]


@dataclass(slots=True)
class AppendResult:
    """The outcome of a fenced append."""

    completions: list[Completion] = field(default_factory=list)
    runs_made_ready: int = 0


def entry_from_row(row: Row) -> JournalEntry:
    """Build a :class:`JournalEntry` from a ``journal`` row, whole or just its replay columns."""
    columns = row.keys()
    return JournalEntry(
        index=row["idx"],
        kind=row["kind"],
        name=row["name"],
        args_digest=row["args_digest"],
        completed=bool(row["completed"]),
        result=_loads(row["result"]),
        error=_loads(row["error"]),
        manual_digest=row["manual_digest"],
        args=_loads(row["args"]) if "args" in columns else None,
        attempt=row["attempt"],
        created_at=row["created_at"] if "created_at" in columns else 0.0,
        completed_at=row["completed_at"] if "completed_at" in columns else None,
        extra=(_loads(row["extra"]) or {}) if "extra" in columns else {},
    )


def _fragment(text: str | None) -> Any:
    return None if text is None else _json.Fragment(text)


def wire_entry(row: Row) -> dict[str, Any]:
    """The protocol form of a journal row for replay: identity and outcome only.

    Arguments, timestamps and bookkeeping stay in the runtime (the digest stands for the
    arguments); a 10,000-entry journal then travels in half the bytes.
    """
    out: dict[str, Any] = {
        "index": row["idx"],
        "kind": row["kind"],
        "name": row["name"],
        "args_digest": row["args_digest"],
        "completed": bool(row["completed"]),
        "result": _fragment(row["result"]),
        "error": _fragment(row["error"]),
    }
    if row["manual_digest"] is not None:
        out["manual_digest"] = row["manual_digest"]
    return out


def new_run_id() -> str:
    """A fresh run id: ``run_`` and 20 hex digits."""
    return "run_" + secrets.token_hex(10)
