"""``tether deploy`` and ``tether deployments list|show|diff|remove``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from tether.api_models import Diff
from tether.cli._common import EXIT_REFUSED, Settings, call, console, emit_json, pass_settings, when


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--env", "env", default=None, help="Environment to point at the deployment (e.g. prod).")
@click.option("--no-promote", is_flag=True, help="Deploy without routing any environment to it.")
@click.option("--app", "app_ref", default=None, help="module:attribute of the App (default: tether.toml).")
@click.option(
    "--isolation",
    type=click.Choice(["process", "sandbox"]),
    default=None,
    help="How its workers are isolated: sandbox (a bubblewrap jail as an unprivileged user; the default where "
    "bubblewrap works) or process (trusted code, the server's user).",
)
@pass_settings
def deploy(
    settings: Settings, path: Path, env: str | None, no_promote: bool, app_ref: str | None, isolation: str | None
) -> None:
    """Pack the app in PATH into an immutable deployment (and route ENV to it).

    A requirements.txt (or pyproject.toml with uv.lock) in PATH gives the deployment its own
    environment, built with uv on the server; its progress is shown as it happens.
    """
    target_env = None if no_promote else env
    if settings.as_json:
        emit_json(call(settings, lambda c: c.deploy(path, env=target_env, app=app_ref, isolation=isolation)))
        return
    with console.status("deploying", spinner="dots") as status:
        started = time.monotonic()

        def progress(line: str) -> None:
            status.update(f"building the environment ({time.monotonic() - started:.0f}s): {line[:100]}")

        result = call(
            settings, lambda c: c.deploy(path, env=target_env, app=app_ref, progress=progress, isolation=isolation)
        )
    verb = "created" if result["created"] else "unchanged, already deployed as"
    console.print(f"deployment {verb} [bold]{result['label']}[/bold] ({result['id']})")
    console.print(f"isolation: {result.get('isolation')}")
    mode = result.get("environment_mode")
    if mode == "locked":
        console.print("environment: its own, built with uv from the bundle's lock ('tether deployments show')")
    elif mode == "fingerprint":
        console.print("environment: the server's, fingerprinted (add requirements.txt or uv.lock for its own)")
    if target_env:
        console.print(f"{target_env} -> {result['label']}")


@click.group()
def deployments() -> None:
    """Inspect and manage deployments."""


@deployments.command("list")
@pass_settings
def list_(settings: Settings) -> None:
    """Every deployment: status, environments, runs in flight."""
    items = call(settings, lambda c: c.deployments())
    if settings.as_json:
        emit_json(items)
        return
    table = Table("label", "id", "app", "status", "environments", "in flight", "workers", "created")
    for d in items:
        table.add_row(
            d["label"],
            d["id"],
            str(d["app"]),
            d["status"],
            ", ".join(d["environments"]) or "-",
            str(d["in_flight"]),
            str(d["workers"]),
            when(d["created_at"]),
        )
    console.print(table)


@deployments.command()
@click.argument("deployment")
@click.option("--build-log", is_flag=True, help="Also print the log of its environment build.")
@pass_settings
def show(settings: Settings, deployment: str, build_log: bool) -> None:
    """One deployment (id or label): what it registers, its environment, workers and cold starts."""
    d = call(settings, lambda c: c.deployment(deployment))
    if settings.as_json:
        emit_json(d)
        return
    console.print(f"[bold]{d['label']}[/bold] {d['id']}  app {d['app']} ({d['app_ref']})  status {d['status']}")
    console.print(
        f"environments: {', '.join(d['environments']) or '-'}   in flight: {d['in_flight']}   workers: {d['workers']}"
        + (f" (since {when(d['worker_started_at'])})" if d.get("worker_started_at") else "")
    )
    took = d.get("cold_start_seconds") or {}
    if d.get("cold_starts"):
        console.print(
            f"cold starts: {d['cold_starts']} (last {_secs(took.get('last'))}, mean {_secs(took.get('mean'))})"
            " since the server started"
        )
    else:
        console.print("cold starts: 0 since the server started")
    console.print(
        f"manifest {d['manifest_digest'][:16]}  bundle {str(d['bundle_digest'])[:16]}  "
        f"created {when(d['created_at'])} by {d['created_by']}"
    )
    console.print(f"isolation: {d.get('isolation')}")
    console.print(f"environment: {describe_environment(d.get('environment'))}")
    packages = ((d.get("environment") or {}).get("fingerprint") or {}).get("packages") or {}
    if packages:
        console.print("packages: " + ", ".join(f"{name} {version}" for name, version in packages.items()))
    if build_log:
        console.print(d.get("build_log") or "(no environment was built for this deployment)")
    table = Table("component", "kind", "description")
    for name, comp in sorted(d["manifest"]["components"].items()):
        table.add_row(name, comp["kind"], comp.get("description", "").split("\n")[0])
    console.print(table)


def describe_environment(environment: dict[str, Any] | None) -> str:
    """One line for people: how a deployment's environment is pinned."""
    if not environment:
        return "not recorded (deployed before tether recorded environments; not checked)"
    fingerprint = environment.get("fingerprint") or {}
    python, build = fingerprint.get("python"), fingerprint.get("tether")
    count = len(fingerprint.get("packages") or {})
    if environment.get("mode") == "locked":
        lock = environment.get("lock") or {}
        return (
            f"its own, locked by {lock.get('source')} (environment {lock.get('digest')}): "
            f"Python {python}, tether {build}, {count} packages"
        )
    return f"the server's, fingerprinted: Python {python}, tether {build}, {count} packages"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


