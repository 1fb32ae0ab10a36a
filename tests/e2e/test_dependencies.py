"""Dependencies are part of the snapshot: a bundle's lock builds its own environment with uv.

These tests use the real uv (from the ``uv`` wheel tether depends on) and the package index;
wheels come from uv's cache after the first run.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli
from tether.client import Client
from tether.errors import ApiError

PINNED = "2.11.7"

APP = """
from pydantic import BaseModel, VERSION
import tether

app = tether.App("deps")

class Go(BaseModel):
    ok: bool

@app.workflow(signals={"go": Go})
async def job(ctx: tether.Context, tag: str) -> dict:
    await ctx.signal("go")
    return {"pydantic": VERSION, "tag": tag}
"""


def _app(make_app: Callable[..., Path], name: str, *, requirements: str | None = None, extra: str = "") -> Path:
    folder = make_app(name, APP + extra)
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


def _envs(server: ServerProcess) -> list[str]:
    root = server.data_dir / "envs"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def _finish(server: ServerProcess, run_id: str) -> object:
    server.wait_for(run_id, {"suspended"}, timeout=120)
    server.call(lambda c: c.signal(run_id, "go", {"ok": True}))
    done = server.call(lambda c: c.result(run_id, wait=60))
    assert done["status"] == "completed", done
    return done["output"]


def test_a_bundle_runs_on_the_versions_its_requirements_pin(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    assert metadata.version("pydantic") != PINNED, "the test needs a server on another pydantic than the pin"
    lines: list[str] = []

    async def deploy(client: Client) -> dict[str, object]:
        folder = _app(make_app, "pinned", requirements=f"pydantic=={PINNED}\n")
        return await client.deploy(folder, env="prod", progress=lines.append)

    dep = server.call(deploy)
    assert dep["environment_mode"] == "locked"
    assert any("resolving requirements.txt with uv" in line for line in lines), lines
    shown = server.call(lambda c: c.deployment(str(dep["label"])))
    environment = shown["environment"]
    assert environment["mode"] == "locked" and environment["lock"]["source"] == "requirements.txt"
    assert f"pydantic=={PINNED}" in environment["lock"]["requirements"].splitlines()
    assert environment["fingerprint"]["packages"]["pydantic"] == PINNED
    assert "environment" in shown["build_log"] and "built" in shown["build_log"]
    assert _envs(server) == [environment["lock"]["digest"]]

    run = server.call(lambda c: c.start_run("job", {"tag": "a"}, env="prod"))
    assert _finish(server, run["id"]) == {"pydantic": PINNED, "tag": "a"}

    # The CLI shows what it built on.
    out = CliRunner().invoke(cli, ["--url", server.url, "deployments", "show", str(dep["label"])])
    assert out.exit_code == 0, out.output
    assert "its own, locked by requirements.txt" in out.stdout and f"pydantic {PINNED}" in out.stdout


def test_deployments_with_the_same_lock_share_one_environment_built_once(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    requirements = f"pydantic=={PINNED}\n"
    first = _app(make_app, "first", requirements=requirements, extra="\nFIRST = 1\n")
    second = _app(make_app, "second", requirements=requirements, extra="\nSECOND = 2\n")

    async def both(client: Client) -> list[dict[str, object]]:
        return list(await asyncio.gather(client.deploy(first), client.deploy(second)))

    a, b = server.call(both)
    assert a["id"] != b["id"] and a["bundle_digest"] != b["bundle_digest"]
    logs = [server.call(lambda c, d=d: c.deployment(str(d["label"])))["build_log"] for d in (a, b)]
    built = [log for log in logs if log.rstrip().endswith("built")]
    reused = [log for log in logs if "exists: reused" in log]
    assert (len(built), len(reused)) == (1, 1), logs
    assert len(_envs(server)) == 1

    # The environment goes with the last deployment that uses it.
    server.call(lambda c: c.remove_deployment(str(a["label"])))
    assert len(_envs(server)) == 1
    server.call(lambda c: c.remove_deployment(str(b["label"])))
    assert _envs(server) == []


def test_a_missing_environment_is_rebuilt_from_the_stored_lock(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server.call(lambda c: c.deploy(_app(make_app, "pinned", requirements=f"pydantic=={PINNED}\n"), env="prod"))
    run = server.call(lambda c: c.start_run("job", {"tag": "b"}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    # A new node, or a wiped data directory: the environment is gone, the lock is stored.
    server.stop()
    [digest] = _envs(server)
    shutil.rmtree(server.data_dir / "envs" / digest)
    server.start()
    assert _finish(server, run["id"]) == {"pydantic": PINNED, "tag": "b"}
    assert _envs(server) == [digest]


def test_an_unresolvable_requirement_refuses_the_deploy_and_stores_nothing(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    before = server.table_counts()
    folder = _app(make_app, "broken", requirements="tether-no-such-distribution-zz9==1.0\n")
    with pytest.raises(ApiError) as refused:
        server.call(lambda c: c.deploy(folder, env="prod"))
    assert (refused.value.http_status, refused.value.error_code) == (400, "bad_requirements")
    assert "tether-no-such-distribution-zz9" in refused.value.message
    assert "cannot be resolved" in refused.value.message
    assert server.table_counts() == before
    assert _envs(server) == []
    assert [p.name for p in (server.data_dir / "bundles").iterdir()] == []

    # Through the streaming CLI too: exit code 2 and uv's words.
    out = CliRunner().invoke(cli, ["--url", server.url, "deploy", str(folder)])
    assert out.exit_code == 2 and "bad_requirements" in out.output, out.output
    assert server.table_counts() == before


def test_pyproject_with_dependencies_needs_a_uv_lock(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    folder = _app(make_app, "project")
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "deps-app"\nversion = "1.0"\nrequires-python = ">=3.11"\n'
        f'dependencies = ["pydantic=={PINNED}"]\n'
    )
    with pytest.raises(ApiError) as refused:
        server.call(lambda c: c.deploy(folder))
    assert refused.value.error_code == "bad_requirements" and "uv lock" in refused.value.message

    from uv import find_uv_bin

    subprocess.run([find_uv_bin(), "lock", "--quiet"], cwd=folder, check=True, timeout=300)
    dep = server.call(lambda c: c.deploy(folder, env="prod"))
    environment = server.call(lambda c: c.deployment(str(dep["label"])))["environment"]
    assert environment["lock"]["source"] == "uv.lock"
    assert environment["fingerprint"]["packages"]["pydantic"] == PINNED
    run = server.call(lambda c: c.start_run("job", {"tag": "c"}, env="prod"))
    assert _finish(server, run["id"]) == {"pydantic": PINNED, "tag": "c"}


def test_a_library_edited_inside_an_environment_stops_the_run_before_it_loads(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    server.call(lambda c: c.deploy(_app(make_app, "pinned", requirements=f"pydantic=={PINNED}\n"), env="prod"))
    run = server.call(lambda c: c.start_run("job", {"tag": "d"}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    server.stop()
    [digest] = _envs(server)
    [site] = (server.data_dir / "envs" / digest / "lib").glob("python*/site-packages")
    # pydantic's version stays 2.11.7: only its code changes, in place.
    (site / "pydantic" / "version.py").write_text((site / "pydantic" / "version.py").read_text() + "\n# patched\n")
    server.start()
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    stuck = server.wait_for(run["id"], {"stuck", "completed", "failed"})
    reason = stuck["stuck_reason"]
    assert stuck["status"] == "stuck" and reason["type"] == "EnvironmentChanged", stuck
    [change] = reason["changes"]
    assert change.startswith("lib/python") and "/site-packages/pydantic/version.py: changed (sha256" in change
    assert [p.name for p in (server.data_dir / "envs").glob(".changed-*")], "the changed environment is kept aside"
    # Moving the run to its own deployment rebuilds the environment from the lock; it finishes there.
    server.call(lambda c: c.move(run["id"], "v1"))
    assert server.call(lambda c: c.result(run["id"], wait=120))["output"] == {"pydantic": PINNED, "tag": "d"}
    assert _envs(server) == [digest]
