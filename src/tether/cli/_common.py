"""What every CLI command shares: the client, output (rich or --json) and error exits."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
import httpx
from rich.console import Console

from tether.api_models import ApiObject
from tether.client import Client
from tether.errors import ApiError, TetherError

T = TypeVar("T")
# Off a terminal (pipes, CI logs), don't squeeze tables into 80 columns.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5


class Settings:
    """Options of the root command, passed to every subcommand."""

    def __init__(self, url: str, as_json: bool, token: str | None = None) -> None:
        self.url = url
        self.as_json = as_json
        self.token = token


def pass_settings(fn: Callable[..., T]) -> Callable[..., T]:
    """Pass the root settings first, and accept ``--json`` after the subcommand too."""

    @functools.wraps(fn)
    def wrapper(*args: Any, as_json_here: bool = False, **kwargs: Any) -> T:
        settings = click.get_current_context().find_object(Settings)
        assert settings is not None
        if as_json_here:
            settings.as_json = True
        return fn(settings, *args, **kwargs)

    return click.option("--json", "as_json_here", is_flag=True, help="Machine-readable JSON output.")(wrapper)


def exit_code(error: ApiError) -> int:
    """Exit code for a server error: 2 bad input, 3 not found, 4 refused (or not allowed), 1 otherwise."""
    if error.http_status in (400, 413, 422):
        return EXIT_USAGE
    if error.http_status == 404:
        return EXIT_NOT_FOUND
    if error.http_status in (401, 403, 409, 421):
        return EXIT_REFUSED
    return EXIT_ERROR


def call(settings: Settings, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``fn`` with a client; turn errors into a message on stderr and an exit code."""

    async def go() -> T:
        async with Client(settings.url, token=settings.token) as client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        fail(settings, exc.error_code, exc.message, exit_code(exc))
    except httpx.TransportError as exc:
        message = (
            f"cannot reach the tether server at {settings.url} ({exc}). "
            "Start one with 'tether server', or point --url / TETHER_URL at yours."
        )
        fail(settings, "unreachable", message, EXIT_UNREACHABLE)
    except TetherError as exc:
        fail(settings, exc.code, exc.message, EXIT_USAGE)


def fail(settings: Settings, code: str, message: str, status: int) -> NoReturn:
    """Report an error and exit with ``status``: ``{"error": {"code", "message"}}`` on stdout
    under ``--json`` (scripts parse one shape whatever happened), else a line on stderr."""
    if settings.as_json:
        emit_json({"error": {"code": code, "message": message}})
    else:
        err_console.print(f"[red]error[/red] ({code}): {message}")
    sys.exit(status)


def _plain(value: Any) -> Any:
    """An answer model (:mod:`tether.api_models`) as the JSON the server sent; else its text."""
    if isinstance(value, ApiObject):
        return value.to_dict()
    return str(value)


def emit_json(value: Any) -> None:
    """Machine-readable output."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_plain))


def when(ts: float | None) -> str:
    """A timestamp for tables."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def short(value: Any, limit: int = 60) -> str:
    """A JSON value, shortened for a table cell."""
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_json_arg(text: str, what: str) -> Any:
    """Parse a JSON command-line argument, or exit with a usage error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} must be JSON ({exc.msg} at position {exc.pos})") from None
