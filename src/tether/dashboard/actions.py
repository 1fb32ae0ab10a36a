"""The dashboard's forms: environment changes, removing a deployment, and a run's escape hatches.

Each form posts here; the handler calls the same ``Runtime`` service function as the admin API
(audited with the signed-in token, ``token:<name>@<tenant>``, or the actor ``dashboard`` while
no token exists, and the reason typed in the form) and answers a 303 to the page that shows the
outcome, or an error page whose message says what to do instead. A form posted with the session
cookie must carry the session's CSRF token. Browsers ask for confirmation first
(``data-confirm`` in ``static/dashboard.js``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tether import _json
from tether.dashboard import _session
from tether.dashboard._render import error_page
from tether.errors import BadRequestError, ForbiddenError, TetherError
from tether.server.api._http import MAX_JSON_DEPTH, principal, read_body, runtime, tenant

ACTOR = "dashboard"
"""Who the audit log names for actions taken from the dashboard while no token exists."""
MAX_FORM_BYTES = 256 * 1024
CSRF_REFUSED = "refused: the form carries no valid CSRF token; reload the dashboard's page and submit it from there"


def _actor(request: Request) -> str:
    """The signed-in token (``token:<name>@<tenant>``); ``dashboard`` in local mode."""
    who = principal(request)
    return ACTOR if who.local else who.actor


class Form:
    """A submitted ``application/x-www-form-urlencoded`` form."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        """Wrap parsed fields."""
        self.fields = fields

    def get(self, name: str) -> str | None:
        """The field, stripped; None when missing or blank."""
        value = (self.fields.get(name) or [""])[0].strip()
        return value or None

    def need(self, name: str, what: str) -> str:
        """The field, or a 400 that says which field to fill in."""
        value = self.get(name)
        if value is None:
            raise BadRequestError(f"the form needs {what} ('{name}')")
        return value


def action(handler: Callable[[Request, Form], Awaitable[str]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a form handler that returns where to go next: parse the form, render refusals.

    Forms posted from another site's page never get here (``server._origin``); one posted with
    the session cookie but without the session's CSRF token is refused (403)."""

    async def endpoint(request: Request) -> Response:
        try:
            raw = await read_body(request, MAX_FORM_BYTES)
            form = Form(urllib.parse.parse_qs(raw.decode(errors="replace"), keep_blank_values=True))
            session = principal(request).session
            if session is not None and not _session.csrf_ok(request.app.state.secret, session, form.get("csrf")):
                raise ForbiddenError(CSRF_REFUSED)
            location = await handler(request, form)
        except TetherError as exc:
            return error_page(exc)
        return RedirectResponse(location, status_code=303)

    return endpoint


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _weights(text: str) -> list[tuple[str, int]]:
    """``"v1=90, v2=10"`` as ``[("v1", 90), ("v2", 10)]``."""
    targets = []
    for part in text.replace(",", " ").split():
        ref, sep, weight = part.partition("=")
        if not sep or not weight.strip().isdigit():
            raise BadRequestError(f"cannot read {part!r}: write a split as LABEL=WEIGHT pairs, e.g. 'v1=90, v2=10'")
        targets.append((ref.strip(), int(weight)))
    return targets


# --- environments ------------------------------------------------------------------------


@action
async def set_env(request: Request, form: Form) -> str:
    """``POST /envs``: point ``env`` at ``deployment``, or split it by ``weights``."""
    env = form.need("env", "the environment's name")
    weights = form.get("weights")
    targets = _weights(weights) if weights else [(form.need("deployment", "a deployment"), 100)]
    await runtime(request).set_env(tenant(request), env, targets, actor=_actor(request), reason=form.get("reason"))
    return f"/envs#env-{_quote(env)}"


@action
async def promote_env(request: Request, form: Form) -> str:
    """``POST /envs/{env}/promote``: point ``{env}`` where environment ``from`` points now."""
    env = request.path_params["env"]
    source = form.need("from", "the environment to promote from")
    await runtime(request).promote_env(tenant(request), env, source, actor=_actor(request), reason=form.get("reason"))
    return f"/envs#env-{_quote(env)}"


@action
async def rollback_env(request: Request, form: Form) -> str:
    """``POST /envs/{env}/rollback``: undo the environment's latest change."""
    env = request.path_params["env"]
    await runtime(request).store.rollback_env(tenant(request), env, actor=_actor(request), reason=form.get("reason"))
    return f"/envs#env-{_quote(env)}"


