"""The OpenAPI document: served as generated, shown as a page, and required of every API route."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from tests.e2e.conftest import ServerProcess
from tether.server import app as server_app
from tether.server._spec import SPECS
from tether.server.app import ServerOptions, create_app


def test_the_served_document_is_the_one_generated_from_the_code(server: ServerProcess, tmp_path: Path) -> None:
    served = httpx.get(f"{server.url}/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    generated = create_app(ServerOptions(data_dir=tmp_path, runtime_url="http://x")).state.openapi
    assert served.json() == json.loads(json.dumps(generated))
    operations = {(m.upper(), p) for p, methods in served.json()["paths"].items() for m in methods}
    assert operations == set(SPECS)
    run = served.json()["paths"]["/v1/runs/{id}"]["get"]
    assert run["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Run"}
    assert "404" in run["responses"] and "401" in run["responses"]
    # The page lists every operation, from the server itself.
    page = httpx.get(f"{server.url}/api")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for path, methods in served.json()["paths"].items():
        for op in methods.values():
            assert f'id="{op["operationId"]}"' in page.text, path
    assert '<script src="http' not in page.text and "cdn" not in page.text.lower()


def test_unknown_query_parameters_and_methods_are_refused_saying_what_is_taken(server: ServerProcess) -> None:
    before = server.table_counts()
    typo = httpx.get(f"{server.url}/v1/runs", params={"stauts": "failed"})
    assert typo.status_code == 400
    message = typo.json()["error"]["message"]
    assert "'stauts'" in message and "status" in message and "limit" in message
    assert httpx.get(f"{server.url}/v1/runs", params={"status": "failed", "limit": "5"}).status_code == 200
    assert httpx.get(f"{server.url}/v1/runs", params={"limit": "5.5"}).status_code == 400
    wrong = httpx.patch(f"{server.url}/v1/deployments")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in wrong.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}
    assert server.table_counts() == before


def test_an_api_route_without_a_spec_stops_the_server_from_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def nothing(_: object) -> None:
        return None

    monkeypatch.setattr(server_app.admin, "ROUTES", [*server_app.admin.ROUTES, Route("/v1/new", nothing)])
    monkeypatch.setitem(server_app.POLICY, ("GET", "/v1/new"), server_app.POLICY[("GET", "/v1/runs")])
    with pytest.raises(RuntimeError, match=r"GET /v1/new has no entry in tether.server._spec.SPECS"):
        create_app(ServerOptions(data_dir=tmp_path, runtime_url="http://x"))
