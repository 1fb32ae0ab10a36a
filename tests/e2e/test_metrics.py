"""/metrics scrapes cleanly and counts what happened: runs, attempts, appends, steps, commits."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(server.url + "/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_runs_attempts_appends_steps_and_commits(server: ServerProcess, tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "hello")
    dep = server.call(lambda c: c.deploy(tmp_path / "hello", env="prod"))
    for name in ("ada", "alan", "grace"):
        server.call(lambda c, n=name: c.start_run("greet", {"name": n}, env="prod", wait=30))
    waiting = server.call(lambda c: c.start_run("onboard", {"name": "barbara"}, env="prod"))
    server.wait_for(waiting["id"], {"suspended"})

    seen = scrape(server)
    runs = {labels: value for (name, labels), value in seen.items() if name == "tether_runs"}
    v1 = (("deployment_id", dep["id"]), ("deployment_label", "v1"))
    assert runs[(*v1, ("status", "completed"), ("tenant", "default"))] == 3
    assert runs[(*v1, ("status", "suspended"), ("tenant", "default"))] == 1
    assert seen[("tether_attempts_total", (("outcome", "completed"),))] == 3
    assert seen[("tether_attempts_total", (("outcome", "suspended"),))] >= 1
    assert seen[("tether_step_duration_seconds_count", (("kind", "step"),))] == 4
    assert seen[("tether_journal_append_entries_count", ())] >= 1
    assert seen[("tether_journal_append_entries_sum", ())] >= 6  # 4 steps, 1 state entry, 1 signal wait
    assert seen[("tether_store_commit_transactions_count", ())] >= 1
    assert seen[("tether_workers_alive", ())] == 1
    assert seen[("tether_worker_cold_starts_total", ())] == 1
    assert seen[("tether_attempts_started_total", ())] == 4


FLAKY = """
import tether

app = tether.App("flaky")
calls = {"n": 0}


@app.function(retry=tether.RetryPolicy(max_attempts=5, initial_interval=0.01))
async def wobble() -> int:
    calls["n"] += 1
    if calls["n"] < 3:
        raise ConnectionError("the service blinked")
    return calls["n"]


@app.workflow
async def main(ctx: tether.Context) -> int:
    return await ctx.step(wobble)
"""


def test_metrics_count_step_retries(server: ServerProcess, make_app: Callable[..., Path]) -> None:
    server.call(lambda c: c.deploy(make_app("flaky", FLAKY), env="prod"))
    done = server.call(lambda c: c.start_run("main", {}, env="prod", wait=30))
    assert (done["status"], done["output"]) == ("completed", 3)
    seen = scrape(server)
    assert seen[("tether_step_retries_total", (("kind", "step"),))] == 2
    # The retries happened inside one attempt and left one entry.
    assert seen[("tether_attempts_total", (("outcome", "completed"),))] == 1
    assert [e["kind"] for e in server.call(lambda c: c.journal(done["id"]))] == ["step"]
