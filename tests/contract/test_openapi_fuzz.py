"""The API keeps its contract under fuzzing: schemathesis generates requests from the server's
own ``/openapi.json`` (valid and invalid ones) against a live server with the hello example
deployed and runs in flight, and every answer must

- never be a server error (5xx),
- conform to the document (status, content type, headers, body schema),
- leave every store table's row count unchanged when it refuses the request (4xx).

Path parameters draw real ids most of the time (runs, deployments, environments, workflows,
signals), so run-level routes are exercised beyond 404. The server runs in token mode with an
operator token, so the token routes cannot switch it out of token mode halfway.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from schemathesis import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.e2e.conftest import ServerProcess
from tether.client import Client
from tether.server.openapi import document

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "25"))
"""Examples per operation and generation mode (valid and invalid inputs)."""
LOOSE = {
    # Any bytes may be a bad bundle, any URL an unreachable endpoint: valid by shape, refused (400).
    "POST /v1/deployments",
    # The input and the payload are checked against the pinned deployment's own schemas (422),
    # which the document of the server cannot know.
    "POST /v1/envs/{env}/workflows/{name}/runs",
    "POST /v1/deployments/{dep}/workflows/{name}/runs",
    "POST /v1/runs/{id}/signals/{name}",
    # Promoting an environment from itself is refused (400): the document cannot tie a body
    # field to a path parameter.
    "POST /v1/envs/{env}/promote",
    # expires_in is at most ten years, a bound a pattern over "<n><unit>" cannot state.
    "POST /v1/tokens",
    # A query's input is checked against the pinned deployment's own schema (422), and the
    # query must be one that deployment declares (404).
    "POST /v1/runs/{id}/queries/{name}",
    # A cursor is opaque: text this server did not hand out as a next_cursor is refused (400).
    "GET /v1/runs",
    "GET /v1/runs/{id}/journal",
    "GET /v1/runs/{id}/signals",
    "GET /v1/deployments",
    "GET /v1/envs",
    "GET /v1/envs/{env}/history",
    "GET /v1/audit",
    "GET /v1/tokens",
    "GET /v1/tenants",
}
"""Operations whose valid-by-the-document requests the server may still refuse, and why: for
them the check that such requests are accepted is off (every other check stays on)."""
SETTLE = 30.0
"""At most this many seconds to wait, after a request that changed something, for the runs it
woke to settle (row counts unchanged over a few polls)."""


@dataclass
class Fuzz:
    """The live server under test and what the fuzzing saw."""

    server: ServerProcess
    token: str
    statuses: Counter[int] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    refused_unchanged: int = 0
    dirty: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(13))

    def draw(self) -> float:
        """A number in [0, 1) from a seeded generator (the same choices every run)."""
        return self.rng.random()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def counts(self) -> dict[str, int]:
        conn = sqlite3.connect(f"file:{self.server.data_dir / 'tether.db'}?mode=ro", uri=True, timeout=30)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        finally:
            conn.close()

    def settle(self) -> dict[str, int]:
        """Row counts once the work an accepted write started (a woken run) has stopped moving."""
        counts = self.counts()
        if not self.dirty:
            return counts
        deadline = time.monotonic() + SETTLE
        still = 0
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            again = self.counts()
            still = still + 1 if again == counts else 0
            counts = again
        self.dirty = False
        return counts


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(tmp / "data", tmp / "server.log")
    server.start()
    try:
        token = server.call(lambda c: c.create_token(scope="operator", name="fuzzer"))["token"]
        fuzz = Fuzz(server, token)
        yield fuzz
        print(
            f"\nfuzz figures: {sum(fuzz.statuses.values())} requests over {len(fuzz.operations)} operations; "
            f"statuses {dict(sorted(fuzz.statuses.items()))}; "
            f"5xx: {sum(n for s, n in fuzz.statuses.items() if s >= 500)}; "
            f"refusals with unchanged row counts: {fuzz.refused_unchanged}"
        )
        (tmp / "figures.json").write_text(
            json.dumps({"statuses": fuzz.statuses, "operations": fuzz.operations}, default=dict)
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def runs(fuzz: Fuzz) -> list[str]:
    """Run ids to draw ``{id}`` from: three runs waiting for a signal, one completed."""

    async def prepare() -> list[str]:
        async with Client(fuzz.server.url, token=fuzz.token) as client:
            await client.deploy(ROOT / "examples" / "hello", env="prod")
            waiting = [await client.start_run("onboard", {"name": f"n{i}"}, env="prod") for i in range(3)]
            done = await client.start_run("greet", {"name": "ada"}, env="prod", wait=30)
            return [r["id"] for r in waiting] + [done["id"]]

    ids = asyncio.run(prepare())
    for run_id in ids[:3]:
        _wait_suspended(fuzz.server, run_id, fuzz.token)
    return ids


def _wait_suspended(server: ServerProcess, run_id: str, token: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = httpx.get(f"{server.url}/v1/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}).json()
        if run["status"] == "suspended":
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never suspended")


# A bundle is bytes (a .tar.gz); send the generated bytes as they are.
schemathesis.serializer.alias("application/gzip", "application/octet-stream")

schema = schemathesis.openapi.from_dict(
    document(),
    config=schemathesis.Config.from_dict(
        {
            "dictionaries": {
                "deployments": {"values": ["v1"]},
                "envs": {"values": ["prod"]},
                "names": {"values": ["onboard", "greet", "approval"]},
                "waits": {"values": [0, 0.05]},
            },
            "parameters": {
                "path.dep": {"dictionary": "deployments", "probability": 0.7},
                "path.a": {"dictionary": "deployments", "probability": 0.7},
                "path.b": {"dictionary": "deployments", "probability": 0.7},
                "path.env": {"dictionary": "envs", "probability": 0.7},
                "path.name": {"dictionary": "names", "probability": 0.7},
                # A long wait would hold a request open for up to an hour.
                "query.wait": {"dictionary": "waits", "probability": 1.0},
            },
            # The same cases every run (a failure reproduces), and no health check that a busy
            # machine would fail: a slow generator is not a broken server.
            "generation": {"max-examples": EXAMPLES, "mode": "all", "deterministic": True, "database": "none"},
            "suppress-health-check": ["all"],
        }
    ),
)
"""Generated from the code's own document; the served one is the same (test_openapi.py)."""


@schema.parametrize()
def test_the_api_keeps_its_contract(case: Case, fuzz: Fuzz, runs: list[str]) -> None:
    path = case.path_parameters or {}
    if "id" in path and case.path.startswith("/v1/runs/") and fuzz.draw() < 0.7:
        # Real runs most of the time, so run-level routes get past their 404.
        path["id"] = runs[int(fuzz.draw() * len(runs))]
    before = fuzz.settle()
    response = case.call(base_url=fuzz.server.url, headers=fuzz.headers, timeout=60)
    fuzz.statuses[response.status_code] += 1
    fuzz.operations[f"{case.method} {case.path}"] += 1
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
    loose = [positive_data_acceptance] if f"{case.method} {case.path}" in LOOSE else None
    case.validate_response(response, headers=fuzz.headers, excluded_checks=loose)
    if 400 <= response.status_code < 500:
        after = fuzz.counts()
        assert after == before, f"{case.method} {case.formatted_path} answered {response.status_code} but changed rows"
        fuzz.refused_unchanged += 1
    elif case.method != "GET":
        fuzz.dirty = True
