"""The benchmark keeps working: its quick tether-only run completes and reports W1, W2 and W6."""

from __future__ import annotations

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
