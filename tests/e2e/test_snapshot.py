"""Every load proves the snapshot: code swapped under a pinned run stops it, never runs.

Each test does what an operator with shell access could do to a deployment that has runs in
flight — edit the unpacked files, plant a file, replace the stored artifact, change a library,
reuse the files under another app reference — and checks the documented outcome: the run
finishes on its own code, or stops ``stuck`` with a reason that names what changed.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, write_app

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("snap")

class Go(BaseModel):
    ok: bool

@app.function
async def score(n: int) -> int:
    """Scores a number."""
    return n * 2

@app.workflow(signals={"go": Go})
async def job(ctx: tether.Context, n: int) -> dict:
    first = await ctx.step(score, n)
    await ctx.signal("go")
    second = await ctx.step(score, n + 1)
    return {"first": first, "second": second, "on": ctx.info.deployment_label}
'''


def _waiting_run(server: ServerProcess, app_dir: Path) -> tuple[dict[str, object], str]:
    dep = server.call(lambda c: c.deploy(app_dir, env="prod"))
    run = server.call(lambda c: c.start_run("job", {"n": 1}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    return dep, str(run["id"])


def _stuck(server: ServerProcess, run_id: str) -> dict[str, object]:
    server.call(lambda c: c.signal(run_id, "go", {"ok": True}))
    run = server.wait_for(run_id, {"stuck", "completed", "failed"})
    assert run["status"] == "stuck", run
    reason = run["stuck_reason"]
    assert isinstance(reason, dict)
    return reason


def test_an_edited_function_body_in_the_unpacked_bundle_stops_the_run(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    dep, run_id = _waiting_run(server, make_app("snap", APP))
    server.kill9()
    folder = server.data_dir / "bundles" / str(dep["bundle_digest"])
    source = (folder / "app.py").read_text()
    # Only a body changes: the manifest (names, docstrings, schemas) stays the same.
    (folder / "app.py").write_text(source.replace("return n * 2", "return n * 1000"))
    server.start()
    reason = _stuck(server, run_id)
    assert reason["type"] == "CodeChanged"
    assert "app.py: changed (sha256" in str(reason["message"]) and "Nothing ran" in str(reason["message"])
    assert [c for c in reason["changes"] if c.startswith("app.py")]  # type: ignore[union-attr]
    # Nothing of the edited code ran: the journal holds the first step and the signal only.
    assert [e["kind"] for e in server.call(lambda c: c.journal(run_id))] == ["step", "signal"]
    # The edited copy is kept aside for inspection; the next load unpacks the verified artifact.
    aside = list((server.data_dir / "bundles").glob(".changed-*"))
    assert len(aside) == 1 and "n * 1000" in (aside[0] / "app.py").read_text()
    server.call(lambda c: c.move(run_id, str(dep["label"])))
    done = server.call(lambda c: c.result(run_id, wait=30))
    assert (done["status"], done["output"]) == ("completed", {"first": 2, "second": 4, "on": "v1"})


def test_a_planted_file_and_a_missing_file_are_named(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    dep, run_id = _waiting_run(server, make_app("snap", APP))
    server.kill9()
    folder = server.data_dir / "bundles" / str(dep["bundle_digest"])
    # A module that would shadow an import, and the config removed.
    (folder / "pydantic.py").write_text("raise SystemExit('shadowed')\n")
    (folder / "tether.toml").unlink()
    server.start()
    reason = _stuck(server, run_id)
    assert reason["type"] == "CodeChanged"
    assert reason["changes"] == ["pydantic.py: added (not in the deployed bundle)", "tether.toml: missing"]


def test_a_replaced_artifact_is_refused_before_it_is_unpacked(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    dep, run_id = _waiting_run(server, make_app("snap", APP))
    server.kill9()
    # Swap the stored bytes for another (valid) bundle, and drop the unpacked copy so that the
    # next load must unpack the artifact.
    from tether import _bundle

    other = write_app(tmp_path / "other", APP.replace("return n * 2", "return -1"))
    conn = sqlite3.connect(server.data_dir / "tether.db")
    with conn:
        conn.execute("UPDATE artifacts SET data = ? WHERE digest = ?", (_bundle.pack(other), dep["bundle_digest"]))
    conn.close()
    folder = server.data_dir / "bundles" / str(dep["bundle_digest"])
    for path in sorted(folder.rglob("*"), reverse=True):
        path.chmod(0o700)
    folder.chmod(0o700)
    import shutil

    shutil.rmtree(folder)
    server.start()
    reason = _stuck(server, run_id)
    assert reason["type"] == "ArtifactChanged"
    assert "does not match its digest" in str(reason["message"])
    assert not folder.exists()
    assert [e["kind"] for e in server.call(lambda c: c.journal(run_id))] == ["step", "signal"]


def test_the_unpacked_bundle_is_read_only(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    dep = server.call(lambda c: c.deploy(make_app("snap", APP), env="prod"))
    folder = server.data_dir / "bundles" / str(dep["bundle_digest"])
    assert folder.stat().st_mode & 0o777 == 0o555
    assert (folder / "app.py").stat().st_mode & 0o777 == 0o444


def test_the_app_reference_is_part_of_the_identity(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    folder = make_app("two", APP)
    (folder / "other.py").write_text(APP.replace('tether.App("snap")', 'tether.App("other")').replace("n * 2", "n * 3"))
    first = server.call(lambda c: c.deploy(folder, env="prod"))
    second = server.call(lambda c: c.deploy(folder, env="prod", app="other:app"))
    assert (first["label"], second["label"], second["created"]) == ("v1", "v2", True)
    assert first["bundle_digest"] == second["bundle_digest"] and first["id"] != second["id"]
    assert server.call(lambda c: c.envs())[0]["targets"] == [{"deployment_id": second["id"], "weight": 100}]
    run = server.call(lambda c: c.start_run("job", {"n": 1}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    assert server.call(lambda c: c.result(run["id"], wait=30))["output"] == {"first": 3, "second": 6, "on": "v2"}
    again = server.call(lambda c: c.deploy(folder, env="prod", app="other:app"))
    assert (again["id"], again["created"]) == (second["id"], False)


PROBE_APP = """
from pydantic import BaseModel
import probe_lib
import tether

