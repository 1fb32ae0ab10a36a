"""Registered endpoints: 'tether serve' + 'deployments register'; signed requests; swapped code stops runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tether.errors import ApiError

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("hosted")

class Go(BaseModel):
    ok: bool

@app.function
async def double(n: int) -> int:
    """{DOC}"""
    return n * 2

@app.workflow(signals={{"go": Go}})
async def job(ctx: tether.Context, n: int) -> int:
    """Doubles n once it may."""
    value = await ctx.step(double, n)
    await ctx.signal("go")
    return value
'''
SECRET = "s3cret-for-tests"


class Endpoint:
    def __init__(self, app_dir: Path, log: Path) -> None:
        self.app_dir, self.log = app_dir, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, port: int = 0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tether", "serve", "--app-dir", str(self.app_dir), "--port", str(port)],
                stdout=out,
                stderr=out,
                env={**os.environ, "TETHER_ENDPOINT_SECRET": SECRET},
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.findall(r"listening on (http://\S+)", self.log.read_text())
            if found and (port == 0 or found[-1].endswith(f":{port}")) and len(found) >= self.starts:
                self.url = found[-1]
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(self.log.read_text())

    starts = 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)


@pytest.fixture
def endpoint(make_app: Callable[..., Path], tmp_path: Path) -> Iterator[Endpoint]:
    hosted = Endpoint(make_app("hosted", APP.format(DOC="Doubles a number.")), tmp_path / "endpoint.log")
    hosted.start()
    yield hosted
    hosted.stop()


def test_a_registered_endpoint_serves_runs_and_a_code_swap_stops_them(
    server: ServerProcess, endpoint: Endpoint
) -> None:
    with pytest.raises(ApiError) as wrong:
        server.call(lambda c: c.register(endpoint.url, secret="not-it"))
    assert wrong.value.http_status == 400 and "401" in wrong.value.message
    assert server.table_counts()["deployments"] == 0

    dep = server.call(lambda c: c.register(endpoint.url, secret=SECRET, env="prod"))
    assert (dep["kind"], dep["url"], dep["label"], dep["created"]) == ("endpoint", endpoint.url, "v1", True)
    assert "secret" not in dep and "secret" not in server.call(lambda c: c.deployment("v1"))
    again = server.call(lambda c: c.register(endpoint.url, secret=SECRET))
    assert (again["id"], again["created"]) == (dep["id"], False)

    # An unsigned request is refused by the endpoint itself.
    assert httpx.post(endpoint.url + "/tether/invoke", json={}).status_code == 401

    first = server.call(lambda c: c.start_run("job", {"n": 21}, env="prod"))
    server.wait_for(first["id"], {"suspended"})
    server.call(lambda c: c.signal(first["id"], "go", {"ok": True}))
    assert server.call(lambda c: c.result(first["id"], wait=30))["output"] == 42

    second = server.call(lambda c: c.start_run("job", {"n": 5}, env="prod"))
    server.wait_for(second["id"], {"suspended"})
    # The code behind the URL changes (a tool's description): the next invoke is refused.
    port = int(endpoint.url.rsplit(":", 1)[1])
    endpoint.stop()
    (endpoint.app_dir / "app.py").write_text(APP.format(DOC="Doubles a number, now faster."))
    endpoint.starts = 2
    endpoint.start(port)
    server.call(lambda c: c.signal(second["id"], "go", {"ok": True}))
    stuck = server.wait_for(second["id"], {"stuck", "completed", "failed"})
    reason = stuck["stuck_reason"]
    assert stuck["status"] == "stuck" and reason["type"] == "EndpointChanged"
    # Field by field: the manifest's component and field, and the file.
    assert reason["changes"][0] == (
        "manifest: double: description: 'Doubles a number.' → 'Doubles a number, now faster.'"
    ), reason["changes"]
    assert re.fullmatch(r"code: app\.py: changed \(sha256 \w{12} → \w{12}\)", reason["changes"][1])
    assert reason["message"].startswith(f"the endpoint at {endpoint.url} no longer serves v1 (manifest: double:")


BODY = APP.format(DOC="Doubles a number.")


def test_a_body_swapped_behind_the_url_is_refused_like_a_manifest_swap(
    server: ServerProcess, endpoint: Endpoint
) -> None:
    server.call(lambda c: c.register(endpoint.url, secret=SECRET, env="prod"))
    run = server.call(lambda c: c.start_run("job", {"n": 5}, env="prod"))
    server.wait_for(run["id"], {"suspended"})
    port = int(endpoint.url.rsplit(":", 1)[1])
    endpoint.stop()
    # Only the body changes: the manifest (names, docstrings, schemas) is byte for byte the same.
    (endpoint.app_dir / "app.py").write_text(BODY.replace("return n * 2", "return n * 3"))
    endpoint.starts = 2
    endpoint.start(port)
    server.call(lambda c: c.signal(run["id"], "go", {"ok": True}))
    stuck = server.wait_for(run["id"], {"stuck", "completed", "failed"})
    reason = stuck["stuck_reason"]
    assert stuck["status"] == "stuck" and reason["type"] == "EndpointChanged", stuck
    assert len(reason["changes"]) == 1 and reason["changes"][0].startswith("code: app.py: changed"), reason
    assert [e["kind"] for e in server.call(lambda c: c.journal(run["id"]))] == ["step", "signal"]
    # Registering what the URL serves now is a new deployment; the run moves there after a dry run.
    new = server.call(lambda c: c.register(endpoint.url, secret=SECRET))
    assert (new["label"], new["created"]) == ("v2", True)
    server.call(lambda c: c.move(run["id"], "v2"))
    assert server.call(lambda c: c.result(run["id"], wait=30))["output"] == 10


COUNTING = '''
import tether

app = tether.App("counting")

@app.function
async def mark(path: str) -> int:
    """Counts one execution in a file."""
    with open(path, "a") as f:
        f.write("x")
    return 1

@app.workflow
async def job(ctx: tether.Context, path: str) -> int:
    return await ctx.step(mark, path)
'''


def test_a_replayed_or_stale_signed_request_is_refused_and_runs_nothing(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    import json
    import time as clock

    from tether.protocol import INVOKE_PATH, MANIFEST_PATH, signed_headers

    hosted = Endpoint(make_app("counting", COUNTING), tmp_path / "counting.log")
    hosted.start()
    try:
        manifest = httpx.get(hosted.url + MANIFEST_PATH).json()
        assert manifest["error"]["code"] == "unauthenticated"
        headers = signed_headers(SECRET, MANIFEST_PATH.encode(), now=clock.time())
        ok = httpx.get(hosted.url + MANIFEST_PATH, headers=headers)
        assert ok.status_code == 200
        served = ok.json()
        effects = tmp_path / "effects.txt"
        body = json.dumps(
            {
                "run_id": "run_captured",
                "attempt": 1,
                "token": "not-a-token",
                "deployment_id": "dep_x",
                "deployment_label": "v1",
                "manifest_digest": served["digest"],
                "component": "job",
                "input": {"path": str(effects)},
                "journal": [],
                "runtime_url": server.url,
            }
        ).encode()
        captured = {"content-type": "application/json", **signed_headers(SECRET, body, now=clock.time())}
        first = httpx.post(hosted.url + INVOKE_PATH, content=body, headers=captured, timeout=30)
        assert first.status_code == 200 and first.json()["outcome"] == "fenced", first.text  # no such attempt
        assert effects.read_text() == "x"
        # The very same bytes again: refused before anything runs.
        again = httpx.post(hosted.url + INVOKE_PATH, content=body, headers=captured, timeout=30)
        assert again.status_code == 401 and "replayed" in again.json()["error"]["message"]
        stale = {"content-type": "application/json", **signed_headers(SECRET, body, now=clock.time() - 3600)}
        late = httpx.post(hosted.url + INVOKE_PATH, content=body, headers=stale, timeout=30)
        assert late.status_code == 401 and "ago" in late.json()["error"]["message"]
        assert effects.read_text() == "x"
        # A replayed manifest read is refused too.
        assert httpx.get(hosted.url + MANIFEST_PATH, headers=headers).status_code == 401
    finally:
        hosted.stop()
