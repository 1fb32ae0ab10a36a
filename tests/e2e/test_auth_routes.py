"""Every route of the app's own route table, called with no token, another tenant's tokens and
each scope, against a real server holding real objects in two tenants.

``EXPECT`` is this test's own reading of docs/http-api.md and docs/security.md, not the server's
policy table: a route the app serves without an entry here fails the test, so a new route is
covered as soon as it exists. The tenant ``acme`` owns the objects every path names; the tenant
``default`` must find none of them (404, byte for byte the answer for an id that does not
exist), and nothing of ``acme`` may show in anything it reads.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tether.client import Client
from tether.server.app import ServerOptions, create_app

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"
R, ING, A = "read", "ingress", "admin"
Values = dict[str, str]
Body = tuple[str, Any] | None  # ("json", value) | ("form", dict) | None


@dataclass(frozen=True)
class Spec:
    """What a route answers, by who calls it."""

    scopes: frozenset[str]
    """Scopes allowed (an operator token may do whatever an admin may, plus the operator routes)."""
    kind: str
    """``object`` (names an object of a tenant), ``collection`` (the caller's own tenant),
    ``operator`` (operator tokens only), ``public`` (no API token), ``attempt`` (attempt token)."""
    owner: frozenset[int] = frozenset({200})
    """Statuses the owner's allowed scopes get (the documented success, or a refusal the route
    documents for the object's state: proof the request got past authentication)."""
    body: Callable[[Values], Body] = lambda v: None
    query: Callable[[Values], dict[str, str]] = lambda v: {}
    fresh: str | None = None
    """``run`` or ``token``: each owner call acts on a new object (the call changes it)."""
    crosses: bool = False
    """An operator of another tenant may act here by design (tokens of any tenant)."""
    public_status: int = 0
    """For ``public`` and ``attempt`` routes: the status whoever calls gets."""


def _fill_in(value: Any, v: Values) -> Any:
    if isinstance(value, str):
        return value.format(**v)
    if isinstance(value, list):
        return [_fill_in(x, v) for x in value]
    if isinstance(value, dict):
        return {k: _fill_in(x, v) for k, x in value.items()}
    return value


def _json(value: Any) -> Callable[[Values], Body]:
    return lambda v: ("json", _fill_in(value, v))


def _form(value: dict[str, str]) -> Callable[[Values], Body]:
    return lambda v: ("form", {k: x.format(**v) for k, x in value.items()})


RUN_READ = frozenset({R, ING, A})
READ = frozenset({R, A})
INGRESS = frozenset({ING, A})
ADMIN = frozenset({A})
NOBODY: frozenset[str] = frozenset()

EXPECT: dict[tuple[str, str], Spec] = {
    ("GET", "/healthz"): Spec(NOBODY, "public", public_status=200),
    ("GET", "/metrics"): Spec(READ, "collection"),
    ("GET", "/openapi.json"): Spec(RUN_READ, "collection"),
    ("GET", "/api"): Spec(RUN_READ, "collection"),
    ("POST", "/v1/envs/{env}/workflows/{name}/runs"): Spec(INGRESS, "object", frozenset({201}), _json({"name": "ada"})),
    ("POST", "/v1/deployments/{dep}/workflows/{name}/runs"): Spec(
        INGRESS, "object", frozenset({201}), _json({"name": "ada"})
    ),
    ("GET", "/v1/runs/{id}"): Spec(RUN_READ, "object"),
    ("GET", "/v1/runs/{id}/result"): Spec(RUN_READ, "object"),
    ("GET", "/v1/runs/{id}/signals"): Spec(RUN_READ, "object"),
    ("POST", "/v1/runs/{id}/signals/{name}"): Spec(
        INGRESS, "object", frozenset({202}), _json({"ok": True}), fresh="run"
    ),
    ("GET", "/v1/runs/{id}/state"): Spec(RUN_READ, "object"),
    ("GET", "/v1/runs/{id}/journal"): Spec(RUN_READ, "object"),
    ("POST", "/v1/runs/{id}/queries/{name}"): Spec(RUN_READ, "object", body=_json({})),
    # A registration that cannot be read: 400 from the handler, past authentication.
    ("POST", "/v1/deployments"): Spec(
        ADMIN, "collection", frozenset({400}), _json({"url": "not-a-url", "secret": "s"})
    ),
    ("GET", "/v1/deployments"): Spec(READ, "collection"),
    ("GET", "/v1/deployments/{dep}"): Spec(READ, "object"),
    ("DELETE", "/v1/deployments/{dep}"): Spec(ADMIN, "object", frozenset({409})),
    ("GET", "/v1/deployments/{a}/diff/{b}"): Spec(READ, "object"),
    ("GET", "/v1/envs"): Spec(READ, "collection"),
    ("PUT", "/v1/envs/{env}"): Spec(ADMIN, "object", body=_json({"deployment": "{dep}"})),
    ("POST", "/v1/envs/{env}/promote"): Spec(ADMIN, "object", body=_json({"from": "{env2}"})),
    ("POST", "/v1/envs/{env}/rollback"): Spec(ADMIN, "object", frozenset({200, 409})),
    ("GET", "/v1/envs/{env}/history"): Spec(READ, "object"),
    ("GET", "/v1/runs"): Spec(READ, "collection"),
    ("POST", "/v1/runs/{id}/cancel"): Spec(ADMIN, "object", fresh="run"),
    ("POST", "/v1/runs/{id}/pause"): Spec(ADMIN, "object", fresh="run"),
    ("POST", "/v1/runs/{id}/resume"): Spec(ADMIN, "object", frozenset({409}), fresh="run"),
    ("POST", "/v1/runs/{id}/kill"): Spec(ADMIN, "object", fresh="run"),
    ("POST", "/v1/runs/{id}/restart"): Spec(ADMIN, "object", frozenset({201}), fresh="run"),
    ("POST", "/v1/runs/{id}/fork"): Spec(ADMIN, "object", frozenset({201}), _json({"from_entry": 0}), fresh="run"),
    ("POST", "/v1/runs/{id}/move"): Spec(
        ADMIN, "object", frozenset({200, 409}), _json({"to": "{shared}"}), fresh="run"
    ),
    ("POST", "/v1/deployments/{dep}/check"): Spec(ADMIN, "object", body=_json({"runs": ["{run}"]})),
    ("GET", "/v1/audit"): Spec(ADMIN, "collection"),
    ("GET", "/v1/whoami"): Spec(RUN_READ, "collection"),
    ("GET", "/v1/tokens"): Spec(ADMIN, "collection"),
    ("POST", "/v1/tokens"): Spec(
        ADMIN, "object", frozenset({201}), _json({"tenant": "{tenant}", "scope": "read"}), crosses=True
    ),
    ("DELETE", "/v1/tokens/{id}"): Spec(ADMIN, "object", fresh="token", crosses=True),
    ("GET", "/v1/tenants"): Spec(NOBODY, "operator"),
    ("POST", "/v1/tenants"): Spec(NOBODY, "operator", body=lambda v: ("json", {"name": f"t{time.time_ns()}"})),
    ("GET", "/v1/nodes"): Spec(NOBODY, "operator"),
    ("POST", "/v1/internal/runs/{id}/journal"): Spec(
        NOBODY,
        "attempt",
        body=_json({"attempt": 1, "token": "not-the-attempt-token", "entries": []}),
        public_status=409,
    ),
    ("GET", "/login"): Spec(NOBODY, "public", public_status=200),
    ("POST", "/login"): Spec(NOBODY, "public", body=_form({"token": "x"}), public_status=403),
    ("POST", "/logout"): Spec(NOBODY, "public", public_status=303),
    ("GET", "/static/{name}"): Spec(NOBODY, "public", public_status=200),
    ("GET", "/"): Spec(READ, "collection"),
    ("GET", "/deployments/{dep}"): Spec(READ, "object"),
    ("GET", "/diff"): Spec(READ, "object", query=lambda v: {"from": v["dep"], "to": v["shared_or_dep"]}),
    ("GET", "/envs"): Spec(READ, "collection"),
    ("GET", "/map"): Spec(READ, "collection"),
    ("GET", "/nodes"): Spec(NOBODY, "operator"),
    ("GET", "/runs"): Spec(READ, "collection"),
    ("GET", "/runs/{id}"): Spec(READ, "object"),
    ("GET", "/runs/{id}/move"): Spec(READ, "object", query=lambda v: {"to": v["shared_or_dep"]}),
    ("POST", "/envs"): Spec(ADMIN, "object", frozenset({303}), _form({"env": "{env}", "deployment": "{dep}"})),
    ("POST", "/envs/{env}/promote"): Spec(ADMIN, "object", frozenset({303}), _form({"from": "{env2}"})),
    ("POST", "/envs/{env}/rollback"): Spec(ADMIN, "object", frozenset({303, 409})),
    ("POST", "/deployments/{dep}/remove"): Spec(ADMIN, "object", frozenset({409})),
    ("POST", "/runs/{id}/signal"): Spec(
        INGRESS, "object", frozenset({303}), _form({"name": "approval", "payload": '{{"ok": true}}'}), fresh="run"
    ),
    ("POST", "/runs/{id}/cancel"): Spec(ADMIN, "object", frozenset({303}), fresh="run"),
    ("POST", "/runs/{id}/pause"): Spec(ADMIN, "object", frozenset({303}), fresh="run"),
    ("POST", "/runs/{id}/resume"): Spec(ADMIN, "object", frozenset({409}), fresh="run"),
    ("POST", "/runs/{id}/kill"): Spec(ADMIN, "object", frozenset({303}), fresh="run"),
    ("POST", "/runs/{id}/restart"): Spec(ADMIN, "object", frozenset({303}), fresh="run"),
    ("POST", "/runs/{id}/move"): Spec(ADMIN, "object", frozenset({303, 409}), _form({"to": "{shared}"}), fresh="run"),
}


def served_routes() -> list[tuple[str, str]]:
    """Every (method, path) the app serves, from its own route table."""
    app = create_app(ServerOptions(data_dir=Path("/nonexistent"), runtime_url="http://127.0.0.1:1"))
    found = []
    for route in app.routes:
        for method in sorted((getattr(route, "methods", None) or set()) - {"HEAD"}):
            found.append((method, str(getattr(route, "path", ""))))
    return found


ROUTES = served_routes()


def test_every_served_route_has_an_expectation() -> None:
    missing = [r for r in ROUTES if r not in EXPECT]
    assert not missing, f"routes with no expectation in EXPECT (add one): {missing}"
    gone = [r for r in EXPECT if r not in ROUTES]
    assert not gone, f"expectations for routes the app no longer serves: {gone}"


@dataclass
class World:
    """The server and the two tenants' tokens and objects."""

    server: ServerProcess
    tokens: dict[tuple[str, str], str]
    """(tenant, scope) -> token text; ("default", "operator") is the operator."""
    acme: Values
    """acme's objects, by the names paths and bodies use."""
    fake: Values
    """Ids of the same shapes that exist nowhere."""
    markers: set[str] = field(default_factory=set)
    """Strings that only acme's objects contain."""
    default_run: str = ""

    def client(self, tenant: str, scope: str) -> Client:
        return Client(self.server.url, token=self.tokens[(tenant, scope)])

    def call(self, tenant: str, scope: str, fn: Callable[[Client], Any]) -> Any:
        async def go() -> Any:
            async with self.client(tenant, scope) as c:
                return await fn(c)

        return asyncio.run(go())

    def fresh_run(self) -> str:
        run = self.call("acme", A, lambda c: c.start_run("onboard", {"name": "ada"}, env="acme-prod"))
        self.markers.add(run["id"])
        return str(run["id"])

    def fresh_token(self) -> str:
        made = self.call("acme", A, lambda c: c.create_token(scope="read", name=f"spare-{time.time_ns()}"))
        self.markers.add(made["name"])
        return str(made["id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("auth-routes")
    server = ServerProcess(tmp / "data", tmp / "server.log")
    server.start()
    try:
        yield _build(server, tmp)
    finally:
        server.stop()


def _build(server: ServerProcess, tmp: Path) -> World:
    async def bootstrap() -> dict[tuple[str, str], str]:
        # Local mode (no token yet): the loopback caller may make the first, operator, token.
        async with Client(server.url) as local:
            root = (await local.create_token(scope="operator", name="root"))["token"]
        tokens = {("default", "operator"): root}
        async with Client(server.url, token=root) as op:
            await op.create_tenant("acme")
            for tenant in ("default", "acme"):
                for scope in (R, ING, A):
                    made = await op.create_token(scope=scope, tenant=tenant, name=f"{tenant}-{scope}-tok")
                    tokens[(tenant, scope)] = made["token"]
        return tokens

    tokens = asyncio.run(bootstrap())
    acme_v2 = tmp / "acme-app"
    shutil.copytree(HELLO, acme_v2)
    with (acme_v2 / "hello.py").open("a") as f:
        f.write('\n\n@app.function\nasync def acme_only(x: int) -> int:\n    """Only in acme."""\n    return x\n')
        f.write("\n\n@app.query(onboard)\ndef stage(ctx: tether.QueryContext) -> str | None:\n")
        f.write('    return ctx.state.get("stage")\n')

    async def objects() -> tuple[Values, str]:
        async with Client(server.url, token=tokens[("default", A)]) as d:
            await d.deploy(HELLO, env="prod")
            default_run = (await d.start_run("onboard", {"name": "bob"}, env="prod"))["id"]
        async with Client(server.url, token=tokens[("acme", A)]) as a:
            shared = (await a.deploy(HELLO, env="acme-prod"))["id"]
            own = (await a.deploy(acme_v2, env="acme-prod"))["id"]
            run = (await a.start_run("onboard", {"name": "carol"}, env="acme-prod"))["id"]
            on_shared = (await a.start_run("onboard", {"name": "dan"}, deployment=shared))["id"]
            await a.set_env("acme-staging", own)
            spare = (await a.create_token(scope="read", name="acme-spare"))["id"]
        values = {
            "run": run,
            "run_on_shared": on_shared,
            "dep": own,
            "shared": shared,
            "shared_or_dep": own,
            "env": "acme-prod",
            "env2": "acme-staging",
            "token_id": spare,
            "tenant": "acme",
        }
        return values, default_run

    acme, default_run = asyncio.run(objects())
    fake = {
        "run": "run_" + "0" * 20,
        "run_on_shared": "run_" + "1" * 20,
        "dep": "dep_" + "0" * 12,
        "shared": "dep_" + "1" * 12,
        "shared_or_dep": "dep_" + "0" * 12,
        "env": "nope-prod",
        "env2": "nope-staging",
        "token_id": "0" * 12,
        "tenant": "nope",
    }
    markers = {"acme", acme["run"], acme["run_on_shared"], acme["dep"], acme["token_id"], "acme_only"}
    return World(server, tokens, acme, fake, markers, default_run)


def _fill(path: str, v: Values) -> str:
    if path.startswith("/v1/tokens/"):
        path = path.replace("{id}", v["token_id"])
    if "/workflows/{name}" in path:
        path = path.replace("{name}", "onboard")
    if "/signals/{name}" in path:
        path = path.replace("{name}", "approval")
    if "/queries/{name}" in path:
        path = path.replace("{name}", "stage")
    return (
        path.replace("{id}", v["run"])
        .replace("{dep}", v["dep"])
        .replace("{a}", v["dep"])
        .replace("{b}", v["dep"])
        .replace("{env}", v["env"])
        .replace("{name}", "dashboard.css")
    )


def _send(world: World, method: str, path: str, spec: Spec, v: Values, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = spec.body(v)
    kwargs: dict[str, Any] = {}
    if body is not None and body[0] == "json":
        kwargs["json"] = body[1]
    elif body is not None:
        kwargs["content"] = urllib.parse.urlencode(body[1])
        headers["content-type"] = "application/x-www-form-urlencoded"
    url = world.server.url + _fill(path, v)
    return httpx.request(method, url, params=spec.query(v), headers=headers, timeout=60, **kwargs)


def _masked(text: str, v: Values) -> str:
    """``text`` with the ids a request named replaced (an error may echo what it was asked)."""
    for key in v:
        text = text.replace(v[key], "<X>")
    return text


def _is_api(path: str) -> bool:
    return path.startswith("/v1/") or path in ("/metrics", "/openapi.json")


def _allowed(spec: Spec, scope: str) -> bool:
    if scope == "operator":
        return spec.kind == "operator" or A in spec.scopes
    return scope in spec.scopes


def _snapshot(world: World) -> Any:
    """Everything acme has, as its admin reads it (runs, deployments, environments, tokens, audit)."""

    async def read(c: Client) -> Any:
        runs = sorted((r["id"], r["status"], r["deployment_id"]) for r in await c.runs(limit=10_000))
        deps = [(d["id"], d["status"], d["in_flight"]) for d in await c.deployments()]
        envs = [(e["name"], e["targets"]) for e in await c.envs()]
        tokens = [(t["id"], t["revoked_at"]) for t in await c.tokens()]
        return runs, deps, envs, tokens, len(await c.audit(limit=10_000))

    return world.call("acme", A, read)


def test_no_token_is_401_on_every_guarded_route(world: World) -> None:
    failures = []
    for method, path in ROUTES:
        spec = EXPECT[(method, path)]
        answer = _send(world, method, path, spec, world.acme, None)
        text = _masked(answer.text, world.acme)
        if spec.kind in ("public", "attempt"):
            expected = spec.public_status
        if spec.kind == "attempt":
            # Not even an existence oracle: a real run id answers as one that exists nowhere.
            twin = _send(world, method, path, spec, world.fake, None)
            if (answer.status_code, text) != (twin.status_code, _masked(twin.text, world.fake)):
                failures.append(f"{method} {path}: a real id answers otherwise than an unknown one")
        if spec.kind in ("public", "attempt"):
            pass
        elif _is_api(path):
            expected = 401
            if answer.status_code == 401 and answer.json()["error"]["code"] != "unauthenticated":
                failures.append(f"{method} {path}: 401 without the code unauthenticated: {answer.text}")
        elif method == "GET":
            expected = 303
            if not answer.headers.get("location", "").startswith("/login?next="):
                failures.append(f"{method} {path}: a page without a session must lead to /login")
        else:
            expected = 401
        if answer.status_code != expected:
            failures.append(f"{method} {path}: {answer.status_code}, expected {expected}: {answer.text[:200]}")
        if any(m in text for m in world.markers):
            failures.append(f"{method} {path}: an unauthenticated answer shows acme's objects")
    assert not failures, "\n".join(failures)


def test_every_scope_gets_exactly_its_routes(world: World) -> None:
    """A scope too small is 403 (whatever the object), for both tenants' tokens."""
    failures = []
    for method, path in ROUTES:
        spec = EXPECT[(method, path)]
        if spec.kind in ("public", "attempt"):
            for scope in (R, ING, A):
                answer = _send(world, method, path, spec, world.acme, world.tokens[("acme", scope)])
                if answer.status_code != spec.public_status:
                    failures.append(f"{method} {path} with {scope}: {answer.status_code}, not {spec.public_status}")
            continue
        for (tenant, scope), token in world.tokens.items():
            if _allowed(spec, scope):
                continue
            answer = _send(world, method, path, spec, world.acme, token)
            if answer.status_code != 403:
                failures.append(f"{method} {path} with {tenant} {scope}: {answer.status_code}, expected 403")
            elif _is_api(path) and answer.json()["error"]["code"] != "forbidden":
                failures.append(f"{method} {path}: 403 without the code forbidden")
    assert not failures, "\n".join(failures)


def test_another_tenants_objects_answer_404_and_nothing_leaks(world: World) -> None:
    before = _snapshot(world)
    failures = []
    for method, path in ROUTES:
        spec = EXPECT[(method, path)]
        if spec.kind not in ("object", "collection"):
            continue
        for scope in (R, ING, A, "operator"):
            if not _allowed(spec, scope):
                continue
            if spec.crosses and scope == "operator":
                continue  # an operator manages every tenant's tokens: test_operator_crosses_tenants
            token = world.tokens[("default", scope)]
            answer = _send(world, method, path, spec, world.acme, token)
            text = answer.text
            where = f"{method} {path} with default's {scope} token"
            if spec.kind == "object":
                # Exactly what an id that exists nowhere gets, once the ids themselves are masked.
                twin = _send(world, method, path, spec, world.fake, token)
                if answer.status_code != 404:
                    failures.append(f"{where}: {answer.status_code}, expected 404: {text[:300]}")
                masked, twin_masked = _masked(text, world.acme), _masked(twin.text, world.fake)
                if (answer.status_code, masked) != (twin.status_code, twin_masked):
                    failures.append(f"{where}: the answer differs from an unknown id's:\n{text}\n{twin.text}")
            else:
                if path == "/metrics" and scope == "operator":
                    continue  # the whole server's metrics are the operator's by design
                if answer.status_code not in spec.owner:
                    failures.append(f"{where}: {answer.status_code}, expected {sorted(spec.owner)}: {text[:300]}")
                leaked = sorted(m for m in world.markers if m in text)
                if leaked:
                    failures.append(f"{where}: shows acme's {leaked}")
    assert not failures, "\n".join(failures)
    assert _snapshot(world) == before, "another tenant's requests changed acme's objects"


def test_counts_of_a_shared_deployment_never_mix_tenants(world: World) -> None:
    """default and acme both deployed examples/hello: the same content, so the same deployment id.
    Each tenant sees only its own runs on it, in lists, descriptions and metrics."""
    shared = world.acme["shared"]
    default_side = world.call("default", R, lambda c: c.deployment(shared))
    default_runs = world.call("default", R, lambda c: c.runs(deployment=shared, limit=10_000))
    assert [r["id"] for r in default_runs] == [world.default_run]
    assert default_side["in_flight"] == 1
    acme_runs = world.call("acme", R, lambda c: c.runs(deployment=shared, limit=10_000))
    assert world.acme["run_on_shared"] in [r["id"] for r in acme_runs]
    metrics = httpx.get(
        world.server.url + "/metrics", headers={"authorization": f"Bearer {world.tokens[('default', R)]}"}
    ).text
    series = [line for line in metrics.splitlines() if line.startswith("tether_runs{")]
    assert series, metrics
    assert all('tenant="default"' in line for line in series), series
    assert sum(float(line.rsplit(" ", 1)[1]) for line in series) == 1.0
    everything = httpx.get(
        world.server.url + "/metrics", headers={"authorization": f"Bearer {world.tokens[('default', 'operator')]}"}
    ).text
    assert any(f'deployment_id="{shared}"' in line and 'tenant="acme"' in line for line in everything.splitlines())
    assert "tether_workers_alive" in everything and "tether_workers_alive" not in metrics


def test_operator_crosses_tenants_only_where_documented(world: World) -> None:
    op = world.tokens[("default", "operator")]
    made = httpx.post(
        world.server.url + "/v1/tokens",
        json={"tenant": "acme", "scope": "read", "name": "from-operator"},
        headers={"authorization": f"Bearer {op}"},
    )
    assert made.status_code == 201, made.text
    world.markers.add("from-operator")
    assert made.json()["tenant"] == "acme"
    revoked = httpx.delete(
        world.server.url + f"/v1/tokens/{made.json()['id']}", headers={"authorization": f"Bearer {op}"}
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    # On tenant objects an operator acts in its own tenant: acme's run does not exist there.
    run = httpx.get(world.server.url + f"/v1/runs/{world.acme['run']}", headers={"authorization": f"Bearer {op}"})
    assert run.status_code == 404
    # An admin may not mint operator tokens, nor tokens of another tenant (which it cannot see).
    admin = {"authorization": f"Bearer {world.tokens[('acme', A)]}"}
    up = httpx.post(world.server.url + "/v1/tokens", json={"scope": "operator"}, headers=admin)
    assert up.status_code == 403 and up.json()["error"]["code"] == "forbidden"
    other = httpx.post(world.server.url + "/v1/tokens", json={"scope": "read", "tenant": "default"}, headers=admin)
    unknown = httpx.post(world.server.url + "/v1/tokens", json={"scope": "read", "tenant": "nope"}, headers=admin)
    assert other.status_code == unknown.status_code == 404
    assert other.text.replace("default", "<X>") == unknown.text.replace("nope", "<X>")


def test_the_owner_reaches_every_route_its_scope_allows(world: World) -> None:
    """The positive control: acme's own tokens get the documented answer, so the 404s above come
    from tenant scoping, not from a broken route. (Runs last: it changes acme's objects.)"""
    failures = []
    for method, path in ROUTES:
        spec = EXPECT[(method, path)]
        if spec.kind not in ("object", "collection"):
            continue
        for scope in (R, ING, A):
            if not _allowed(spec, scope):
                continue
            values = dict(world.acme)
            if spec.fresh == "run":
                values["run"] = world.fresh_run()
            elif spec.fresh == "token":
                values["token_id"] = world.fresh_token()
            answer = _send(world, method, path, spec, values, world.tokens[("acme", scope)])
            if answer.status_code not in spec.owner:
                failures.append(
                    f"{method} {path} with acme's {scope} token: {answer.status_code}, "
                    f"expected {sorted(spec.owner)}: {answer.text[:300]}"
                )
    assert not failures, "\n".join(failures)
