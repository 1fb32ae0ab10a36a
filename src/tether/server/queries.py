"""Queries of runs, answered by the deployment each run is pinned to.

A query never reaches the latest code: the runtime reads the run's pin, checks the query
against *that* deployment's manifest (declared, input fits its schema), and sends it with the
run's journal to that deployment's worker — started on demand from the stored artifact, as
for a resumed run — or registered endpoint. The request carries no attempt token, so the
deployment cannot append; the handler reads what the journal says (see
:mod:`tether.sdk._query`) and the run is left exactly as it was.
"""

from __future__ import annotations

from typing import Any

from tether.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    QueryFailedError,
    QueryRefusedError,
    SchemaError,
)
from tether.server.runtime import Runtime, _validate


async def query(rt: Runtime, tenant_id: str, run_id: str, name: str, payload: Any) -> dict[str, Any]:
    """The answer of query ``name`` of run ``run_id`` with input ``payload`` (an object or None).

    Returns:
        ``{"run_id", "query", "deployment_id", "deployment_label", "output"}``.

    Raises:
        NotFoundError: no such run, or its deployment's workflow declares no such query.
        BadRequestError: the input is not a JSON object.
        SchemaError: the input does not fit the query's declared schema.
        QueryRefusedError: the handler issued a journaled command.
        QueryFailedError: the handler raised, or the deployment could not be invoked.
        ConflictError: the run's deployment was removed.
    """
    run = await rt.store.get_run(tenant_id, run_id)
    dep = await rt.store.get_deployment(tenant_id, run.deployment_id)
    workflow = dep.manifest.get("components", {}).get(run.workflow, {})
    declared: dict[str, Any] = workflow.get("queries") or {}
    if name not in declared:
        raise NotFoundError(
            f"workflow {run.workflow} on {dep.label}, the deployment run {run_id} is pinned to, declares no query "
            f"{name!r}; it declares: {', '.join(sorted(declared)) or 'none'}"
        )
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise BadRequestError(f"the input of query {name} is a JSON object of its parameters, e.g. {{}}")
    _validate(declared[name]["input_schema"], payload, f"input of query {name} of {run.workflow} on {dep.label}")
    if dep.removed_at is not None:
        raise ConflictError(
            f"run {run_id} is pinned to {dep.label}, which was removed: no code is left to answer its queries"
        )
    answer = await rt.dispatcher.query(await rt.store.replay_start(run, dep), name, payload)
    if answer.get("outcome") == "answered":
        return {
            "run_id": run_id,
            "query": name,
            "deployment_id": dep.id,
            "deployment_label": dep.label,
            "output": answer.get("output"),
        }
    error = answer.get("error") or {}
    kind, message = str(error.get("type", answer.get("outcome"))), str(error.get("message", ""))
    if kind == QueryRefusedError.__name__:
        raise QueryRefusedError(message)
    if kind == SchemaError.__name__:
        raise SchemaError(message)
    if answer.get("outcome") not in ("failed", "stuck"):
        raise QueryFailedError(
            f"{dep.label} answered the query with outcome {answer.get('outcome')!r}: its tether predates queries; "
            "redeploy the app with this version of tether to query new runs"
        )
    raise QueryFailedError(f"query {name} of run {run_id} on {dep.label} failed: {kind}: {message}")
