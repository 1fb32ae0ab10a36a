"""``tether tokens create|list|revoke`` and ``tether tenants create|list``.

Each command talks to the server (``--url``, ``--token``), or, with ``--data-dir``, straight to
a local data directory: whoever can write the server's data directory is trusted with it, which
is how the first token is made (docs/security.md).
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from rich.table import Table

from tether import api_models as m
from tether.cli._common import (
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    Settings,
    call,
    console,
    emit_json,
    err_console,
    pass_settings,
    when,
)
from tether.errors import ConflictError, NotFoundError, TetherError
from tether.server._access import parse_duration
from tether.store import Scope, Store, open_store

T = TypeVar("T")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Act on this local data directory directly instead of through the server (bootstrap).",
)


def _local_actor() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local"


def local(data_dir: Path, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``fn`` on the store in ``data_dir``; turn refusals into a message and an exit code."""
    if not (data_dir / "tether.db").is_file():
        err_console.print(f"[red]error[/red]: {data_dir} holds no tether store: name the server's --data-dir")
        sys.exit(EXIT_USAGE)

    async def go() -> T:
        store = open_store(data_dir)
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except TetherError as exc:
        err_console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        if isinstance(exc, NotFoundError):
            sys.exit(EXIT_NOT_FOUND)
        sys.exit(EXIT_REFUSED if isinstance(exc, ConflictError) else EXIT_USAGE)


@click.group()
def tokens() -> None:
    """API tokens: who may call the server, in which tenant, with which scope."""


@tokens.command("create")
@click.option("--tenant", default=None, help="The token's tenant (default: your token's, or 'default').")
@click.option(
    "--scope",
    type=click.Choice([s.value for s in Scope]),
    required=True,
    help="read: GET only; ingress: start, signal and read runs; admin: everything in the tenant; "
    "operator: also tenants and every tenant's tokens.",
)
@click.option("--name", default=None, help="Name in the audit log: token:NAME@TENANT (default: SCOPE-ID).")
@click.option("--expires", default=None, metavar="DURATION", help="Lifetime, e.g. 30d, 12h (default: none).")
@data_dir_option
@pass_settings
def create(
    settings: Settings, tenant: str | None, scope: str, name: str | None, expires: str | None, data_dir: Path | None
) -> None:
    """Create a token and print it: it is shown this once, the server keeps only a hash."""
    try:
        lifetime = parse_duration(expires) if expires else None
    except TetherError as exc:
        raise click.BadParameter(exc.message, param_hint="--expires") from None
    if data_dir is not None:

        async def make(store: Store) -> m.IssuedToken:
            issued = await store.create_token(
                tenant or "default",
                scope=Scope(scope),
                name=name,
                expires_at=None if lifetime is None else time.time() + lifetime,
                actor=_local_actor(),
            )
            return m.IssuedToken.model_validate({**issued.token.to_json(), "token": issued.secret})

        made = local(data_dir, make)
    else:
        made = call(settings, lambda c: c.create_token(scope=scope, tenant=tenant, name=name, expires_in=lifetime))
    if settings.as_json:
        emit_json(made)
        return
    err_console.print(
        f"token {made['name']} (id {made['id']}) for tenant {made['tenant']}, scope {made['scope']}"
        + (f", expires {when(made['expires_at'])}" if made["expires_at"] else "")
        + ". Keep it now: it cannot be shown again."
    )
    click.echo(made["token"])


@tokens.command("list")
@click.option("--tenant", default=None, help="Another tenant's tokens (operator tokens and --data-dir only).")
@data_dir_option
@pass_settings
def list_(settings: Settings, tenant: str | None, data_dir: Path | None) -> None:
    """The tenant's tokens: id, name, scope, expiry, revocation (never the token itself)."""
    if data_dir is not None:

        async def read(store: Store) -> list[m.Token]:
            return [m.Token.model_validate(t.to_json()) for t in await store.list_tokens(tenant)]

        found = local(data_dir, read)
    else:
        found = call(settings, lambda c: c.tokens(tenant=tenant))
    if settings.as_json:
        emit_json(found)
        return
    table = Table("id", "tenant", "name", "scope", "created", "expires", "revoked")
    for t in found:
        table.add_row(
            t["id"],
            t["tenant"],
            t["name"],
            t["scope"],
            when(t["created_at"]),
            when(t["expires_at"]),
            when(t["revoked_at"]),
        )
    console.print(table)


@tokens.command("revoke")
@click.argument("token_id")
@data_dir_option
@pass_settings
def revoke(settings: Settings, token_id: str, data_dir: Path | None) -> None:
    """Revoke the token TOKEN_ID (see 'tokens list'): refused from now on, its sessions end."""
    if data_dir is not None:
        gone = local(data_dir, lambda store: store.revoke_token(None, token_id, actor=_local_actor()))
        revoked = m.Token.model_validate(gone.to_json())
    else:
        revoked = call(settings, lambda c: c.revoke_token(token_id))
    if settings.as_json:
        emit_json(revoked)
        return
    console.print(f"revoked token {revoked['name']} ({revoked['id']}) of tenant {revoked['tenant']}")


@click.group()
def tenants() -> None:
    """Tenants: isolated sets of deployments, environments and runs (operator only)."""


@tenants.command("create")
@click.argument("name")
@data_dir_option
@pass_settings
def create_tenant(settings: Settings, name: str, data_dir: Path | None) -> None:
    """Create the tenant NAME; then give it tokens with 'tokens create --tenant NAME'."""
    if data_dir is not None:
        made = m.Tenant.model_validate(local(data_dir, lambda store: store.create_tenant(name, actor=_local_actor())))
    else:
        made = call(settings, lambda c: c.create_tenant(name))
    if settings.as_json:
        emit_json(made)
        return
    console.print(f"tenant {made['id']} created: give it a token with 'tether tokens create --tenant {made['id']}'")


@tenants.command("list")
@data_dir_option
@pass_settings
def list_tenants(settings: Settings, data_dir: Path | None) -> None:
    """Every tenant and how many live tokens it has."""
    found = (
        local(data_dir, lambda store: store.list_tenants())
        if data_dir is not None
        else call(settings, lambda c: c.tenants())
    )
    if settings.as_json:
        emit_json(found)
        return
    table = Table("tenant", "tokens", "created", "by")
    for t in found:
        table.add_row(t["id"], str(t["tokens"]), when(t["created_at"]), t["created_by"])
    console.print(table)
