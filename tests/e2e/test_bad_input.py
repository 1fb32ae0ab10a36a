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
        assert "not valid JSON" in _error(deep, 400, "bad_request")
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
