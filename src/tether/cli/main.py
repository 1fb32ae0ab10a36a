"""The ``tether`` root command."""

from __future__ import annotations

import click

from tether._version import __version__
from tether.cli._config import resolve_settings
from tether.cli.audit import audit
from tether.cli.backup import backup, restore
from tether.cli.deployments import deploy, deployments
from tether.cli.dev import dev
from tether.cli.env import env
from tether.cli.query import query
from tether.cli.runs import run, runs, signal
from tether.cli.serve import serve
from tether.cli.server import server
from tether.cli.tokens import nodes, tenants, tokens


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url", default=None, help="Server URL (default: TETHER_URL, the profile's url, or http://127.0.0.1:7070)."
)
@click.option(
    "--token",
    default=None,
    help="API token, sent as 'Authorization: Bearer' (default: TETHER_TOKEN, then the profile's token; none while "
    "the server has none).",
)
@click.option(
    "--profile",
    default=None,
    help="Profile of ~/.config/tether/config.toml to use (default: TETHER_PROFILE, then its default_profile).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.version_option(__version__, prog_name="tether")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, profile: str | None, as_json: bool) -> None:
    """tether: durable runs pinned to immutable deployments.

    Settings come from the first of: the flag, its environment variable (TETHER_URL,
    TETHER_TOKEN, TETHER_ENV), the profile, the default. Shell completion:
    eval "$(_TETHER_COMPLETE=bash_source tether)" (zsh_source, fish_source for other shells).
    """
    if ctx.resilient_parsing:
        return  # completing a command line: read no config file
    ctx.obj = resolve_settings(url=url, token=token, profile=profile, as_json=as_json)


for command in (
    server,
    serve,
    dev,
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
    nodes,
    backup,
    restore,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()
