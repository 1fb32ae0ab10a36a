"""Isolation rules as data: the sandbox's view, attempt tokens bound to a deployment, signed
requests that cannot be replayed, and the environment a worker receives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.protocol import MAX_SKEW, ReplayGuard, signed_headers
from tether.server import _sandbox
from tether.server.dispatcher import attempt_token, check_token
from tether.server.workers import worker_env


def _pairs(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, part in enumerate(cmd) if part == flag]


def test_the_sandbox_hides_the_data_directory_even_inside_a_visible_path(tmp_path: Path) -> None:
    project = tmp_path / "project"
    data = project / ".tether"
    bundle = data / "bundles" / "abc"
    bundle.mkdir(parents=True)
    (project / "src").mkdir()
    cmd = _sandbox.command(
        ["python", "-P", "-m", "tether._worker"],
        folder=bundle,
        read_only=[str(project), str(project / "src")],
        private=data,
        own=[bundle],
        env={"PATH": "/usr/bin", "HOME": "/tmp"},
        switch_user=True,
    )
    binds = _pairs(cmd, "--ro-bind")
    assert str(project) in binds and str(project / "src") not in binds  # covered by its parent
    # The data directory is a fresh tmpfs over the visible project; only the bundle comes back.
    tmpfs = [i for i, part in enumerate(cmd) if part == "--tmpfs" and cmd[i + 1] == str(data)]
    assert len(tmpfs) == 1
    assert cmd.index(str(bundle)) > tmpfs[0] and cmd.index("--ro-bind", tmpfs[0]) < cmd.index(str(bundle))
    assert "--clearenv" in cmd and _pairs(cmd, "--setenv") == ["HOME", "PATH"]
    assert cmd[cmd.index("--") + 1 : cmd.index("--") + 5] == [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
    assert cmd[-4:] == ["python", "-P", "-m", "tether._worker"]
    for flag in ("--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"):
        assert flag in cmd


def test_every_directory_made_on_the_way_to_a_bind_is_walkable(tmp_path: Path) -> None:
    bundle = tmp_path / "data" / "bundles" / "abc"
    bundle.mkdir(parents=True)
    cmd = _sandbox.command(
        ["true"], folder=bundle, read_only=[], private=tmp_path / "data", own=[bundle], env={}, switch_user=False
    )
    made = _pairs(cmd, "--dir")
    assert str(tmp_path / "data" / "bundles") in made and str(tmp_path) in made
    assert all(
        cmd[cmd.index(d) - 3 : cmd.index(d)] == ["--perms", "0755", "--dir"]
        for d in made
        if d.startswith(str(tmp_path))
    )
    assert "setpriv" not in cmd


def test_an_attempt_token_is_bound_to_run_attempt_and_deployment() -> None:
    secret = b"s" * 32
    token = attempt_token(secret, "default/dep_a", "run_1", 2)
    assert check_token(secret, "default/dep_a", "run_1", 2, token)
    assert not check_token(secret, "default/dep_b", "run_1", 2, token)
    assert not check_token(secret, "team-b/dep_a", "run_1", 2, token)  # the same content in another tenant
    assert not check_token(secret, "default/dep_a", "run_2", 2, token)
    assert not check_token(secret, "default/dep_a", "run_1", 3, token)
    assert not check_token(b"t" * 32, "default/dep_a", "run_1", 2, token)


def test_a_signed_request_is_accepted_once_and_never_replayed() -> None:
    guard, body = ReplayGuard(), b'{"run_id": "r"}'
    headers = signed_headers("secret", body, now=1000.0)
    assert guard.check("secret", body, headers, now=1001.0) is None
    replayed = guard.check("secret", body, headers, now=1002.0)
    assert replayed is not None and "replayed" in replayed
    fresh = signed_headers("secret", body, now=1000.0)
    assert guard.check("other", body, fresh, now=1001.0) is not None
    assert guard.check("secret", b"{}", fresh, now=1001.0) is not None
    stale = guard.check("secret", body, fresh, now=1000.0 + MAX_SKEW + 1)
    assert stale is not None and "ago" in stale
    assert guard.check("secret", body, {}, now=1000.0) is not None


def test_a_worker_gets_only_what_its_app_declares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tether.toml").write_text('app = "app:app"\nenv = ["PAYMENTS_KEY"]\n')
    monkeypatch.setenv("PAYMENTS_KEY", "pk")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-only")
    monkeypatch.setenv("TETHER_MODEL_BASE_URL", "http://127.0.0.1:9")
    env = worker_env(tmp_path, sandboxed=True)
    assert env["PAYMENTS_KEY"] == "pk" and env["TETHER_MODEL_BASE_URL"] == "http://127.0.0.1:9"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"] == "/tmp" and env["PYTHONDONTWRITEBYTECODE"] == "1"
