"""The ``tether`` root command."""

from __future__ import annotations

import click

from tether._version import __version__
from tether.cli._common import Settings
from tether.cli.audit import audit
from tether.cli.backup import backup, restore
from tether.cli.deployments import deploy, deployments
from tether.cli.env import env
from tether.cli.query import query
from tether.cli.runs import run, runs, signal
from tether.cli.serve import serve
from tether.cli.server import server
from tether.cli.tokens import tenants, tokens
from tether.client import default_token, default_url


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", default=None, help="Server URL (default: TETHER_URL or http://127.0.0.1:7070).")
@click.option(
    "--token",
    default=None,
    help="API token, sent as 'Authorization: Bearer' (default: TETHER_TOKEN; none while the server has none).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.version_option(__version__, prog_name="tether")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, as_json: bool) -> None:
    """tether: durable runs pinned to immutable deployments."""
    ctx.obj = Settings(url or default_url(), as_json, token or default_token())


for command in (
    server,
    serve,
    deploy,
    deployments,
    env,
    run,
    runs,
    signal,
    query,
    audit,
    tokens,
    tenants,
    backup,
    restore,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()