@deployments.command()
@click.argument("a")
@click.argument("b")
@pass_settings
def diff(settings: Settings, a: str, b: str) -> None:
    """What changed from deployment A to deployment B."""
    result = call(settings, lambda c: c.diff(a, b))
    if settings.as_json:
        emit_json(result)
        return
    print_diff(result)


def print_diff(result: Diff, *, indent: str = "") -> None:
    """A diff as ``tether deployments diff`` prints it (``tether dev`` prints it after each save)."""
    console.print(f"{indent}{result['from']['label']} -> {result['to']['label']}", highlight=False)
    if not result["changes"]:
        console.print(f"{indent}no changes")
    for change in result["changes"]:
        console.print(f"{indent}  {change['component']}: {change['change']}: {change['detail']}", highlight=False)
    affected = result["runs_affected_if_unpinned"]
    if affected:
        label = result["from"]["label"]
        console.print(
            f"{indent}{len(affected)} in-flight runs on {label} use what changed (pinning keeps them on {label}):"
        )
        for item in affected[:20]:
            console.print(f"{indent}  {item['run_id']} ({item['workflow']}): {', '.join(item['changed'])}")


@deployments.command()
@click.argument("deployment")
@pass_settings
def remove(settings: Settings, deployment: str) -> None:
    """Remove a drained deployment (refused while anything holds it)."""
    d = call(settings, lambda c: c.remove_deployment(deployment))
    if settings.as_json:
        emit_json(d)
        return
    console.print(f"removed {d['label']} ({d['id']}); its history stays readable")


@deployments.command()
@click.argument("deployment")
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option("--run", "runs", multiple=True, help="Only this run (repeatable).")
@pass_settings
def check(settings: Settings, deployment: str, workflow: str | None, runs: tuple[str, ...]) -> None:
    """Pre-flight: dry-run in-flight runs' journals on DEPLOYMENT (compatible, or the first mismatch)."""
    result = call(settings, lambda c: c.check(deployment, workflow=workflow, runs=list(runs) or None))
    if settings.as_json:
        emit_json(result)
        return
    label = result["deployment"]["label"]
    console.print(f"{result['compatible']} runs replay on {label}, {result['incompatible']} do not")
    for verdict in result["runs"]:
        if verdict["compatible"]:
            console.print(f"  {verdict['run_id']} ({verdict['workflow']}): compatible")
        else:
            problem = verdict.get("mismatch") or verdict.get("error") or {}
            console.print(f"  {verdict['run_id']} ({verdict['workflow']}): [red]{problem.get('message')}[/red]")
    if result["incompatible"]:
        sys.exit(EXIT_REFUSED)


@deployments.command()
@click.argument("url")
@click.option(
    "--secret",
    envvar="TETHER_ENDPOINT_SECRET",
    required=True,
    help="The secret the endpoint was started with (or TETHER_ENDPOINT_SECRET).",
)
@click.option("--env", "env", default=None, help="Environment to point at the deployment.")
@pass_settings
def register(settings: Settings, url: str, secret: str, env: str | None) -> None:
    """Record the endpoint at URL ('tether serve') as an immutable deployment."""
    result = call(settings, lambda c: c.register(url, secret=secret, env=env))
    if settings.as_json:
        emit_json(result)
        return
    verb = "created" if result["created"] else "unchanged, already registered as"
    console.print(f"deployment {verb} [bold]{result['label']}[/bold] ({result['id']}) at {url}")
    if env:
        console.print(f"{env} -> {result['label']}")
