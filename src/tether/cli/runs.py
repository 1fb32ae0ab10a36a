"""``tether run``, ``tether runs list|show|cancel`` and ``tether signal``."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from tether import api_models as m
from tether._readable import clip, signals_by_entry, summarize
from tether.cli._common import (
    EXIT_ERROR,
    EXIT_REFUSED,
    Settings,
    call,
    console,
    emit_json,
    err_console,
    parse_json_arg,
    pass_settings,
    short,
    when,
)
from tether.client import Client
from tether.testing._harness import EXPORT_FORMAT

FAILED = {"failed", "cancelled", "killed"}


def _finish(run: m.Run, labels: dict[str, str]) -> None:
    label = labels.get(run["deployment_id"], run["deployment_id"])
    status = run["status"]
    if status == "completed":
        console.print(f"run {run['id']} completed on {label}: {short(run['output'], 400)}")
    elif status == "stuck":
        reason = run["stuck_reason"] or {}
        err_console.print(f"run {run['id']} is stuck on {label}: {reason.get('message', reason)}")
        sys.exit(EXIT_REFUSED)
    elif status in FAILED:
        error = run["error"] or {}
        err_console.print(f"run {run['id']} {status} on {label}: {error.get('type')}: {error.get('message')}")
        sys.exit(EXIT_ERROR)
    else:
        console.print(f"run {run['id']} is {status} on {label}")


@click.command("run")
@click.argument("workflow")
@click.option("--env", "env", default=None, help="Environment whose deployment the run is pinned to.")
@click.option("--deployment", default=None, help="Pin to this deployment (id or label) instead of an env.")
@click.option("--input", "input_", default="{}", help="The input object as JSON.")
@click.option("--idempotency-key", default=None, help="Start at most one run for this key.")
@click.option("--wait", "wait", is_flag=True, help="Wait for the run to end and print its output.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait with --wait.")
@pass_settings
def run(
    settings: Settings,
    workflow: str,
    env: str | None,
    deployment: str | None,
    input_: str,
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Start a run of WORKFLOW, pinned to what --env names now (or to --deployment).

    Without either, --env defaults to TETHER_ENV or the profile's env.
    """
    if env is None and deployment is None:
        env = settings.env
    if (env is None) == (deployment is None):
        raise click.UsageError("give exactly one of --env or --deployment (or set TETHER_ENV, or a profile's env)")
    payload = parse_json_arg(input_, "--input")

    async def go(c: Client) -> tuple[m.Run, dict[str, str]]:
        started = await c.start_run(workflow, payload, env=env, deployment=deployment, idempotency_key=idempotency_key)
        final = await c.result(started["id"], wait=timeout) if wait else started
        return final, {d["id"]: d["label"] for d in await c.deployments()}

    result, labels = call(settings, go)
    if settings.as_json:
        emit_json(result)
        if wait and result["status"] != "completed":
            sys.exit(EXIT_REFUSED if result["status"] == "stuck" else EXIT_ERROR)
        return
    if wait:
        _finish(result, labels)
    else:
        console.print(f"run {result['id']} started on {labels.get(result['deployment_id'], result['deployment_id'])}")


@click.group()
def runs() -> None:
    """Inspect and act on runs."""


@runs.command("list")
@click.option("--status", default=None, help="Only runs with this status.")
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option("--deployment", default=None, help="Only runs pinned to this deployment.")
@click.option("--env", "env", default=None, help="Only runs started through this environment.")
@click.option("--node", default=None, help="Only runs held by this node now (see tether nodes).")
@click.option("--limit", default=50, show_default=True, help="At most this many runs.")
@click.option("--all", "every", is_flag=True, help="Every matching run, page after page (ignores --limit).")
@pass_settings
def list_(
    settings: Settings,
    status: str | None,
    workflow: str | None,
    deployment: str | None,
    env: str | None,
    node: str | None,
    limit: int,
    every: bool,
) -> None:
    """Runs, stuck first, then newest first."""

    async def go(c: Client) -> tuple[list[m.Run], dict[str, str]]:
        items = await c.runs(
            status=status,
            workflow=workflow,
            deployment=deployment,
            env=env,
            node=node,
            limit=None if every else limit,
        )
        return items, {d["id"]: d["label"] for d in await c.deployments()}

    items, labels = call(settings, go)
    if settings.as_json:
        emit_json(items)
        return
    table = Table("run", "workflow", "deployment", "env", "status", "attempt", "created")
    for r in items:
        table.add_row(
            r["id"],
            r["workflow"],
            labels.get(r["deployment_id"], r["deployment_id"]),
            r["env"] or "-",
            r["status"],
            str(r["attempt"]),
            when(r["created_at"]),
        )
    console.print(table)


ENTRIES_SHOWN = 200


