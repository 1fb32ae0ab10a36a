"""Bad input gets a clear error with the right status, and nothing partial is stored."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tether.server._spec import SPECS
from tether.server.api._http import MAX_JSON_BYTES, MAX_JSON_DEPTH
from tether.server.api.internal import MAX_APPEND_BYTES, MAX_APPEND_DEPTH

APP = '''
from pydantic import BaseModel
import tether

app = tether.App("shop")

class Order(BaseModel):
    sku: str
    quantity: int

class Approval(BaseModel):
    ok: bool

@app.workflow(signals={"approval": Approval})
async def place(ctx: tether.Context, order: Order, note: str = "") -> int:
    """Places an order once approved."""
    await ctx.signal("approval")
    return order.quantity
'''


@pytest.fixture
def deployed(server: ServerProcess, make_app: Callable[..., Path]) -> ServerProcess:
    server.call(lambda c: c.deploy(make_app("shop", APP), env="prod"))
    return server


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def test_input_violating_the_schema_is_422_naming_the_field(deployed: ServerProcess) -> None:
    before = deployed.table_counts()
    response = httpx.post(
        f"{deployed.url}/v1/envs/prod/workflows/place/runs", json={"order": {"sku": "a1", "quantity": "many"}}
    )
    message = _error(response, 422, "schema_violation")
    assert "order.quantity" in message and "integer" in message
    missing = httpx.post(f"{deployed.url}/v1/envs/prod/workflows/place/runs", json={})
    assert "'order' is a required property" in _error(missing, 422, "schema_violation")
    assert deployed.table_counts() == before


def test_unknown_names_are_404(deployed: ServerProcess) -> None:
    before = deployed.table_counts()
    url = deployed.url
    assert "no environment 'nope'" in _error(
        httpx.post(f"{url}/v1/envs/nope/workflows/place/runs", json={}), 404, "not_found"
    )
    assert "no deployment 'v9'" in _error(
        httpx.post(f"{url}/v1/deployments/v9/workflows/place/runs", json={}), 404, "not_found"
    )
    message = _error(httpx.post(f"{url}/v1/envs/prod/workflows/nope/runs", json={}), 404, "not_found")
    assert "no workflow 'nope'" in message and "place" in message
    _error(httpx.get(f"{url}/v1/runs/run_missing"), 404, "not_found")
    _error(httpx.get(f"{url}/v1/no/such/path"), 404, "not_found")
    assert deployed.table_counts() == before


def test_malformed_json_is_400(deployed: ServerProcess) -> None:
    before = deployed.table_counts()
    response = httpx.post(
        f"{deployed.url}/v1/envs/prod/workflows/place/runs",
        content=b'{"order": ',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in _error(response, 400, "bad_request")
    not_object = httpx.post(f"{deployed.url}/v1/envs/prod/workflows/place/runs", json=[1, 2])
    assert "JSON object" in _error(not_object, 400, "bad_request")
    # Deep nesting with a number too long for 64 bits took the exact parser into a RecursionError (500).
    for number in (b"12345678901234567890", b"1"):
        deep = httpx.post(
            f"{deployed.url}/v1/envs/prod/workflows/place/runs",
            content=b'{"order": ' + b"[" * 5000 + number + b"]" * 5000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert "nested more than 64 levels" in _error(deep, 400, "bad_request")
    assert deployed.table_counts() == before


def test_corrupt_unloadable_or_oversized_bundles_are_refused(deployed: ServerProcess, tmp_path: Path) -> None:
    before = deployed.table_counts()
    bundles_before = sorted(p.name for p in (deployed.data_dir / "bundles").iterdir())
    url = f"{deployed.url}/v1/deployments"
    assert "not a gzip-compressed tar" in _error(httpx.post(url, content=b"garbage" * 100), 400, "bad_bundle")

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in (("tether.toml", b'app = "broken:app"\n'), ("broken.py", b"import not_a_module_anywhere\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    message = _error(httpx.post(url, content=raw.getvalue()), 400, "bad_bundle")
    assert "cannot import broken" in message and "not_a_module_anywhere" in message

    for name, source in (("exits", b"import sys\nsys.exit(3)\n"), ("vanishes", b"import os\nos._exit(7)\n")):
        exiting = io.BytesIO()
        with tarfile.open(fileobj=exiting, mode="w:gz") as tar:
            for member, data in (("tether.toml", f'app = "{name}:app"\n'.encode()), (f"{name}.py", source)):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        # A module that exits at import is a bad bundle (400), not a worker to retry (503).
        _error(httpx.post(url, content=exiting.getvalue(), timeout=60), 400, "bad_bundle")

    escaping = io.BytesIO()
    with tarfile.open(fileobj=escaping, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert "unsafe path" in _error(httpx.post(url, content=escaping.getvalue()), 400, "bad_bundle")

    huge = b"\0" * (50 * 1024 * 1024 + 1)
    _error(httpx.post(url, content=huge, timeout=60), 413, "too_large")
    assert deployed.table_counts() == before
    assert sorted(p.name for p in (deployed.data_dir / "bundles").iterdir()) == bundles_before


def test_bad_signals_are_refused_without_being_stored(deployed: ServerProcess) -> None:
    run = deployed.call(lambda c: c.start_run("place", {"order": {"sku": "a1", "quantity": 2}}, env="prod"))
    deployed.wait_for(run["id"], {"suspended"})
    before = deployed.table_counts()
    url = f"{deployed.url}/v1/runs/{run['id']}/signals"
    assert "'ok' is a required property" in _error(
        httpx.post(f"{url}/approval", json={"okay": True}), 422, "schema_violation"
    )
    assert "declares no signal 'refund'" in _error(httpx.post(f"{url}/refund", json={}), 404, "not_found")
    assert deployed.table_counts() == before
    deployed.call(lambda c: c.signal(run["id"], "approval", {"ok": True}))
    assert deployed.call(lambda c: c.result(run["id"], wait=30))["output"] == 2
    ended = httpx.post(f"{url}/approval", json={"ok": True})
    assert "takes no more signals" in _error(ended, 409, "conflict")


def test_environment_and_rollback_refusals(deployed: ServerProcess) -> None:
    url = deployed.url
    assert "no earlier pointer" in _error(httpx.post(f"{url}/v1/envs/prod/rollback"), 409, "conflict")
    _error(httpx.put(f"{url}/v1/envs/staging", json={"deployment": "v7"}), 404, "not_found")
    _error(httpx.put(f"{url}/v1/envs/bad name!", json={"deployment": "v1"}), 400, "bad_request")
    assert "drained" in _error(httpx.delete(f"{url}/v1/deployments/v1"), 409, "conflict")


def test_writes_from_another_sites_page_are_refused(deployed: ServerProcess) -> None:
    run = deployed.call(lambda c: c.start_run("place", {"order": {"sku": "a", "quantity": 1}}, env="prod"))
    deployed.wait_for(run["id"], {"suspended"})
    forged = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ]
    for headers in forged:
        answer = httpx.post(f"{deployed.url}/v1/runs/{run['id']}/kill", json={"reason": "x"}, headers=headers)
        assert answer.status_code == 403, headers
        assert answer.json()["error"]["code"] == "forbidden"
        assert "another site" in answer.json()["error"]["message"]
        env = httpx.put(f"{deployed.url}/v1/envs/prod", json={"deployment": "v1"}, headers=headers)
        assert env.status_code == 403
    # Reads pass; nothing was changed or audited.
    assert httpx.get(f"{deployed.url}/v1/runs/{run['id']}", headers=forged[0]).status_code == 200
    assert deployed.call(lambda c: c.run(run["id"]))["status"] == "suspended"
    assert deployed.call(lambda c: c.audit(target=run["id"])) == []
    # The same origin (a page of this server) and clients that send no Origin (the CLI) pass.
    same = httpx.post(
        f"{deployed.url}/v1/runs/{run['id']}/pause",
        json={},
        headers={"Origin": deployed.url, "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 200
    assert deployed.call(lambda c: c.resume(run["id"]))["status"] == "suspended"


def test_a_second_server_on_the_same_data_directory_is_refused(deployed: ServerProcess) -> None:
    assert deployed.process is not None
    second = subprocess.run(
        [sys.executable, "-m", "tether", "server", "--port", "0", "--data-dir", str(deployed.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"pid {deployed.process.pid} at {deployed.url}" in second.stderr, second.stderr
    assert "another --data-dir" in second.stderr
    # The first one goes on serving.
    assert httpx.get(deployed.url + "/healthz").status_code == 200


def _bodies(url: str, run_id: str) -> list[tuple[str, str]]:
    """Every API route that reads a JSON body, with real ids: (method, URL)."""
    values = {"env": "prod", "dep": "v1", "name": "place", "id": run_id}
    found = []
    for (method, path), op in SPECS.items():
        if any(c.media_type == "application/json" for c in op.body):
            if path.endswith("/signals/{name}"):
                values = {**values, "name": "approval"}
            found.append((method, url + path.format(**values)))
            values["name"] = "place"
    return found


def test_every_json_body_is_bounded_in_depth_and_size(deployed: ServerProcess) -> None:
    run = deployed.call(lambda c: c.start_run("place", {"order": {"sku": "a1", "quantity": 2}}, env="prod"))
    deployed.wait_for(run["id"], {"suspended"})
    before = deployed.table_counts()
    routes = _bodies(deployed.url, run["id"])
    assert len(routes) >= 15, routes
    for method, url in routes:
        internal = "/internal/" in url
        depth = MAX_APPEND_DEPTH if internal else MAX_JSON_DEPTH
        deep = b'{"a": ' * (depth + 1) + b"1" + b"}" * (depth + 1)
        answer = httpx.request(method, url, content=deep, headers={"content-type": "application/json"})
        message = _error(answer, 400, "bad_request")
        assert f"nested more than {depth} levels" in message, (method, url, message)
        size = MAX_APPEND_BYTES if internal else MAX_JSON_BYTES
        big = b'{"a": "' + b"x" * size + b'"}'
        answer = httpx.request(method, url, content=big, headers={"content-type": "application/json"}, timeout=60)
        assert str(size) in _error(answer, 413, "too_large"), (method, url)
    # Deep enough to exhaust the interpreter's stack, with a number only the exact parser reads.
    deepest = b"[" * 5000 + b"12345678901234567890" + b"]" * 5000
    answer = httpx.post(f"{deployed.url}/v1/envs/prod/workflows/place/runs", content=deepest)
    assert f"nested more than {MAX_JSON_DEPTH} levels" in _error(answer, 400, "bad_request")
    assert deployed.table_counts() == before
    # Exactly at the limit the depth is no reason to refuse (a route may still refuse the content).
    for method, url in routes:
        depth = MAX_APPEND_DEPTH if "/internal/" in url else MAX_JSON_DEPTH
        fits = b'{"a": ' * depth + b"1" + b"}" * depth
        answer = httpx.request(method, url, content=fits, headers={"content-type": "application/json"})
        assert "nested" not in answer.text and answer.status_code < 500, (method, url, answer.text)


def _bundle(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_a_bundle_that_hangs_at_import_is_refused_with_its_stderr(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log", args=["--import-timeout", "5"])
    server.start()
    try:
        before = server.table_counts()
        hangs = _bundle(
            {
                "tether.toml": b'app = "hangs:app"\n',
                "hangs.py": b"import sys, time\nprint('warming the cache', file=sys.stderr, flush=True)\n"
                b"time.sleep(3600)\n",
            }
        )
        answer = httpx.post(f"{server.url}/v1/deployments", content=hangs, timeout=120)
        message = _error(answer, 400, "bad_bundle")
        assert "within 5s" in message and "--import-timeout" in message, message
        assert "warming the cache" in message, message
        assert server.table_counts() == before
        # An app that prints to standard output at import is a good app: its prints go to the log.
        chatty = _bundle(
            {
                "tether.toml": b'app = "chatty:app"\n',
                "chatty.py": b"import tether\nprint('hello from import')\napp = tether.App('chatty')\n\n"
                b"@app.workflow\nasync def hi(ctx: tether.Context) -> str:\n    print('hello from a run')\n"
                b"    return 'hi'\n",
            }
        )
        deployed = httpx.post(f"{server.url}/v1/deployments?env=prod", content=chatty, timeout=120)
        assert deployed.status_code == 201, deployed.text
        run = server.call(lambda c: c.start_run("hi", {}, env="prod", wait=60))
        assert run["status"] == "completed" and run["output"] == "hi"
    finally:
        server.stop()
