"""``tether env list|set|rollback|history``."""

from __future__ import annotations

import click
from rich.table import Table

from tether.cli._common import Settings, call, console, emit_json, pass_settings, when


def _labels(targets: list[dict[str, object]], labels: dict[str, str]) -> str:
    if len(targets) == 1:
        return labels.get(str(targets[0]["deployment_id"]), str(targets[0]["deployment_id"]))
    return " ".join(f"{labels.get(str(t['deployment_id']), t['deployment_id'])}={t['weight']}" for t in targets)


@click.group()
def env() -> None:
    """Environments: named pointers to deployments."""


@env.command("list")
@pass_settings
def list_(settings: Settings) -> None:
    """Every environment and where it points."""

    async def go(c):  # type: ignore[no-untyped-def]
        return await c.envs(), {d["id"]: d["label"] for d in await c.deployments()}

    envs, labels = call(settings, go)
    if settings.as_json:
        emit_json(envs)
        return
    table = Table("environment", "points at", "updated")
    for e in envs:
        table.add_row(e["name"], _labels(e["targets"], labels), when(e["updated_at"]))
    console.print(table)


@env.command("set")
@click.argument("name")
@click.argument("deployment")
@click.option("--reason", default=None, help="Why (recorded in the history and audit log).")
@pass_settings
def set_(settings: Settings, name: str, deployment: str, reason: str | None) -> None:
    """Point environment NAME at DEPLOYMENT (id or label)."""
    e = call(settings, lambda c: c.set_env(name, deployment, reason=reason))
    if settings.as_json:
        emit_json(e)
        return
    console.print(f"{name} -> {deployment}")


@env.command()
@click.argument("name")
@click.option("--reason", default=None, help="Why (recorded in the history and audit log).")
@pass_settings
def rollback(settings: Settings, name: str, reason: str | None) -> None:
    """Undo the latest change of NAME's pointer."""

    async def go(c):  # type: ignore[no-untyped-def]
        e = await c.rollback_env(name, reason=reason)
        return e, {d["id"]: d["label"] for d in await c.deployments()}

    e, labels = call(settings, go)
    if settings.as_json:
        emit_json(e)
        return
    console.print(f"{name} -> {_labels(e['targets'], labels)} (rolled back)")


@env.command()
@click.argument("name")
@pass_settings
def history(settings: Settings, name: str) -> None:
    """Every change of NAME's pointer, newest first."""

    async def go(c):  # type: ignore[no-untyped-def]
        return await c.env_history(name), {d["id"]: d["label"] for d in await c.deployments()}

    items, labels = call(settings, go)
    if settings.as_json:
        emit_json(items)
        return
    table = Table("when", "action", "points at", "before", "by", "reason")
    for h in items:
        action = h["action"] + (" (undone)" if h["undone"] else "")
        table.add_row(
            when(h["created_at"]),
            action,
            _labels(h["targets"], labels),
            _labels(h["previous"], labels) if h["previous"] else "-",
            h["actor"],
            h["reason"] or "",
        )
    console.print(table)
