"""The CLI's config file: named profiles of url, token and default environment.

``$XDG_CONFIG_HOME/tether/config.toml`` (``~/.config/tether/config.toml`` by default)::

    default_profile = "local"

    [profiles.local]
    url = "http://127.0.0.1:7070"
    env = "dev"

    [profiles.prod]
    url = "https://tether.example.com"
    token = "tt_..."
    env = "prod"

A profile is chosen by ``--profile NAME``, else ``TETHER_PROFILE``, else ``default_profile``.
Each setting is taken from the first of: the command-line flag, its environment variable
(``TETHER_URL``, ``TETHER_TOKEN``, ``TETHER_ENV``), the profile, the built-in default.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from tether.cli._common import Settings
from tether.client import default_token, default_url

KEYS = ("url", "token", "env")


def config_path() -> Path:
    """Where the config file is read from (it need not exist)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tether" / "config.toml"


@dataclass(frozen=True, slots=True)
class Profile:
    """One profile's settings (None: not set by the profile)."""

    name: str | None
    """The profile's name, or None when no profile applies."""
    url: str | None = None
    """The server URL."""
    token: str | None = None
    """The API token."""
    env: str | None = None
    """The environment ``tether run`` uses when given neither --env nor --deployment."""


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise click.UsageError(f"{path} is not valid TOML ({exc}): fix it, or move it away") from None
    except OSError as exc:
        raise click.UsageError(f"cannot read {path} ({exc.strerror})") from None


def load_profile(name: str | None) -> Profile:
    """The profile ``name`` (or the one ``TETHER_PROFILE`` or ``default_profile`` names).

    Raises:
        click.UsageError: the file is malformed, or names a profile it does not define.
    """
    path = config_path()
    data = _read(path)
    wanted = name or os.environ.get("TETHER_PROFILE") or data.get("default_profile")
    if wanted is None:
        return Profile(None)
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict) or not isinstance(profiles.get(wanted), dict):
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) and profiles else "none"
        raise click.UsageError(
            f"no profile {wanted!r} in {path} (profiles: {known}): add a [profiles.{wanted}] table, "
            "or choose another with --profile / TETHER_PROFILE"
        )
    table: dict[str, Any] = profiles[wanted]
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise click.UsageError(
            f"profile {wanted!r} in {path} has unknown keys {', '.join(unknown)}: a profile sets {', '.join(KEYS)}"
        )
    for key in KEYS:
        if key in table and not isinstance(table[key], str):
            raise click.UsageError(f"profile {wanted!r} in {path}: {key} must be a string")
    if table.get("token") and os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(
            f"warning: {path} holds a token and others can read it: chmod 600 {path}",
            err=True,
        )
    return Profile(wanted, url=table.get("url"), token=table.get("token"), env=table.get("env"))


def resolve_settings(*, url: str | None, token: str | None, profile: str | None, as_json: bool) -> Settings:
    """The root command's settings: each from the flag, else its variable, else the profile, else
    the default. A profile's token goes only to the profile's own server, never to a URL given
    by ``--url`` or ``TETHER_URL``."""
    chosen = load_profile(profile)
    if url:
        resolved_url, source = url, "flag"
    elif os.environ.get("TETHER_URL"):
        resolved_url, source = default_url(), "env"
    elif chosen.url:
        resolved_url, source = chosen.url, "profile"
    else:
        resolved_url, source = default_url(), "default"
    profile_token = chosen.token if chosen.url is None or chosen.url == resolved_url else None
    return Settings(
        resolved_url,
        as_json,
        token or default_token() or profile_token,
        url_source=source,
        env=os.environ.get("TETHER_ENV") or chosen.env,
        profile=chosen.name,
    )
