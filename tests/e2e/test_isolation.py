"""Deployments isolated from the runtime and from each other.

A bundle that spies — reads the store, the server's secrets and environment, another
deployment's files, forges an append to another deployment's run, talks to another worker's
link — gets nothing in the ``sandbox`` tier, and the victim's journal is unchanged. The same
bundle in the ``process`` tier shows what that tier does not protect.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess
from tether import _frames
from tether.errors import ApiError

VICTIM = '''
from pydantic import BaseModel
import tether

app = tether.App("victim")

class Go(BaseModel):
    ok: bool

@app.function
async def pay(amount: int) -> int:
    """Pays an amount."""
    return amount

@app.workflow(signals={"go": Go})
async def payout(ctx: tether.Context, amount: int) -> int:
    paid = await ctx.step(pay, amount)
    await ctx.signal("go")
    return paid
'''

SPY = '''
import glob
import json
import os
import socket
import urllib.request

import tether

app = tether.App("spy")


def _try(action):
    try:
        return "GOT: " + str(action())[:80]
    except Exception as exc:
        return "refused: " + type(exc).__name__


@app.function
async def snoop(data_dir: str, victim_bundle: str, victim_run: str, runtime_url: str, link_port: int) -> dict:
    """Tries everything a hostile bundle would."""
    found = {}
    found["store"] = _try(lambda: open(os.path.join(data_dir, "tether.db"), "rb").read(64))
    found["data_dir"] = _try(lambda: os.listdir(data_dir))
    found["victim_bundle"] = _try(lambda: os.listdir(victim_bundle))
    found["other_bundles"] = _try(
        lambda: sorted(
            "own" if os.path.realpath(p) == os.path.realpath(os.getcwd()) else "other"
            for p in glob.glob(os.path.join(data_dir, "*", "*"))
        )
    )
    environ = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(path, "rb") as handle:
                if b"TETHER_SPY_MARKER" in handle.read():
                    environ.append(path)
        except OSError:
            pass
    found["server_environ"] = "GOT: " + ",".join(environ) if environ else "refused: not visible"
    found["own_environ"] = "GOT" if "TETHER_SPY_MARKER" in os.environ else "refused: scrubbed"
    found["uid"] = os.getuid()

    def scratch():
        with open("/tmp/spy-scratch", "w") as handle:
            handle.write("x")
        return sorted(n for n in os.listdir("/tmp") if n.startswith(("spy-", "tether-host")))

    found["tmp"] = _try(scratch)

    def forge():
        body = json.dumps({"attempt": 1, "token": "0" * 40, "entries": [
            {"index": 2, "kind": "step", "name": "pay", "args_digest": "FORGED-BY-SPY", "completed": True,
             "result": 1000000}]}).encode()
        request = urllib.request.Request(runtime_url + "/v1/internal/runs/" + victim_run + "/journal", data=body,
                                         headers={"content-type": "application/json"}, method="POST")
        return urllib.request.urlopen(request, timeout=5).read()

    found["forged_append"] = _try(forge)

    def link():
        with socket.create_connection(("127.0.0.1", link_port), timeout=5) as conn:
            message = json.dumps({"t": "manifest", "id": 0}).encode()
            conn.sendall(len(message).to_bytes(4, "big") + message)
            answer = conn.recv(4)
            if not answer:
                raise ConnectionResetError("closed without an answer")
            return answer

    found["victim_link"] = _try(link)
    return found


@app.workflow
async def spy(ctx: tether.Context, data_dir: str, victim_bundle: str, victim_run: str, runtime_url: str,
              link_port: int) -> dict:
    return await ctx.step(snoop, data_dir, victim_bundle, victim_run, runtime_url, link_port)
'''


@pytest.fixture
def marked_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", tmp_path / "server.log", env={"TETHER_SPY_MARKER": "server-secret"})
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


def _link_port(server: ServerProcess, app_ref: str = "app:app") -> int:
    ports = re.findall(rf"started worker \d+ for {re.escape(app_ref)} on port (\d+)", server.log_path.read_text())
    assert ports, server.log_path.read_text()
    return int(ports[-1])


def _spy(server: ServerProcess, make_app: Callable[..., Path], isolation: str) -> tuple[dict[str, Any], str]:
    victim = server.call(lambda c: c.deploy(make_app("victim", VICTIM), env="prod", isolation="sandbox"))
    run = server.call(lambda c: c.start_run("payout", {"amount": 5}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    port = _link_port(server)
    before = server.call(lambda c: c.journal(run["id"]))
    server.call(lambda c: c.deploy(make_app(f"spy-{isolation}", SPY), env="spy", isolation=isolation))
    inputs = {
        "data_dir": str(server.data_dir.resolve()),
        "victim_bundle": str((server.data_dir / "bundles" / victim["bundle_digest"]).resolve()),
        "victim_run": run["id"],
        "runtime_url": server.url,
        "link_port": port,
    }
    spied = server.call(lambda c: c.start_run("spy", inputs, env="spy", wait=60))
    assert spied["status"] == "completed", spied
    # Whatever the spy did, the victim's journal is exactly as it was, and it finishes as it should.
    assert server.call(lambda c: c.journal(run["id"])) == before
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    assert server.call(lambda c: c.result(run["id"], wait=30))["output"] == 5
    return spied["output"], run["id"]


def test_a_sandboxed_bundle_reaches_nothing_of_the_runtime_or_other_deployments(
    marked_server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    host_file = Path("/tmp") / f"tether-host-{marked_server.data_dir.parent.name}"
    host_file.write_text("the host's /tmp")
    try:
        found, _ = _spy(marked_server, make_app, "sandbox")
    finally:
        host_file.unlink()
    assert found["store"].startswith("refused"), found
    # Of the data directory it sees only the path to its own code — its unpacked bundle, or the
    # slot a warm spare was started on and then given the bundle's files — no store, logs or
    # other bundle.
    assert found["data_dir"] in ("GOT: ['bundles']", "GOT: ['slots']"), found
    assert found["victim_bundle"].startswith("refused"), found
    assert found["other_bundles"] == "GOT: ['own']", found
    assert found["server_environ"] == "refused: not visible", found
    assert found["own_environ"] == "refused: scrubbed", found
    assert found["uid"] == 65534, found
    # A private, writable /tmp: its own file is there, the host's are not.
    assert found["tmp"] == "GOT: ['spy-scratch']", found
    assert found["forged_append"] == "refused: HTTPError", found
    assert found["victim_link"] == "refused: ConnectionResetError", found


def test_the_process_tier_is_for_trusted_code(marked_server: ServerProcess, make_app: Callable[..., Path]) -> None:
    # What the process tier does not protect, as documented: the store and the data directory are readable.
    found, _ = _spy(marked_server, make_app, "process")
    assert found["store"].startswith("GOT: b'SQLite format 3"), found
    # Still true in every tier: a scrubbed environment, no forged append, no unauthenticated link.
    assert found["own_environ"] == "refused: scrubbed", found
    assert found["forged_append"] == "refused: HTTPError", found
    assert found["victim_link"] == "refused: ConnectionResetError", found


def test_a_link_without_the_workers_secret_is_dropped(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    server.call(lambda c: c.deploy(make_app("victim", VICTIM), env="prod"))
    port = _link_port(server)

    def ask(first: dict[str, Any]) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(_frames.encode(first) + _frames.encode({"t": "manifest", "id": 1}))
            return conn.recv(4)

    assert ask({"t": "manifest", "id": 0}) == b""
    assert ask({"t": "hello", "secret": "guess"}) == b""
    # The runtime's own link still works: runs go on.
    run = server.call(lambda c: c.start_run("payout", {"amount": 2}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    assert server.call(lambda c: c.run(run["id"]))["attempt"] == 1


def test_sandbox_and_an_unknown_tier_are_part_of_the_deploy(
    server: ServerProcess, make_app: Callable[..., Path]
) -> None:
    folder = make_app("victim", VICTIM)
    sandboxed = server.call(lambda c: c.deploy(folder, isolation="sandbox"))
    plain = server.call(lambda c: c.deploy(folder, isolation="process"))
    assert (sandboxed["isolation"], plain["isolation"]) == ("sandbox", "process")
    assert sandboxed["id"] != plain["id"] and plain["created"]
    with pytest.raises(ApiError) as refused:
        server.call(lambda c: c.deploy(folder, isolation="user"))
    assert refused.value.http_status == 400 and "use process" in refused.value.message
