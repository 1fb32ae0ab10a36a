"""The benchmark keeps working: its quick runs complete and report (tether W1, W2, W6; tether on one
and two PostgreSQL nodes), and the failover figures show a killed node loses nothing."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_of_tether_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "quick.md"
    done = subprocess.run(
        [
            str(ROOT / "bench" / "run"),
            "--quick",
            "--only",
            "tether",
            "--workloads",
            "1,2,6",
            "--reps",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = out.read_text()
    w1 = re.search(r"^\| tether \| ([\d.]+) \| ([\d.]+) \|", table, re.M)
    w2 = re.search(r"^\| tether \| ([\d.]+) \| (\d+) \|", table.split("## W2")[1], re.M)
    assert w1 and float(w1.group(1)) > 0, table
    assert w2 and int(w2.group(2)) > 0, table
    w6 = table.split("## W6")[1].split("\n## ")[0]
    # One run of the agent journals its 3 model calls and 2 tool steps, and both the runs on
    # tether and the plain loop without it report runs/s and the overhead per model call.
    assert "One run journals 5 entries: llm researcher, step lookup, llm researcher, step publish, llm researcher" in w6
    for system in ("tether", r"plain loop \(`openai` client, no tether\)"):
        row = re.search(
            rf"^\| {system} \| 32 \| ([\d.]+) \|(?:[^|]*\|){{3}} ([\d.]+) \| [\d.]+ \| \*\*(-?[\d.]+)\*\*", w6, re.M
        )
        assert row and float(row.group(1)) > 0 and float(row.group(2)) == 3.0, w6
    assert "tether's cost per model call beyond a plain agent loop" in w6
    assert "W6 agent: overhead per model call" in table.split("## Targets")[1]


def test_quick_benchmark_of_one_and_two_postgresql_nodes_reports_both_side_by_side(tmp_path: Path) -> None:
    """tether-pg2 (two nodes on one database, the load spread over both) beside tether-pg."""
    out = tmp_path / "pg.md"
    done = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--only", "tether-pg,tether-pg2", "--workloads", "1,2"]
        + ["--reps", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = out.read_text()
    w1, w2 = table.split("## W1")[1].split("## W2")[0], table.split("## W2")[1].split("\n## ")[0]
    for system in ("tether-pg", "tether-pg2"):
        assert re.search(rf"^\| {system} \| [\d.]+ \| [\d.]+ \|", w1, re.M), w1
        row = re.search(rf"^\| {system} \| [\d.]+ \| (\d+) \|", w2, re.M)
        assert row and int(row.group(1)) > 0, w2
    assert re.search(r"^\| tether-pg2 / tether-pg \| [\d.]+× \| [\d.]+× \|", w1, re.M), w1
    assert re.search(r"^\| tether-pg2 / tether-pg \| [\d.]+× \|", w2, re.M), w2
    assert "measure the cost of coordination" in w2
    rows = json.loads(out.with_suffix(".json").read_text())["results"]["w2"]
    # Both nodes' servers are measured, and both ran runs: each has its own workers.
    assert (rows["tether-pg"][0]["server_processes"], rows["tether-pg2"][0]["server_processes"]) == (1, 2)
    assert rows["tether-pg2"][0]["deployment_processes"] > rows["tether-pg"][0]["deployment_processes"]


def test_failover_figures_kill_a_node_and_lose_nothing(tmp_path: Path) -> None:
    """bench/failover, small: every run completes on the surviving node, no journaled step runs again."""
    out = tmp_path / "failover.md"
    done = subprocess.run(
        [str(ROOT / "bench" / "failover"), "--runs", "8", "--steps", "3", "--step-seconds", "0.5"]
        + ["--lease-timeout", "1.5", "--reps", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (rep,) = json.loads(out.with_suffix(".json").read_text())["reps"]
    assert rep["held_by_a"] == rep["runs"] == 8, rep
    assert rep["takeover_s"] is not None and rep["all_completed_s"] is not None, rep
    assert (rep["runs_lost"], rep["journaled_steps_executed_again"], rep["forked_journals"]) == (0, 0, 0), rep
    # Every run was mid-step at the kill: that step ran again on node b, and nothing else did.
    assert rep["steps_executed_again"] == rep["in_flight_steps_executed_again"] == rep["steps_in_flight_at_kill"], rep
    assert rep["steps_in_flight_at_kill"] >= 1 and rep["steps_never_executed"] == 0, rep
    table = out.read_text()
    assert re.search(r"^\| \*\*runs lost\*\* \(not completed\) \| \*\*0\*\* \|", table, re.M), table
    assert re.search(r"^\| \*\*time to take over\*\*.* \| \*\*[\d.]+\*\* \|", table, re.M), table
