"""The benchmark keeps working: its quick tether-only run completes and reports both workloads."""

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
            "1,2",
            "--reps",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = out.read_text()
    w1 = re.search(r"^\| tether \| ([\d.]+) \| ([\d.]+) \|", table, re.M)
    w2 = re.search(r"^\| tether \| ([\d.]+) \| (\d+) \|", table.split("## W2")[1], re.M)
    assert w1 and float(w1.group(1)) > 0, table
    assert w2 and int(w2.group(2)) > 0, table
