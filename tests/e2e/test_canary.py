"""Canary: a weighted split is honoured over 1,000 runs; promote copies a pointer; history keeps both."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli
from tether.client import Client

APP = '''
import tether

app = tether.App("canary")

@app.workflow
async def hello(ctx: tether.Context) -> str:
    """Says which version answered."""
    return "{VERSION}"
'''


def test_split_is_honoured_and_promote_copies_the_pointer(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    v1 = server.call(lambda c: c.deploy(make_app("v1", APP.format(VERSION="v1")), env="prod"))
    v2 = server.call(lambda c: c.deploy(make_app("v2", APP.format(VERSION="v2"))))
    tether = CliRunner()
    out = tether.invoke(cli, ["--url", server.url, "env", "split", "prod", "v1=90", "v2=10", "--reason", "canary"])
    assert out.exit_code == 0 and "prod -> v1=90 v2=10" in out.stdout, out.output
    bad = tether.invoke(cli, ["--url", server.url, "env", "split", "prod", "v1=ninety"])
    assert bad.exit_code == 2 and "DEPLOYMENT=WEIGHT" in bad.output

    async def start_many(n: int) -> list[dict[str, object]]:
        gate = asyncio.Semaphore(32)
        async with Client(server.url) as client:

            async def one() -> dict[str, object]:
                async with gate:
                    return await client.start_run("hello", {}, env="prod")

            return await asyncio.gather(*(one() for _ in range(n)))

    runs = asyncio.run(start_many(1000))
    drawn = Counter(r["deployment_id"] for r in runs)
    assert set(drawn) == {v1["id"], v2["id"]}
    # 10% of 1,000 is 100 with a standard deviation of about 9.5: allow four of them.
    assert 62 <= drawn[v2["id"]] <= 138, drawn
    # Each run keeps what it drew and finishes there.
    sample = runs[:20]
    for run in sample:
        done = server.call(lambda c, r=run: c.result(str(r["id"]), wait=30))
        assert done["output"] == ("v1" if run["deployment_id"] == v1["id"] else "v2")

    out = tether.invoke(cli, ["--url", server.url, "env", "set", "staging", "v2"])
    assert out.exit_code == 0
    out = tether.invoke(cli, ["--url", server.url, "env", "promote", "staging", "prod"])
    assert out.exit_code == 0 and "prod -> v2 (from staging)" in out.stdout, out.output
    history = server.call(lambda c: c.env_history("prod"))
    assert [h["action"] for h in history] == ["promote", "set", "deploy"]
    assert history[0]["reason"] == "promoted from staging" and history[1]["reason"] == "canary"
    # Promoting from an environment that does not exist, or from itself, changes nothing.
    out = tether.invoke(cli, ["--url", server.url, "env", "promote", "nope", "prod"])
    assert out.exit_code == 3 and "no environment 'nope'" in out.stderr
    out = tether.invoke(cli, ["--url", server.url, "env", "promote", "prod", "prod"])
    assert out.exit_code == 2 and "cannot promote prod from itself" in out.stderr
    assert len(server.call(lambda c: c.env_history("prod"))) == 3
    assert server.call(lambda c: c.start_run("hello", {}, env="prod"))["deployment_id"] == v2["id"]
    rolled = server.call(lambda c: c.rollback_env("prod"))
    assert sorted(t["weight"] for t in rolled["targets"]) == [10, 90]
