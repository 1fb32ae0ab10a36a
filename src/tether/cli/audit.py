"""``tether audit``: who did what, when, and why."""

from __future__ import annotations

import click
from rich.table import Table

from tether.cli._common import Settings, call, console, emit_json, pass_settings, short, when


@click.command()
@click.option("--limit", default=50, show_default=True, help="At most this many records, newest first.")
@click.option("--all", "every", is_flag=True, help="Every record, page after page (ignores --limit).")
@click.option("--target", default=None, help="Only the records about this run id, deployment id or environment.")
@pass_settings
def audit(settings: Settings, limit: int, every: bool, target: str | None) -> None:
    """The audit log: deployments, environment changes and every escape hatch used."""
    records = call(settings, lambda c: c.audit(limit=None if every else limit, target=target))
    if settings.as_json:
        emit_json(records)
        return
    table = Table("when", "who", "action", "target", "details")
    for r in records:
        table.add_row(when(r["created_at"]), r["actor"], r["action"], r["target"], short(r["details"], 90))
    console.print(table)
