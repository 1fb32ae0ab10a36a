"""The scripted model server's ``--delay``: every answer waits that long, concurrent requests
overlap, and each request's own time is reported (header and ``--timings`` file) so that a
benchmark can subtract it."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

DELAY = 0.3
REQUEST = {
    "model": "researcher",
    "messages": [{"role": "user", "content": 'Research {"topic": "tides"}'}],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a topic up.",
                "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}},
            },
        }
    ],
}


@pytest.fixture
def slow_model(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``python -m tether.testing.model_server --delay 0.3 --timings FILE``: its base URL and the file."""
    timings = tmp_path / "timings.jsonl"
    err = tmp_path / "model-server.log"
    argv = [sys.executable, "-m", "tether.testing.model_server", "--delay", str(DELAY), "--timings", str(timings)]
    with err.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while not (found := re.search(r"listening on (\S+)", err.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        yield found.group(1), timings
    finally:
        proc.terminate()
        proc.wait(10)


def test_every_answer_waits_the_delay_and_reports_its_own_time(slow_model: tuple[str, Path]) -> None:
    url, timings = slow_model

    async def one(http: httpx.AsyncClient) -> tuple[float, httpx.Response]:
        start = time.perf_counter()
        response = await http.post(f"{url}/chat/completions", json=REQUEST)
        return time.perf_counter() - start, response

    async def four() -> list[tuple[float, httpx.Response]]:
        async with httpx.AsyncClient(timeout=30) as http:
            return list(await asyncio.gather(*(one(http) for _ in range(4))))

    # asyncio may wake a sleeper up to a clock tick early: a lower bound with that much slack.
    at_least = DELAY - 0.005
    answers = asyncio.run(four())
    for took, response in answers:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
        assert took >= DELAY  # a lower bound: the delay was applied
        assert float(response.headers["x-model-seconds"]) >= at_least
    lines = [json.loads(line) for line in timings.read_text().splitlines()]
    assert len(lines) == 4 and all(line["seconds"] >= at_least for line in lines)
    # The requests were in the server together: each arrived before the first one was answered.
    first = min(lines, key=lambda line: line["received"])
    assert all(line["received"] < first["received"] + first["seconds"] for line in lines)


def test_a_negative_delay_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tether.testing.model_server", "--delay", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--delay must be 0 or more seconds" in done.stderr