@runs.command()
@click.argument("run_id")
@click.option(
    "--from-entry", "from_entry", type=click.IntRange(min=0), default=None, help="Show the journal from this index on."
)
@click.option(
    "--entries",
    type=click.IntRange(1, 10_000),
    default=None,
    help=f"How many journal entries to show (default {ENTRIES_SHOWN}; under --json, all of them).",
)
@pass_settings
def show(settings: Settings, run_id: str, from_entry: int | None, entries: int | None) -> None:
    """A run, its deployment, state, journal (in words) and signals.

    The journal is shown a page at a time; the last line says how to read on. Under --json
    every entry is printed whole, each with its "summary" in words.
    """
    paged = not settings.as_json or from_entry is not None or entries is not None
    size = entries or ENTRIES_SHOWN

    async def go(
        c: Client,
    ) -> tuple[m.Run, list[dict[str, Any]], bool, dict[str, Any], m.DeploymentDetail, list[dict[str, Any]]]:
        r = await c.run(run_id)
        deployment = await c.deployment(r["deployment_id"])
        if paged:
            page = await c.journal_page(run_id, limit=size, start=from_entry or 0)
            entries, more = [e.to_dict() for e in page.entries], bool(page.next_cursor)
        else:
            entries, more = [e.to_dict() for e in await c.journal(run_id)], False
        sent = [s.to_dict() for s in await c.signals(run_id)]
        return r, entries, more, await c.state(run_id), deployment, sent

    r, entries_shown, more, state, dep, signals = call(settings, go)
    taken = signals_by_entry(signals)
    if settings.as_json:
        for e in entries_shown:
            e["summary"] = summarize(e, taken.get(e["index"]))
        emit_json(
            {
                "run": r,
                "journal": entries_shown,
                "journal_next_from": entries_shown[-1]["index"] + 1 if more else None,
                "state": state,
                "signals": signals,
                "deployment": {"id": dep["id"], "label": dep["label"]},
            }
        )
        return
    console.print(f"[bold]{r['id']}[/bold]  {r['workflow']}  on {dep['label']} ({dep['id']})  env {r['env'] or '-'}")
    node = f" on node {r['node']}" if r.get("node") else ""
    console.print(f"status {r['status']}   attempt {r['attempt']}{node}   created {when(r['created_at'])}")
    if r.get("linked_from"):
        console.print(f"{r['link_kind']} of {r['linked_from']}")
    console.print(f"input  {short(r['input'], 200)}")
    if r["status"] == "completed":
        console.print(f"output {short(r['output'], 200)}")
    if r["error"]:
        console.print(f"error  {r['error'].get('type')}: {r['error'].get('message')}")
    if r["stuck_reason"]:
        console.print(f"[red]stuck[/red]  {r['stuck_reason'].get('message', r['stuck_reason'])}")
    if r["last_error"]:
        console.print(f"last attempt error  {short(r['last_error'], 200)}")
    if state:
        console.print(f"state  {short(state, 200)}")
    table = Table("#", "kind", "status", "what happened", "attempt", "issued", title=f"journal ({dep['label']})")
    for e in entries_shown:
        status = "waiting" if not e["completed"] else "error" if e["error"] else "done"
        what = clip(summarize(e, taken.get(e["index"])), 160)
        table.add_row(str(e["index"]), e["kind"], status, what, str(e["attempt"]), when(e["created_at"]))
    console.print(table)
    if more and entries_shown:
        following = entries_shown[-1]["index"] + 1
        console.print(
            f"more entries follow: tether runs show {r['id']} --from-entry {following}"
            + (f" --entries {size}" if entries else "")
        )
    if signals:
        sent = Table("name", "payload", "from", "arrived", "taken by", title="signals")
        for s in signals:
            took = "buffered" if s["consumed_by_entry"] is None else f"entry {s['consumed_by_entry']}"
            sent.add_row(s["name"], short(s["payload"]), s.get("sent_by") or "-", when(s["created_at"]), took)
        console.print(sent)


@runs.command()
@click.argument("run_id")
@pass_settings
def export(settings: Settings, run_id: str) -> None:
    """Print RUN_ID as JSON (run, journal, signals, deployment) to replay it in a test.

    tether runs export RUN > run.json; then, in a test of the local code,
    (await tether.testing.replay_export(app, "run.json")).assert_compatible().
    """

    async def go(c: Client) -> dict[str, Any]:
        r = await c.run(run_id)
        deployment = await c.deployment(r["deployment_id"])
        return {
            "format": EXPORT_FORMAT,
            "run": r,
            "journal": await c.journal(run_id),
            "signals": await c.signals(run_id),
            "deployment": {k: deployment[k] for k in ("id", "label", "app", "manifest_digest")},
        }

    emit_json(call(settings, go))