# --- deployments -------------------------------------------------------------------------


@action
async def remove_deployment(request: Request, form: Form) -> str:
    """``POST /deployments/{dep}/remove``: retire a drained deployment."""
    removed = await runtime(request).remove(tenant(request), request.path_params["dep"], _actor(request))
    return f"/deployments/{_quote(removed.id)}"


# --- runs ----------------------------------------------------------------------------------


def _run_page(run_id: str, notice: str) -> str:
    return f"/runs/{_quote(run_id)}?notice={_quote(notice)}"


@action
async def signal_run(request: Request, form: Form) -> str:
    """``POST /runs/{id}/signal``: send signal ``name`` with the JSON ``payload``."""
    run_id = request.path_params["id"]
    name = form.need("name", "the signal's name")
    text = form.get("payload") or "null"
    try:
        payload = _json.loads(text)
        _json.check_depth(text.encode(), payload, MAX_JSON_DEPTH)
    except _json.DepthError:
        raise BadRequestError(f"the payload is nested more than {MAX_JSON_DEPTH} levels deep: flatten it") from None
    except ValueError as exc:
        raise BadRequestError(f'the payload is not valid JSON ({exc}): write it as JSON, e.g. {{"ok": true}}') from None
    answer = await runtime(request).signal(tenant(request), run_id, name, payload, sent_by=_actor(request))
    if answer["buffered"]:
        return _run_page(run_id, f"signal {name} buffered: no wait is open for it yet")
    return _run_page(run_id, f"signal {name} delivered to entry {answer['delivered_to_entry']}")


def _hatch(verb: str) -> Callable[[Request], Awaitable[Response]]:
    @action
    async def handler(request: Request, form: Form) -> str:
        rt = runtime(request)
        do = {"cancel": rt.cancel, "pause": rt.pause, "resume": rt.resume, "kill": rt.kill}[verb]
        run = await do(tenant(request), request.path_params["id"], actor=_actor(request), reason=form.get("reason"))
        return _run_page(run.id, f"{verb}: the run is {run.status.value}")

    handler.__doc__ = f"``POST /runs/{{id}}/{verb}`` with an optional ``reason``."
    return handler


@action
async def restart_run(request: Request, form: Form) -> str:
    """``POST /runs/{id}/restart``: a new run with the same input; ``target`` is ``env:NAME``,
    ``deployment:REF`` or blank (the run's environment, else its deployment)."""
    kind, _, ref = (form.get("target") or "").partition(":")
    if kind not in ("", "env", "deployment") or (kind and not ref):
        raise BadRequestError("restart on 'env:NAME' or 'deployment:LABEL', or leave the target blank")
    env = ref if kind == "env" else None
    deployment = ref if kind == "deployment" else None
    new = await runtime(request).restart(
        tenant(request),
        request.path_params["id"],
        env=env,
        deployment=deployment,
        actor=_actor(request),
        reason=form.get("reason"),
    )
    return _run_page(new.id, f"restarted from {request.path_params['id']}")


@action
async def move_run(request: Request, form: Form) -> str:
    """``POST /runs/{id}/move``: re-pin to ``to`` after a dry run (``force`` needs a ``reason``)."""
    to = form.need("to", "the deployment to move to")
    force = form.get("force") == "1"
    rt, tid = runtime(request), tenant(request)
    run = await rt.move(
        tid, request.path_params["id"], to, force=force, actor=_actor(request), reason=form.get("reason")
    )
    label = (await rt.store.get_deployment(tid, run.deployment_id)).label
    return _run_page(run.id, f"moved to {label}" + (" (forced)" if force else ""))


ROUTES = [
    Route("/envs", set_env, methods=["POST"]),
    Route("/envs/{env}/promote", promote_env, methods=["POST"]),
    Route("/envs/{env}/rollback", rollback_env, methods=["POST"]),
    Route("/deployments/{dep}/remove", remove_deployment, methods=["POST"]),
    Route("/runs/{id}/signal", signal_run, methods=["POST"]),
    *(Route(f"/runs/{{id}}/{verb}", _hatch(verb), methods=["POST"]) for verb in ("cancel", "pause", "resume", "kill")),
    Route("/runs/{id}/restart", restart_run, methods=["POST"]),
    Route("/runs/{id}/move", move_run, methods=["POST"]),
]
"""Where the dashboard's forms post."""
