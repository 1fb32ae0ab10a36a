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
@click.option("--check", is_flag=True, help="First dry-run in-flight runs on DEPLOYMENT and report.")
@pass_settings
def set_(settings: Settings, name: str, deployment: str, reason: str | None, check: bool) -> None:
    """Point environment NAME at DEPLOYMENT (id or label)."""

    async def go(c):  # type: ignore[no-untyped-def]
        report = await c.check(deployment) if check else None
        return report, await c.set_env(name, deployment, reason=reason)

    report, e = call(settings, go)
    if settings.as_json:
        emit_json({"environment": e, "check": report})
        return
    if report is not None:
        console.print(
            f"check: {report['compatible']} in-flight runs replay on {deployment}, {report['incompatible']} do not "
            "(they stay pinned where they are; see 'tether deployments check')"
        )
    console.print(f"{name} -> {deployment}")


@env.command()
@click.argument("name")
@click.argument("weights", nargs=-1, required=True)
@click.option("--reason", default=None, help="Why (recorded in the history and audit log).")
@pass_settings
def split(settings: Settings, name: str, weights: tuple[str, ...], reason: str | None) -> None:
    """Canary: point NAME at several deployments by weight, e.g. 'split prod v5=90 v6=10'.

    Each new run draws its deployment once (sticky per idempotency key) and keeps it.
    """
    parsed: dict[str, int] = {}
    for item in weights:
        ref, _, weight = item.partition("=")
        if not ref or not weight.isdigit() or int(weight) <= 0:
            raise click.BadParameter(f"{item!r}: write DEPLOYMENT=WEIGHT with a positive integer weight")
        parsed[ref] = int(weight)

    async def go(c):  # type: ignore[no-untyped-def]
        e = await c.split_env(name, parsed, reason=reason)
        return e, {d["id"]: d["label"] for d in await c.deployments()}

    e, labels = call(settings, go)
    if settings.as_json:
        emit_json(e)
        return
    console.print(f"{name} -> {_labels(e['targets'], labels)}")


@env.command()
@click.argument("source")
@click.argument("target")
@click.option("--reason", default=None, help="Why (recorded in the history and audit log).")
@pass_settings
def promote(settings: Settings, source: str, target: str, reason: str | None) -> None:
    """Point TARGET where SOURCE points now (e.g. 'promote staging prod')."""

    async def go(c):  # type: ignore[no-untyped-def]
        e = await c.promote_env(target, source, reason=reason)
        return e, {d["id"]: d["label"] for d in await c.deployments()}

    e, labels = call(settings, go)
    if settings.as_json:
        emit_json(e)
        return
    console.print(f"{target} -> {_labels(e['targets'], labels)} (from {source})")


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