@runs.command()
@click.argument("run_id")
@click.option("--reason", default=None, help="Why (recorded in the audit log).")
@pass_settings
def cancel(settings: Settings, run_id: str, reason: str | None) -> None:
    """Cancel a run cooperatively: its waits raise RunCancelledError so it can compensate."""
    r = call(settings, lambda c: c.cancel(run_id, reason=reason))
    if settings.as_json:
        emit_json(r)
        return
    if r["status"] == "cancelled":
        console.print(f"run {r['id']} cancelled")
    else:
        # The cancel is durable, but the run ends only when its code has handled it.
        console.print(
            f"cancel requested for run {r['id']}: its waits now raise RunCancelledError, and it ends cancelled "
            f"once its code returns (tether runs show {r['id']})"
        )


@click.command()
@click.argument("run_id")
@click.argument("name")
@click.argument("payload", default="null")
@click.option("--idempotency-key", default=None, help="Deliver at most once for this key: a retry reports a duplicate.")
@pass_settings
def signal(settings: Settings, run_id: str, name: str, payload: str, idempotency_key: str | None) -> None:
    """Send signal NAME with JSON PAYLOAD to RUN_ID."""
    value = parse_json_arg(payload, "PAYLOAD")
    answer = call(settings, lambda c: c.signal(run_id, name, value, idempotency_key=idempotency_key))
    if settings.as_json:
        emit_json(answer)
        return
    if answer["duplicate"]:
        console.print(f"signal {name} was already sent to run {run_id} with this key: not delivered again")
    elif answer["buffered"]:
        console.print(f"signal {name} buffered for run {run_id} (delivered when it waits for it)")
    else:
        console.print(f"signal {name} delivered to run {run_id} (entry {answer['delivered_to_entry']})")


def _acted(settings: Settings, run: m.Run, verb: str) -> None:
    if settings.as_json:
        emit_json(run)
    else:
        console.print(f"run {run['id']} {verb}: now {run['status']}")


@runs.command()
@click.argument("run_id")
@click.option("--reason", default=None, help="Why (recorded in the audit log).")
@pass_settings
def pause(settings: Settings, run_id: str, reason: str | None) -> None:
    """Stop giving RUN_ID attempts until it is resumed."""
    _acted(settings, call(settings, lambda c: c.pause(run_id, reason=reason)), "paused")


@runs.command()
@click.argument("run_id")
@click.option("--reason", default=None, help="Why (recorded in the audit log).")
@pass_settings
def resume(settings: Settings, run_id: str, reason: str | None) -> None:
    """Resume a paused run: it replays its journal and goes on."""
    _acted(settings, call(settings, lambda c: c.resume(run_id, reason=reason)), "resumed")


@runs.command()
@click.argument("run_id")
@click.option("--reason", default=None, help="Why (recorded in the audit log).")
@pass_settings
def kill(settings: Settings, run_id: str, reason: str | None) -> None:
    """End RUN_ID and its unfinished children at once."""
    _acted(settings, call(settings, lambda c: c.kill(run_id, reason=reason)), "killed")


@runs.command()
@click.argument("run_id")
@click.option("--env", "env", default=None, help="Pin the new run to what this environment names now.")
@click.option("--deployment", default=None, help="Pin the new run to this deployment.")
@click.option("--reason", default=None, help="Why (recorded in the audit log).")
@pass_settings
def restart(settings: Settings, run_id: str, env: str | None, deployment: str | None, reason: str | None) -> None:
    """Start a new run with RUN_ID's input, linked to it (default: on its environment)."""
    if env is not None and deployment is not None:
        raise click.UsageError("give at most one of --env or --deployment")
    new = call(settings, lambda c: c.restart(run_id, env=env, deployment=deployment, reason=reason))
    if settings.as_json:
        emit_json(new)
    else:
        console.print(f"run {new['id']} restarted from {run_id}")


@runs.command()
@click.argument("run_id")
@click.option("--from-entry", "from_entry", type=int, required=True, help="Keep the journal's entries before N.")
@click.option("--deployment", default=None, help="Pin the new run here (default: RUN_ID's deployment).")
@click.option("--reason", default=None, help="Why (recorded in the audit log).")
@pass_settings
def fork(settings: Settings, run_id: str, from_entry: int, deployment: str | None, reason: str | None) -> None:
    """Start a new run whose journal is RUN_ID's first N entries."""
    new = call(settings, lambda c: c.fork(run_id, from_entry=from_entry, deployment=deployment, reason=reason))
    if settings.as_json:
        emit_json(new)
    else:
        console.print(f"run {new['id']} forked from {run_id} at entry {from_entry}")


@runs.command()
@click.argument("run_id")
@click.option("--to", "to", required=True, help="The deployment (id or label) to move the run to.")
@click.option("--force", is_flag=True, help="Move even if the dry run finds a mismatch (needs --reason).")
@click.option("--reason", default=None, help="Why (recorded in the audit log).")
@pass_settings
def move(settings: Settings, run_id: str, to: str, force: bool, reason: str | None) -> None:
    """Re-pin RUN_ID to another deployment, once a dry run proves its journal replays there."""
    _acted(settings, call(settings, lambda c: c.move(run_id, to, force=force, reason=reason)), f"moved to {to}")
