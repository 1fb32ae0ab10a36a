"""Where each CLI setting comes from: flag > environment variable > profile > default, and a
profile's token never goes to a server other than the profile's."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from tether.cli._config import config_path, resolve_settings

PROFILES = """
default_profile = "local"

[profiles.local]
url = "http://127.0.0.1:7171"
env = "dev"

[profiles.prod]
url = "https://tether.example.com"
token = "tt_prod"
env = "prod"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("TETHER_URL", "TETHER_TOKEN", "TETHER_PROFILE", "TETHER_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = config_path()
    assert path == tmp_path / "tether" / "config.toml"
    path.parent.mkdir()
    path.write_text(PROFILES)
    path.chmod(0o600)
    return path


def settings(**given: str | None) -> tuple[str, str | None, str | None, str | None]:
    found = resolve_settings(
        url=given.get("url"), token=given.get("token"), profile=given.get("profile"), as_json=False
    )
    return found.url, found.token, found.env, found.profile


def test_the_default_profile_then_the_named_one(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings() == ("http://127.0.0.1:7171", None, "dev", "local")
    assert settings(profile="prod") == ("https://tether.example.com", "tt_prod", "prod", "prod")
    monkeypatch.setenv("TETHER_PROFILE", "prod")
    assert settings()[3] == "prod"
    assert settings(profile="local")[3] == "local", "the flag beats the variable"


def test_variables_beat_the_profile_and_flags_beat_both(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_ENV", "staging")
    monkeypatch.setenv("TETHER_TOKEN", "tt_env")
    assert settings(profile="prod") == ("https://tether.example.com", "tt_env", "staging", "prod")
    assert settings(profile="prod", token="tt_flag")[1] == "tt_flag"
    monkeypatch.setenv("TETHER_URL", "http://10.0.0.1:7070")
    assert settings(profile="prod")[0] == "http://10.0.0.1:7070"
    assert settings(profile="prod", url="http://127.0.0.1:1")[0] == "http://127.0.0.1:1"


def test_a_profile_token_is_never_sent_to_another_server(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(profile="prod", url="http://127.0.0.1:7070")[1] is None
    monkeypatch.setenv("TETHER_URL", "http://127.0.0.1:7070")
    assert settings(profile="prod")[1] is None
    assert settings(profile="prod", url="https://tether.example.com")[1] == "tt_prod"


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TETHER_URL", "TETHER_TOKEN", "TETHER_PROFILE", "TETHER_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nowhere"))
    assert settings() == ("http://127.0.0.1:7070", None, None, None)
    with pytest.raises(click.UsageError, match="no profile 'prod'"):
        settings(profile="prod")


def test_mistakes_in_the_file_are_named(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text('[profiles.local]\nurl = "http://x"\nhost = "y"\n')
    with pytest.raises(click.UsageError, match="unknown keys host: a profile sets url, token, env"):
        settings(profile="local")
    config.write_text("[profiles.local]\nurl = 7070\n")
    with pytest.raises(click.UsageError, match="url must be a string"):
        settings(profile="local")
    config.write_text('[profiles.local]\ntoken = "tt"\n')
    config.chmod(0o644)
    settings(profile="local")
    assert f"others can read it: chmod 600 {config}" in capsys.readouterr().err
