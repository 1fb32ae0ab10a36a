"""The CLI's profiles (flag > environment variable > profile > default), shell completion, and
``runs cancel`` saying that a cancel is requested rather than printing a stale status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9"


def tether(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in {"TETHER_URL", "TETHER_TOKEN", "TETHER_PROFILE", "TETHER_ENV"}
    }
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        env={**clean, "XDG_CONFIG_HOME": str(home), "NO_COLOR": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_profiles_give_url_and_environment_and_lose_to_flags_and_variables(
    server: ServerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "config"
    (home / "tether").mkdir(parents=True)
    config = home / "tether" / "config.toml"
    config.write_text(
        f'[profiles.local]\nurl = "{server.url}"\nenv = "dev"\n\n[profiles.gone]\nurl = "{UNREACHABLE}"\n'
    )

    deployed = tether(home, "--profile", "local", "deploy", str(ROOT / "examples" / "hello"), "--env", "dev")
    assert deployed.returncode == 0, deployed.stderr
    # The profile's env is the default environment of 'tether run'.
    ran = tether(home, "run", "greet", "--input", '{"name": "ada"}', "--wait", TETHER_PROFILE="local")
    assert ran.returncode == 0 and "completed on v1" in ran.stdout, ran.stdout + ran.stderr

    # An environment variable beats the profile; the flag beats both.
    beaten = tether(home, "--profile", "local", "deployments", "list", TETHER_URL=UNREACHABLE)
    assert beaten.returncode == 5 and UNREACHABLE in beaten.stderr
    flagged = tether(home, "--url", server.url, "deployments", "list", TETHER_URL=UNREACHABLE, TETHER_PROFILE="gone")
    assert flagged.returncode == 0 and "v1" in flagged.stdout, flagged.stderr

    # default_profile applies when nothing names one.
    config.write_text('default_profile = "gone"\n' + config.read_text())
    defaulted = tether(home, "deployments", "list")
    assert defaulted.returncode == 5 and UNREACHABLE in defaulted.stderr

    unknown = tether(home, "--profile", "staging", "deployments", "list")
    assert unknown.returncode == 2
    assert f"no profile 'staging' in {config} (profiles: gone, local)" in unknown.stderr

    config.write_text("[profiles.local\n")
    broken = tether(home, "deployments", "list")
    assert broken.returncode == 2 and f"{config} is not valid TOML" in broken.stderr


def test_a_pending_cancel_is_reported_as_requested(server: ServerProcess, tmp_path: Path) -> None:
    home = tmp_path / "config"
    assert (
        tether(home, "--url", server.url, "deploy", str(ROOT / "examples" / "hello"), "--env", "prod").returncode == 0
    )
    run_id = server.call(lambda c: c.start_run("onboard", {"name": "ada"}, env="prod"))["id"]
    server.wait_for(run_id, {"suspended"})
    cancelled = tether(home, "--url", server.url, "runs", "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancel requested for run {run_id}" in cancelled.stdout and "suspended" not in cancelled.stdout
    assert server.wait_for(run_id, {"cancelled", "failed"})["status"] == "cancelled"


def complete(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a shell calls it (click names the variable after it)."""
    beside = Path(sys.executable).parent / "tether"
    assert beside.exists(), "the tether console script is not installed beside this Python"
    return subprocess.run(
        [str(beside)],
        env={**os.environ, "XDG_CONFIG_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_shell_completion_scripts_are_produced_and_complete_commands(tmp_path: Path) -> None:
    script = complete(tmp_path, _TETHER_COMPLETE="bash_source")
    assert script.returncode == 0 and "_tether_completion" in script.stdout and "complete " in script.stdout
    completed = complete(tmp_path, _TETHER_COMPLETE="bash_complete", COMP_WORDS="tether ru", COMP_CWORD="1")
    assert completed.stdout.split() == ["plain,run", "plain,runs"], completed.stdout
    options = complete(tmp_path, _TETHER_COMPLETE="bash_complete", COMP_WORDS="tether dev --", COMP_CWORD="2")
    assert "plain,--data-dir" in options.stdout.split()
