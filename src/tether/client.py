"""A typed async HTTP client for a tether server, shared by the CLI, the tests and users."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from tether import _bundle, _json
from tether import api_models as m
from tether.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _as(model: type[M], value: Any) -> M:
    """An answer as its model of :mod:`tether.api_models`: typed attributes, and the keys of
    the dict it used to be (``run["status"]`` as well as ``run.status``)."""
    return model.model_validate(value)


DEFAULT_URL = "http://127.0.0.1:7070"
PAGE_SIZE = 1000
"""Items asked for per page when a list is followed to its end."""
DEPLOY_TIMEOUT = 960.0
"""Seconds a deploy may take: building a bundle's environment may download every wheel."""


def _raise_for(response: httpx.Response) -> None:
    """Raise the :class:`ApiError` an error answer carries."""
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:500]) from None
    raise ApiError(response.status_code, code, message)


def default_url() -> str:
    """``TETHER_URL`` or the default local server."""
    return os.environ.get("TETHER_URL", DEFAULT_URL)


def default_token() -> str | None:
    """``TETHER_TOKEN``, or None (a server without tokens needs none)."""
    return os.environ.get("TETHER_TOKEN") or None


class Client:
    """Talks to a tether server's public API.

    Answers are the models of :mod:`tether.api_models` (the ones the server's OpenAPI document
    is generated from): ``run.status`` is typed, and ``run["status"]`` still reads the JSON
    field as before. ``state`` is the run's own free-form object, a dict.

    Example::

        async with Client("http://127.0.0.1:7070") as client:
            run = await client.start_run("greet", {"name": "ada"}, env="prod")
            done = await client.result(run["id"], wait=30)
    """

    def __init__(
        self, url: str | None = None, *, token: str | None = None, actor: str | None = None, timeout: float = 60.0
    ) -> None:
        """Connect lazily to ``url`` (default: ``TETHER_URL`` or ``http://127.0.0.1:7070``).

        Args:
            url: the server.
            token: an API token, sent as ``Authorization: Bearer`` (default: ``TETHER_TOKEN``).
            actor: the audit name while the server has no tokens (default: ``$USER``); with a
                token, the server names the token instead.
            timeout: seconds per request.
        """
        self.url = (url or default_url()).rstrip("/")
        headers = {"x-tether-actor": actor or os.environ.get("USER", "anonymous")}
        token = token or default_token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request; return the decoded JSON answer.

        Raises:
            ApiError: the server answered with an error (its status, code and message).
            httpx.TransportError: the server could not be reached.
        """
        body = content if content is not None else (None if json is None else _json.dumps(json))
        send_headers = dict(headers or {})
        if json is not None:
            send_headers["content-type"] = "application/json"
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        response = await self._http.request(
            method,
            path,
            content=body,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers=send_headers,
            **extra,
        )
        if response.status_code >= 400:
            _raise_for(response)
        return _json.loads(response.content) if response.content else None

    async def pages(
        self, path: str, key: str, *, params: dict[str, Any] | None = None, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The items of a list route as JSON, following ``next_cursor`` from page to page.

        Args:
            path: the list route (``/v1/runs``).
            key: the field of the answer that holds the page's items (``runs``).
            params: its filters.
            limit: stop after this many items (default: the whole list).

        Example::

            async for run in client.pages("/v1/runs", "runs", params={"status": "stuck"}):
                print(run["id"])
        """
        cursor: str | None = None
        seen = 0
        while True:
            page_size = PAGE_SIZE if limit is None else max(1, min(PAGE_SIZE, limit - seen))
            answer = await self.request("GET", path, params={**(params or {}), "limit": page_size, "cursor": cursor})
            for item in answer[key]:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = answer.get("next_cursor")
            if not cursor:
                return

    async def _all(
        self,
        model: type[M],
        path: str,
        key: str,
        *,
        params: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[M]:
        return [_as(model, item) async for item in self.pages(path, key, params=params, limit=limit)]

    # --- deployments --------------------------------------------------------------------

    async def deploy(
        self,
        path: Path,
        *,
        env: str | None = None,
        app: str | None = None,
        progress: Callable[[str], None] | None = None,
        isolation: str | None = None,
    ) -> m.Deployed:
        """Pack the app folder ``path`` deterministically and deploy it (routing ``env``).

        ``progress`` receives the lines of the environment build as the server makes them;
        ``isolation`` is the workers' tier (``process`` or ``sandbox``; default: the server's).
        """
        data = _bundle.pack(path)
        return await self.deploy_bundle(data, env=env, app=app, progress=progress, isolation=isolation)

    async def deploy_bundle(
        self,
        data: bytes,
        *,
        env: str | None = None,
        app: str | None = None,
        progress: Callable[[str], None] | None = None,
        isolation: str | None = None,
    ) -> m.Deployed:
        """Deploy already-packed bundle bytes (see :meth:`deploy`)."""
        params = {k: v for k, v in {"env": env, "app": app, "isolation": isolation}.items() if v is not None}
        if progress is None:
            result = await self.request(
                "POST",
                "/v1/deployments",
                content=data,
                params=params,
                headers={"content-type": "application/gzip"},
                timeout=DEPLOY_TIMEOUT,
            )
            return _as(m.Deployed, result)
        headers = {"content-type": "application/gzip", "accept": "application/x-ndjson"}
        async with self._http.stream(
            "POST", "/v1/deployments", content=data, params=params, headers=headers, timeout=DEPLOY_TIMEOUT
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = _json.loads(line)
                if "log" in event:
                    progress(str(event["log"]))
                elif "error" in event:
                    error = event["error"]
                    raise ApiError(int(event.get("status", 500)), error["code"], error["message"])
                else:
                    return _as(m.Deployed, event["deployment"])
        raise ApiError(502, "http_error", "the deploy answer ended before its result: deploy again")

    async def register(self, url: str, *, secret: str, env: str | None = None) -> m.Deployed:
        """Record the endpoint at ``url`` (``tether serve``) as a deployment, routing ``env``."""
        result = await self.request("POST", "/v1/deployments", json={"url": url, "secret": secret}, params={"env": env})
        return _as(m.Deployed, result)

    async def deployments(self) -> list[m.Deployment]:
        """Every deployment with status, environments and runs in flight (every page)."""
        return await self._all(m.Deployment, "/v1/deployments", "deployments")

    async def deployment(self, ref: str) -> m.DeploymentDetail:
        """One deployment (id or label), with its manifest."""
        result = await self.request("GET", f"/v1/deployments/{ref}")
        return _as(m.DeploymentDetail, result)

    async def diff(self, a: str, b: str) -> m.Diff:
        """What changed from deployment ``a`` to ``b``."""
        result = await self.request("GET", f"/v1/deployments/{a}/diff/{b}")
        return _as(m.Diff, result)

    async def remove_deployment(self, ref: str) -> m.Deployment:
        """Remove a drained deployment."""
        result = await self.request("DELETE", f"/v1/deployments/{ref}")
        return _as(m.Deployment, result)

    # --- environments -------------------------------------------------------------------

    async def envs(self) -> list[m.Environment]:
        """Every environment (every page)."""
        return await self._all(m.Environment, "/v1/envs", "environments")

    async def set_env(self, name: str, deployment: str, *, reason: str | None = None) -> m.Environment:
        """Point ``name`` at one deployment."""
        result = await self.request("PUT", f"/v1/envs/{name}", json={"deployment": deployment, "reason": reason})
        return _as(m.Environment, result)

    async def split_env(self, name: str, weights: dict[str, int], *, reason: str | None = None) -> m.Environment:
        """Point ``name`` at several deployments by weight (each new run draws one, sticky by key)."""
        targets = [{"deployment": ref, "weight": weight} for ref, weight in weights.items()]
        result = await self.request("PUT", f"/v1/envs/{name}", json={"targets": targets, "reason": reason})
        return _as(m.Environment, result)

    async def promote_env(self, name: str, source: str, *, reason: str | None = None) -> m.Environment:
        """Point ``name`` where environment ``source`` points now."""
        result = await self.request("POST", f"/v1/envs/{name}/promote", json={"from": source, "reason": reason})
        return _as(m.Environment, result)

    async def rollback_env(self, name: str, *, reason: str | None = None) -> m.Environment:
        """Undo the latest pointer change of ``name``."""
        result = await self.request("POST", f"/v1/envs/{name}/rollback", json={"reason": reason})
        return _as(m.Environment, result)

    async def env_history(self, name: str) -> list[m.EnvChange]:
        """Every change of ``name``, newest first (every page)."""
        return await self._all(m.EnvChange, f"/v1/envs/{name}/history", "history")

    # --- runs -----------------------------------------------------------------------------

    async def start_run(
        self,
        workflow: str,
        input: dict[str, Any] | None = None,
        *,
        env: str | None = None,
        deployment: str | None = None,
        idempotency_key: str | None = None,
        wait: float = 0.0,
    ) -> m.Run:
        """Start a run of ``workflow`` in ``env`` (or on ``deployment``).

        With ``wait`` (seconds, at most 3600) the answer comes once the run ended or the wait
        is over, in one request.
        """
        if (env is None) == (deployment is None):
            raise ValueError("start a run with exactly one of env= or deployment=")
        path = (
            f"/v1/envs/{env}/workflows/{workflow}/runs"
            if env
            else f"/v1/deployments/{deployment}/workflows/{workflow}/runs"
        )
        headers = {"idempotency-key": idempotency_key} if idempotency_key else None
        result = await self.request(
            "POST",
            path,
            json=input or {},
            headers=headers,
            params={"wait": wait} if wait > 0 else None,
            timeout=wait + 30.0 if wait > 0 else None,
        )
        return _as(m.Run, result)

    async def run(self, run_id: str) -> m.Run:
        """The run as it is now."""
        result = await self.request("GET", f"/v1/runs/{run_id}")
        return _as(m.Run, result)

    async def result(self, run_id: str, *, wait: float = 0.0) -> m.Run:
        """The run once it ended (waiting up to ``wait`` seconds; longer waits are chained)."""
        left = wait
        while True:
            step = min(left, 60.0)
            answer = await self.request("GET", f"/v1/runs/{run_id}/result", params={"wait": step}, timeout=step + 30.0)
            run = _as(m.Run, answer)
            left -= step
            if run.status in {"completed", "failed", "cancelled", "killed", "stuck"} or left <= 0:
                return run

    async def runs(self, *, limit: int | None = 100, **filters: Any) -> list[m.Run]:
        """Runs, stuck first, then newest first, filtered by status, workflow, deployment, env, node;
        at most ``limit`` of them (None: all, page after page)."""
        return await self._all(m.Run, "/v1/runs", "runs", params=filters, limit=limit)

    async def iter_runs(self, **filters: Any) -> AsyncIterator[m.Run]:
        """Every run that matches ``filters``, page after page, in :meth:`runs`' order."""
        async for item in self.pages("/v1/runs", "runs", params=filters):
            yield _as(m.Run, item)

    async def journal(self, run_id: str, *, limit: int | None = None) -> list[m.JournalEntry]:
        """The run's journal entries by index: all of them (page after page), or the first ``limit``."""
        return await self._all(m.JournalEntry, f"/v1/runs/{run_id}/journal", "entries", limit=limit)

    async def journal_page(
        self, run_id: str, *, limit: int = 1000, cursor: str | None = None, start: int | None = None
    ) -> m.Journal:
        """One page of the run's journal (``entries``, ``next_cursor``), after ``cursor`` or from
        index ``start``."""
        answer = await self.request(
            "GET", f"/v1/runs/{run_id}/journal", params={"limit": limit, "cursor": cursor, "from": start}
        )
        return _as(m.Journal, answer)

    async def signals(self, run_id: str) -> list[m.SignalRecord]:
        """The signals sent to the run, oldest first (``consumed_by_entry`` is None while buffered)."""
        return await self._all(m.SignalRecord, f"/v1/runs/{run_id}/signals", "signals")

    async def state(self, run_id: str) -> dict[str, Any]:
        """The run's durable state."""
        result: dict[str, Any] = await self.request("GET", f"/v1/runs/{run_id}/state")
        return result

    async def signal(
        self, run_id: str, name: str, payload: Any, *, idempotency_key: str | None = None
    ) -> m.SignalDelivery:
        """Send signal ``name`` with ``payload`` to a run.

        With ``idempotency_key`` the signal is delivered at most once: a retry with the same
        key, name and payload answers ``"duplicate": true`` and delivers nothing again (the
        same key with another payload or name is refused, 409).
        """
        headers = {"content-type": "application/json"}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        result = await self.request(
            "POST", f"/v1/runs/{run_id}/signals/{name}", content=_json.dumps(payload), headers=headers
        )
        return _as(m.SignalDelivery, result)

    async def query(self, run_id: str, name: str, input: dict[str, Any] | None = None) -> Any:
        """The answer of query ``name`` of a run, from the deployment the run is pinned to.

        Returns:
            The query's output.
        """
        return (await self.query_answer(run_id, name, input)).output

    async def query_answer(self, run_id: str, name: str, input: dict[str, Any] | None = None) -> m.QueryAnswer:
        """Query ``name`` of a run: the output, and the deployment that answered."""
        result = await self.request("POST", f"/v1/runs/{run_id}/queries/{name}", json=input or {})
        return _as(m.QueryAnswer, result)

    async def cancel(self, run_id: str, *, reason: str | None = None) -> m.Run:
        """Cancel a run (audited)."""
        result = await self.request("POST", f"/v1/runs/{run_id}/cancel", json={"reason": reason})
        return _as(m.Run, result)

    async def audit(self, *, limit: int | None = 200, target: str | None = None) -> list[m.AuditRecord]:
        """The audit log, newest first (at most ``limit`` records; None: all, page after page);
        only the records about ``target`` when given."""
        return await self._all(m.AuditRecord, "/v1/audit", "audit", params={"target": target}, limit=limit)

    # --- escape hatches -----------------------------------------------------------------

    async def pause(self, run_id: str, *, reason: str | None = None) -> m.Run:
        """Stop giving a run attempts until it is resumed (audited)."""
        result = await self.request("POST", f"/v1/runs/{run_id}/pause", json={"reason": reason})
        return _as(m.Run, result)

    async def resume(self, run_id: str, *, reason: str | None = None) -> m.Run:
        """Resume a paused run (audited)."""
        result = await self.request("POST", f"/v1/runs/{run_id}/resume", json={"reason": reason})
        return _as(m.Run, result)

    async def kill(self, run_id: str, *, reason: str | None = None) -> m.Run:
        """End a run and its children at once (audited)."""
        result = await self.request("POST", f"/v1/runs/{run_id}/kill", json={"reason": reason})
        return _as(m.Run, result)

    async def restart(
        self, run_id: str, *, env: str | None = None, deployment: str | None = None, reason: str | None = None
    ) -> m.Run:
        """A new run with the same input, linked to the old one (audited)."""
        body = {"env": env, "deployment": deployment, "reason": reason}
        result = await self.request("POST", f"/v1/runs/{run_id}/restart", json=body)
        return _as(m.Run, result)

    async def fork(
        self, run_id: str, *, from_entry: int, deployment: str | None = None, reason: str | None = None
    ) -> m.Run:
        """A new run whose journal is the old one's first ``from_entry`` entries (audited)."""
        body = {"from_entry": from_entry, "deployment": deployment, "reason": reason}
        result = await self.request("POST", f"/v1/runs/{run_id}/fork", json=body)
        return _as(m.Run, result)

    async def move(self, run_id: str, to: str, *, force: bool = False, reason: str | None = None) -> m.Run:
        """Re-pin a run to deployment ``to`` after a dry run proves it replays there (audited)."""
        body = {"to": to, "force": force, "reason": reason}
        result = await self.request("POST", f"/v1/runs/{run_id}/move", json=body, timeout=300.0)
        return _as(m.Run, result)

    async def check(
        self, deployment: str, *, workflow: str | None = None, runs: list[str] | None = None
    ) -> m.CheckReport:
        """Dry-run in-flight runs' journals on ``deployment``: compatible, or the first mismatch."""
        body = {"workflow": workflow, "runs": runs}
        result = await self.request("POST", f"/v1/deployments/{deployment}/check", json=body, timeout=600.0)
        return _as(m.CheckReport, result)

    # --- who may do what ----------------------------------------------------------------

    async def whoami(self) -> m.Whoami:
        """The tenant, scope and audit name this client's requests act as."""
        result = await self.request("GET", "/v1/whoami")
        return _as(m.Whoami, result)

    async def create_token(
        self,
        *,
        scope: str,
        tenant: str | None = None,
        name: str | None = None,
        expires_in: str | float | None = None,
    ) -> m.IssuedToken:
        """Create an API token; the answer's ``token`` is its text, shown this once only."""
        body = {"scope": scope, "tenant": tenant, "name": name, "expires_in": expires_in}
        result = await self.request("POST", "/v1/tokens", json={k: v for k, v in body.items() if v is not None})
        return _as(m.IssuedToken, result)

    async def tokens(self, *, tenant: str | None = None) -> list[m.Token]:
        """The tokens of this client's tenant (an operator may name another), without secrets."""
        return await self._all(m.Token, "/v1/tokens", "tokens", params={"tenant": tenant})

    async def revoke_token(self, token_id: str) -> m.Token:
        """Revoke a token by its id (``tokens`` lists them); it is refused from then on."""
        result = await self.request("DELETE", f"/v1/tokens/{token_id}")
        return _as(m.Token, result)

    async def tenants(self) -> list[m.Tenant]:
        """Every tenant (needs an operator token; every page)."""
        return await self._all(m.Tenant, "/v1/tenants", "tenants")

    async def nodes(self) -> list[dict[str, Any]]:
        """The nodes serving the server's store, with their leases and workers (operator token)."""
        return list((await self.request("GET", "/v1/nodes"))["nodes"])

    async def create_tenant(self, name: str) -> m.Tenant:
        """Create a tenant (needs an operator token)."""
        result = await self.request("POST", "/v1/tenants", json={"name": name})
        return _as(m.Tenant, result)
