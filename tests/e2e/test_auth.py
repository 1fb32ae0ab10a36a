"""API tokens, the mode switch, the Host allow-list, the bind rule and real actors, on a real
``tether server`` subprocess over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_endpoints import APP, SECRET, Endpoint
from tether.client import Client
from tether.server._auth import LOCAL_RECHECK

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"


def tether(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TETHER_TOKEN", "TETHER_URL")}
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


def secret_of(token: str) -> str:
    """The secret part of ``tether_<12 hex id>_<secret>`` (the secret may hold '_' itself)."""
    return token[len("tether_") + 13 :]


def id_of(token: str) -> str:
    return token[len("tether_") : len("tether_") + 12]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def make_token(server: ServerProcess, *args: str) -> str:
    """``tether tokens create --data-dir``: the bootstrap path; the token is the only stdout line."""
    done = tether("tokens", "create", "--data-dir", str(server.data_dir), *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tether_"), done.stdout
    return lines[0]


def db_rows(server: ServerProcess, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{server.data_dir / 'tether.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_token_is_shown_once_and_the_store_keeps_only_its_hash(server: ServerProcess) -> None:
    token = make_token(server, "--tenant", "default", "--scope", "admin", "--name", "ci")
    secret = secret_of(token)
    # Listing (CLI and API) names it but never shows it.
    listed = tether("--url", server.url, "--token", token, "--json", "tokens", "list")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout and token not in listed.stdout
    assert [t["name"] for t in json.loads(listed.stdout)] == ["ci"]
    api = httpx.get(server.url + "/v1/tokens", headers=bearer(token))
    assert api.status_code == 200 and secret not in api.text
    # A second token made through the API: its text is in that one answer only.
    made = httpx.post(server.url + "/v1/tokens", json={"scope": "read", "name": "dash"}, headers=bearer(token))
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    second = made.json()["token"]
    assert secret_of(second) not in httpx.get(server.url + "/v1/tokens", headers=bearer(token)).text
    # The database file (and its WAL) holds hashes, never a secret.
    rows = db_rows(server, "SELECT id, hash FROM tokens ORDER BY name")
    assert len(rows) == 2
    expected = {id_of(token): hashlib.sha256(secret.encode()).hexdigest()}
    expected[id_of(second)] = hashlib.sha256(secret_of(second).encode()).hexdigest()
    assert dict(rows) == expected
    for path in server.data_dir.glob("tether.db*"):
        raw = path.read_bytes()
        for text in (token, second):
            assert secret_of(text).encode() not in raw, f"{path.name} holds a token's secret"


def test_revoked_and_expired_tokens_are_401(server: ServerProcess) -> None:
    admin = make_token(server, "--scope", "admin", "--name", "boss")
    short = httpx.post(server.url + "/v1/tokens", json={"scope": "read", "expires_in": 1}, headers=bearer(admin))
    assert short.status_code == 201, short.text
    assert httpx.get(server.url + "/v1/runs", headers=bearer(short.json()["token"])).status_code == 200
    doomed = httpx.post(server.url + "/v1/tokens", json={"scope": "read", "name": "doomed"}, headers=bearer(admin))
    doomed_token = doomed.json()["token"]
    assert httpx.get(server.url + "/v1/runs", headers=bearer(doomed_token)).status_code == 200
    revoked = tether("--url", server.url, "--token", admin, "tokens", "revoke", doomed.json()["id"])
    assert revoked.returncode == 0, revoked.stderr
    after = httpx.get(server.url + "/v1/runs", headers=bearer(doomed_token))
    assert after.status_code == 401
    assert after.json()["error"] == {
        "code": "unauthenticated",
        "message": "token 'doomed' was revoked: ask an admin of tenant 'default' for a new one",
    }
    time.sleep(1.2)
    expired = httpx.get(server.url + "/v1/runs", headers=bearer(short.json()["token"]))
    assert expired.status_code == 401 and "has expired" in expired.json()["error"]["message"]
    # A forged token (right id, wrong secret), a malformed one and another scheme: all 401.
    forged = f"tether_{id_of(doomed_token)}_" + "A" * 43
    admin_forged = f"tether_{id_of(admin)}_" + "A" * 43
    for header in (f"Bearer {admin_forged}", f"Bearer {forged}", "Bearer nope", f"Basic {admin}", "Bearer"):
        answer = httpx.get(server.url + "/v1/runs", headers={"authorization": header})
        assert answer.status_code == 401, header
        assert answer.json()["error"]["code"] == "unauthenticated"
    # Revoking the last usable token does not reopen the server.
    tether("tokens", "revoke", "--data-dir", str(server.data_dir), id_of(admin))
    assert httpx.get(server.url + "/v1/runs").status_code == 401
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_local_mode_until_the_first_token_then_every_route_needs_one(server: ServerProcess) -> None:
    local = httpx.get(server.url + "/v1/whoami")
    assert local.json() == {
        "tenant": "default",
        "scope": "operator",
        "actor": "anonymous",
        "mode": "local",
        "token": None,
    }
    assert httpx.get(server.url + "/v1/deployments").status_code == 200
    assert httpx.get(server.url + "/").status_code == 200
    token = make_token(server, "--scope", "read", "--name", "viewer")
    # Written to the data directory by another process: the server sees it within LOCAL_RECHECK.
    deadline = time.monotonic() + LOCAL_RECHECK + 2
    while (refused := httpx.get(server.url + "/v1/deployments")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refused.status_code == 401
    assert "tether tokens create" in refused.json()["error"]["message"]
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/healthz").status_code == 200
    page = httpx.get(server.url + "/runs?status=stuck")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Dstuck"
    assert httpx.get(server.url + "/v1/deployments", headers=bearer(token)).status_code == 200
    # The CLI takes --token or TETHER_TOKEN, and says what to do without one.
    without = tether("--url", server.url, "deployments", "list")
    assert without.returncode == 4 and "tether tokens create" in without.stderr
    assert tether("--url", server.url, "--token", token, "deployments", "list").returncode == 0
    assert tether("--url", server.url, "deployments", "list", env={"TETHER_TOKEN": token}).returncode == 0


def test_audit_names_the_token_not_a_header(server: ServerProcess) -> None:
    server.call(lambda c: c.deploy(HELLO, env="prod"))
    before = server.call(lambda c: c.audit(limit=10))
    # Local mode: as before tokens, the X-Tether-Actor header (the ServerProcess client sends "tests").
    assert {r["actor"] for r in before} == {"tests"}
    token = make_token(server, "--scope", "admin", "--name", "release-bot")

    async def act(c: Client) -> list[dict[str, Any]]:
        await c.set_env("staging", "v1", reason="try it")
        return await c.audit(limit=1)

    async def go() -> list[dict[str, Any]]:
        async with Client(server.url, token=token, actor="mallory") as c:
            return await act(c)

    (latest,) = asyncio.run(go())
    assert latest["action"] == "env.set" and latest["actor"] == "token:release-bot@default"
    history = httpx.get(server.url + "/v1/envs/staging/history", headers=bearer(token)).json()["history"]
    assert history[0]["actor"] == "token:release-bot@default"
    created = [r for r in asyncio.run(go_audit(server, token)) if r["action"] == "token.create"]
    assert created and created[0]["target"] == id_of(token)


async def go_audit(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    async with Client(server.url, token=token) as c:
        return await c.audit(limit=50)


def test_dns_rebinding_host_is_refused_before_anything_happens(server: ServerProcess) -> None:
    server.call(lambda c: c.deploy(HELLO, env="prod"))
    token = make_token(server, "--scope", "admin")
    before = server.table_counts()
    for host in ("evil.example", "evil.example:7070", "127.0.0.1.evil.example", "localhost.evil.example", ""):
        for method, path, body in (
            ("GET", "/v1/deployments", None),
            ("GET", "/", None),
            ("GET", "/healthz", None),
            ("PUT", "/v1/envs/prod", {"deployment": "v1", "reason": "rebound"}),
            ("POST", "/v1/envs/prod/rollback", {}),
        ):
            answer = httpx.request(
                method, server.url + path, json=body, headers={**bearer(token), "host": host}, timeout=30
            )
            assert answer.status_code == 421, (host, method, path, answer.text)
            assert answer.json()["error"]["code"] == "host_not_allowed"
            assert "--allowed-host" in answer.json()["error"]["message"]
    assert server.table_counts() == before, "a refused request changed something"
    # Loopback names with any port are the server's own.
    port = server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert httpx.get(server.url + "/healthz", headers={"host": host}).status_code == 200, host


def test_allowed_host_adds_names(tmp_path: Path) -> None:
    proc = ServerProcess(
        tmp_path / "data",
        tmp_path / "server.log",
        args=["--allowed-host", "tether.example.com", "--allowed-host", "api.example.com:8443"],
    )
    proc.start()
    try:
        ok = {"tether.example.com", "TETHER.example.com:443", "tether.example.com:1", "api.example.com:8443"}
        for host in ok:
            assert httpx.get(proc.url + "/healthz", headers={"host": host}).status_code == 200, host
        for host in ("api.example.com", "api.example.com:443", "evil.example", "example.com"):
            assert httpx.get(proc.url + "/healthz", headers={"host": host}).status_code == 421, host
    finally:
        proc.stop()


def test_beyond_loopback_only_with_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    refused = tether("server", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(data))
    assert refused.returncode == 2
    assert "no API token exists" in refused.stderr and "tether tokens create" in refused.stderr
    made = tether("tokens", "create", "--data-dir", str(data), "--scope", "operator", "--name", "root")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    proc = ServerProcess(data, tmp_path / "server.log", args=["--host", "0.0.0.0"])
    proc.start()
    try:
        assert proc.url.startswith("http://0.0.0.0:")
        port = proc.url.rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/v1/deployments").status_code == 401
        assert httpx.get(base + "/v1/deployments", headers=bearer(token)).status_code == 200
        # Listening beyond loopback keeps token mode even once every token is revoked.
        assert tether("tokens", "revoke", "--data-dir", str(data), id_of(token)).returncode == 0
        assert httpx.get(base + "/v1/deployments", headers=bearer(token)).status_code == 401
        assert httpx.get(base + "/v1/whoami").status_code == 401
    finally:
        proc.stop()


@pytest.mark.parametrize(
    "body",
    [
        {"scope": "root"},
        {"scope": 3},
        {},
        {"scope": "read", "expires_in": "soon"},
        {"scope": "read", "expires_in": -5},
        {"scope": "read", "expires_in": True},
        {"scope": "read", "name": "has space"},
        {"scope": "read", "tenant": 7},
    ],
)
def test_bad_token_requests_are_400_never_500(server: ServerProcess, body: dict[str, Any]) -> None:
    token = make_token(server, "--scope", "admin", "--name", "admin")
    answer = httpx.post(server.url + "/v1/tokens", json=body, headers=bearer(token))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"
    assert db_rows(server, "SELECT COUNT(*) FROM tokens") == [(1,)]


def test_tenants_create_and_list(server: ServerProcess) -> None:
    root = make_token(server, "--scope", "operator", "--name", "root")
    created = tether("--url", server.url, "--token", root, "tenants", "create", "team-a")
    assert created.returncode == 0, created.stderr
    again = tether("--url", server.url, "--token", root, "tenants", "create", "team-a")
    assert again.returncode == 4 and "exists already" in again.stderr
    bad = httpx.post(server.url + "/v1/tenants", json={"name": "Team A!"}, headers=bearer(root))
    assert bad.status_code == 400
    listed = tether("--url", server.url, "--token", root, "--json", "tenants", "list")
    assert [t["id"] for t in json.loads(listed.stdout)] == ["default", "team-a"]
    team = tether("--url", server.url, "--token", root, "tokens", "create", "--tenant", "team-a", "--scope", "admin")
    assert team.returncode == 0, team.stderr
    who = httpx.get(server.url + "/v1/whoami", headers=bearer(team.stdout.strip())).json()
    assert (who["tenant"], who["scope"], who["mode"]) == ("team-a", "admin", "token")
    # A tenant admin cannot list tenants, and a token for a tenant that does not exist is 404.
    assert httpx.get(server.url + "/v1/tenants", headers=bearer(team.stdout.strip())).status_code == 403
    nowhere = tether("tokens", "create", "--data-dir", str(server.data_dir), "--tenant", "nope", "--scope", "read")
    assert nowhere.returncode == 3 and "no tenant 'nope'" in nowhere.stderr


def test_an_admin_cannot_revoke_the_operator(server: ServerProcess) -> None:
    root = make_token(server, "--scope", "operator", "--name", "root")
    admin = make_token(server, "--scope", "admin", "--name", "admin")
    root_id = id_of(root)
    refused = httpx.delete(server.url + f"/v1/tokens/{root_id}", headers=bearer(admin))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert httpx.get(server.url + "/v1/whoami", headers=bearer(root)).status_code == 200
    # The operator may revoke itself (and any token).
    assert httpx.delete(server.url + f"/v1/tokens/{root_id}", headers=bearer(root)).status_code == 200
    assert httpx.get(server.url + "/v1/whoami", headers=bearer(root)).status_code == 401


def test_idempotency_keys_do_not_cross_tenants(server: ServerProcess) -> None:
    root = make_token(server, "--scope", "operator", "--name", "root")
    assert httpx.post(server.url + "/v1/tenants", json={"name": "acme"}, headers=bearer(root)).status_code == 201
    runs = []
    for tenant in ("default", "acme"):
        made = httpx.post(
            server.url + "/v1/tokens", json={"tenant": tenant, "scope": "admin"}, headers=bearer(root)
        ).json()["token"]

        async def go(token: str = made, name: str = tenant) -> dict[str, Any]:
            async with Client(server.url, token=token) as c:
                await c.deploy(HELLO, env="prod")
                return await c.start_run("greet", {"name": name}, env="prod", idempotency_key="order-42")

        runs.append(asyncio.run(go()))
    # Same key, other input, other tenant: a new run each, no 409 telling one about the other.
    assert runs[0]["id"] != runs[1]["id"]
    assert [r["input"] for r in runs] == [{"name": "default"}, {"name": "acme"}]


def test_sign_in_never_redirects_off_site_and_the_cookie_is_not_an_api_credential(server: ServerProcess) -> None:
    token = make_token(server, "--scope", "admin", "--name", "admin")
    with httpx.Client(base_url=server.url) as browser:
        for target, expected in (
            ("//evil.example/x", "/"),
            ("https://evil.example", "/"),
            ("/\\evil", "/"),
            ("/envs", "/envs"),
        ):
            page = browser.get("/login")
            csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            answer = browser.post("/login", data={"token": token, "csrf": csrf, "next": target})
            assert answer.status_code == 303 and answer.headers["location"] == expected, target
        assert browser.cookies.get("tether_session")
        assert browser.get("/envs").status_code == 200
        # The session cookie signs in the dashboard only: the API wants the bearer token.
        assert browser.get("/v1/deployments").status_code == 401
        real = browser.cookies["tether_session"]
    # A cookie not signed by this server is refused, and so is a real session id re-signed.
    session_id = real.rsplit(".", 1)[0]
    for value in ("forged.signature", f"{session_id}.AAAA", real + "x"):
        forged = httpx.get(server.url + "/envs", headers={"cookie": f"tether_session={value}"})
        assert forged.status_code == 303 and forged.headers["location"].startswith("/login"), value
    assert httpx.get(server.url + "/envs", headers={"cookie": f"tether_session={real}"}).status_code == 200


def test_registered_endpoints_still_append_in_token_mode(
    server: ServerProcess, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    """The internal journal route takes the attempt token, not an API token: an endpoint that
    knows nothing of API tokens keeps working once the server has them."""
    hosted = Endpoint(make_app("hosted", APP.format(DOC="Doubles a number.")), tmp_path / "endpoint.log")
    hosted.start()
    try:
        token = make_token(server, "--scope", "admin", "--name", "ops")

        async def go() -> dict[str, Any]:
            async with Client(server.url, token=token) as c:
                await c.register(hosted.url, secret=SECRET, env="prod")
                run = await c.start_run("job", {"n": 21}, env="prod")
                deadline = time.monotonic() + 30
                while (await c.run(run["id"]))["status"] != "suspended":
                    assert time.monotonic() < deadline, "the run never reached its signal wait"
                    await asyncio.sleep(0.05)
                await c.signal(run["id"], "go", {"ok": True})
                return await c.result(run["id"], wait=30)

        done = asyncio.run(go())
        assert (done["status"], done["output"]) == ("completed", 42)
    finally:
        hosted.stop()