app = tether.App("probe")

class Go(BaseModel):
    ok: bool

@app.workflow(signals={"go": Go})
async def job(ctx: tether.Context) -> str:
    await ctx.signal("go")
    return probe_lib.VERSION
"""


def _site(root: Path, version: str) -> Path:
    """A folder holding an installed distribution ``probe-lib`` at ``version`` (as pip lays it out)."""
    root.mkdir(parents=True)
    (root / "probe_lib.py").write_text(f"VERSION = {version!r}\n")
    info = root / f"probe_lib-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: probe-lib\nVersion: {version}\n")
    return root


@pytest.fixture
def probe_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path / "data", tmp_path / "server.log", env={"PYTHONPATH": str(_site(tmp_path / "site-1.0", "1.0"))}
    )
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


def test_a_library_swapped_between_restarts_stops_the_pinned_run(
    probe_server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    server = probe_server
    app_dir = make_app("probe", PROBE_APP)
    v1 = server.call(lambda c: c.deploy(app_dir, env="prod"))
    shown = server.call(lambda c: c.deployment("v1"))
    assert shown["environment"]["mode"] == "fingerprint"
    assert shown["environment"]["fingerprint"]["packages"]["probe-lib"] == "1.0"
    assert shown["environment"]["fingerprint"]["python"] == ".".join(map(str, sys.version_info[:3]))
    run = server.call(lambda c: c.start_run("job", {}, env="prod"))
    server.wait_for(run["id"], {"suspended"})

    server.stop()
    server.env["PYTHONPATH"] = str(_site(tmp_path / "site-2.0", "2.0"))
    server.start()
    reason = _stuck(server, run["id"])
    assert reason["type"] == "EnvironmentChanged"
    assert "probe-lib 1.0 → 2.0" in reason["changes"]  # type: ignore[operator]
    assert "probe-lib 1.0 → 2.0" in str(reason["message"]) and "deploy the app again" in str(reason["message"])

    # The same files deployed again under the new library are a new deployment...
    v2 = server.call(lambda c: c.deploy(app_dir, env="prod"))
    assert (v2["label"], v2["created"]) == ("v2", True) and v2["bundle_digest"] == v1["bundle_digest"]
    diff = server.call(lambda c: c.diff("v1", "v2"))
    assert any("probe-lib 1.0 → 2.0" in change["detail"] for change in diff["changes"])
    # ...and the operator moves the run there after a dry run: it finishes on the new library.
    server.call(lambda c: c.move(run["id"], "v2"))
    assert server.call(lambda c: c.result(run["id"], wait=30))["output"] == "2.0"


NAP = '''
from datetime import timedelta
import tether

app = tether.App("nap")

@app.function
async def mark(tag: str) -> str:
    """Marks a tag."""
    return tag

@app.workflow
async def nap(ctx: tether.Context, tag: str) -> str:
    await ctx.sleep(timedelta(seconds=2))
    return await ctx.step(mark, tag)
'''


def test_a_run_whose_deployment_cannot_be_loaded_is_stuck_not_waiting(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    deps = [server.call(lambda c, n=n: c.deploy(make_app(n, NAP + f"\n# {n}\n"))) for n in ("a", "b", "c")]
    runs = [server.call(lambda c, d=d: c.start_run("nap", {"tag": d["label"]}, deployment=d["label"])) for d in deps]
    for run in runs:
        server.wait_for(run["id"], {"suspended"})
    server.kill9()
    conn = sqlite3.connect(server.data_dir / "tether.db")
    with conn:
        # a: the artifact is gone (and so is the unpacked copy); b: the deployment's record is gone.
        conn.execute("UPDATE artifacts SET data = NULL WHERE digest = ?", (deps[0]["bundle_digest"],))
        conn.execute("DELETE FROM deployments WHERE id = ?", (deps[1]["id"],))
    conn.close()
    folder = server.data_dir / "bundles" / str(deps[0]["bundle_digest"])
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o700)
    import shutil

    shutil.rmtree(folder)
    server.start()
    gone_artifact = server.wait_for(runs[0]["id"], {"stuck", "completed", "failed"})
    gone_record = server.wait_for(runs[1]["id"], {"stuck", "completed", "failed"})
    assert gone_artifact["status"] == gone_record["status"] == "stuck"
    assert gone_artifact["stuck_reason"]["type"] == "DeploymentUnavailable"
    assert "is no longer stored" in gone_artifact["stuck_reason"]["message"]
    assert gone_record["stuck_reason"]["type"] == "DeploymentUnavailable"
    assert "record is gone" in gone_record["stuck_reason"]["message"]
    # Nothing else is held up: the healthy run finishes.
    assert server.call(lambda c: c.result(runs[2]["id"], wait=30))["output"] == "v3"


def test_a_planted_start_up_file_is_named(
    probe_server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    server = probe_server
    server.call(lambda c: c.deploy(make_app("probe", PROBE_APP), env="prod"))
    run = server.call(lambda c: c.start_run("job", {}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    server.stop()
    # sitecustomize runs in every interpreter that has it on its path: code no version names.
    (tmp_path / "site-1.0" / "sitecustomize.py").write_text("import os\n")
    server.start()
    reason = _stuck(server, run["id"])
    assert reason["type"] == "EnvironmentChanged"
    assert reason["changes"] == ["start-up file sitecustomize.py added"]
