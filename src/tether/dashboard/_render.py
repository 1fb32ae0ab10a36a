"""Rendering dashboard pages: the Jinja2 environment, its filters, and the error page."""

from __future__ import annotations

import datetime
import json
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.responses import HTMLResponse

from tether import _json
from tether.errors import TetherError

HERE = Path(__file__).parent

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: float) -> str:
    """A length of time as a person reads it: ``4 s``, ``12 min``, ``3 h 5 min``, ``2 d``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{whole // 86400} d"


def _as_json(value: Any) -> str:
    return _json.dumps(value).decode()


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a page: shown in its header; its CSRF token goes into every form."""

    actor: str
    """``token:<name>@<tenant>``, or the local user's name while no token exists."""
    tenant: str
    scope: str
    csrf: str | None
    """The CSRF token of the session; None when not signed in with the session cookie."""
    signed_in: bool
    """Whether the page was reached with a token (session or bearer), not in local mode."""


VIEWER: ContextVar[Viewer | None] = ContextVar("tether_dashboard_viewer", default=None)
"""Set by ``tether.server._auth`` for the request being handled."""


def _viewer() -> Viewer | None:
    return VIEWER.get()


def _sees_nodes() -> bool:
    """Whether the viewer may open the nodes page: an operator, or anyone in local mode (whose
    viewer acts as one); others are not shown links that would only be refused."""
    viewer = VIEWER.get()
    return viewer is None or viewer.scope == "operator"


def _csrf_field() -> Markup:
    viewer = VIEWER.get()
    if viewer is None or viewer.csrf is None:
        return Markup("")
    return Markup('<input type="hidden" name="csrf" value="{}">').format(viewer.csrf)


templates.globals["viewer"] = _viewer
templates.globals["csrf_field"] = _csrf_field
templates.globals["sees_nodes"] = _sees_nodes
templates.filters["when"] = _when
templates.filters["span"] = _span
templates.filters["as_json"] = _as_json
templates.filters["pretty"] = _pretty


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/``."""
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def error_page(exc: TetherError) -> HTMLResponse:
    """A not-found, bad-request or conflict answer as a page; its message says what to do instead."""
    return render("error.html", exc.status, title=f"{exc.status}", code=exc.code, message=exc.message)
