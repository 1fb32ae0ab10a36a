"""The results table: machine, versions, durability, one section per workload, targets."""

from __future__ import annotations

import math
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .paths import PEER_PYTHON, PROJECT, RESTATE_CLI, RESTATE_SERVER
from .systems import command_output

LINEAR_MAX_EXPONENT = 1.15
TWO_NODES_NOTE = (
    "On this machine both nodes share the same cores with PostgreSQL and the load generator, so two nodes "
    "measure the cost of coordination (leases renewed by heartbeat, `FOR UPDATE SKIP LOCKED` claims, "
    "`NOTIFY` wake-ups across nodes), not scale-out capacity: that needs a host per node."
)


def med(values: list[float], fmt: str = "{:.1f}") -> str:
    """``median (min..max)``, or the single value."""
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (other load on the machine)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    disk = command_output(["df", "-h", "--output=fstype,source", "/tmp"]).splitlines()[-1:]
    return {
        "host": socket.gethostname() or "local",
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "cpu": cpu,
        "kernel": platform.release(),
        "tmp fs": " ".join(disk[0].split()) if disk else "?",
        "loadavg at start": Path("/proc/loadavg").read_text().split(" ")[0],
    }


def versions() -> dict[str, str]:
    import httpx

    import tether

    sha = command_output(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(PROJECT), "status", "--porcelain", "--", "src"])
    peers = command_output(
        [
            str(PEER_PYTHON),
            "-c",
            "import sys; from importlib.metadata import version as v; "
            'print(f\'dbos {v("dbos")}, SQLAlchemy {v("sqlalchemy")}, restate-sdk {v("restate-sdk")}, '
            'hypercorn {v("hypercorn")}, httpx {v("httpx")}, Python {sys.version.split()[0]}\')',
        ]
    )
    return {
        "tether": f"{tether.__version__} (git {sha}{' + uncommitted changes in src/' if dirty else ''})",
        "bench client": f"Python {sys.version.split()[0]}, httpx {httpx.__version__}",
        "restate-server": command_output([str(RESTATE_SERVER), "--version"]),
        "restate CLI": command_output([str(RESTATE_CLI), "--version"]),
        "peers venv": peers,
        "node": command_output(["node", "--version"]),
    }


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def check(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def render(run: dict[str, Any]) -> str:
    """The markdown report of one ``bench/run``."""
    cfg = run["config"]
    res = run["results"]
    out: list[str] = []
    add = out.append
    add(f"# tether vs Restate vs DBOS — {run['date']} on {run['machine']['host']}")
    add("")
    if cfg["quick"]:
        add("**Quick smoke run (small sizes): not a benchmark result.**")
        add("")
    add(
        f"Command: `{cfg['command']}` · repetitions: {cfg['reps']} · values are the median "
        "(min..max) over the repetitions · wall time of the whole run: "
        f"{run['elapsed_s'] / 60:.1f} min"
    )
    add("")
    add("| machine | |")
    add("| --- | --- |")
    for key, value in run["machine"].items():
        add(f"| {key} | {value} |")
    for key, value in run["versions"].items():
        add(f"| {key} | {value} |")
    add(f"| date | {run['started']} |")
    add("")
    add("Durability (equal by construction):")
    add("")
    add("- **tether**: `tether server --synchronous FULL`: SQLite WAL, fsync on every group commit.")
    add(
        "- **Restate**: restate-server defaults (replicated loglet on the node's own log-server, "
        "RocksDB WAL fsync on: `rocksdb-disable-wal-fsync = false`); telemetry off."
    )
    dbos_dur = run.get("dbos_durability")
    dur = (
        f"journal_mode={dbos_dur['journal_mode']}, synchronous={dbos_dur['synchronous']} "
        f"(SQLite {dbos_dur['sqlite']}; DBOS sets no `PRAGMA synchronous`, so SQLite's default FULL)"
        if dbos_dur
        else "not run"
    )
    add(f"- **DBOS** (`dbos-sqlite`): SQLite system database, {dur}.")
    if "tether-pg" in run.get("call_notes", {}):
        add(
            "- **tether-pg**: `tether server --store postgresql://…` on the cluster `scripts/postgres` starts "
            "(PostgreSQL 15 defaults: `fsync=on`, `synchronous_commit=on`; one node, group commit = one "
            "transaction per batch)."
        )
    if "tether-pg2" in run.get("call_notes", {}):
        add(
            "- **tether-pg2**: two nodes, `tether server --store postgresql://… --node-id a` and `… --node-id b` "
            "(own data dirs and ports), on one fresh database of the same cluster; the app deployed once, the "
            "calls alternating between the nodes. " + TWO_NODES_NOTE
        )
    pg_dur = run.get("dbos_pg_durability")
    if pg_dur:
        add(
            f"- **dbos-pg**: DBOS with its system database on the same PostgreSQL {pg_dur['postgresql']} "
            f"(`fsync={pg_dur['fsync']}`, `synchronous_commit={pg_dur['synchronous_commit']}`)."
        )
    else:
        add("- **dbos-pg**: not run.")
    add("")
    if run["background"]:
        add(
            "Other load on the machine, CPU busy over 1 s before each system: "
            + ", ".join(f"{k} {v * 100:.0f}%" for k, v in run["background"].items())
            + "."
        )
        add("")

    # W1
    if "w1" in res:
        add(f"## W1 latency: 1-step workflow, {cfg['w1_calls']} sequential start→result calls")
        add("")
        add("| system | p50 ms | p99 ms | mean ms | how it is called |")
        add("| --- | --- | --- | --- | --- |")
        for system, rows in res["w1"].items():
            if isinstance(rows, str):
                add(f"| {system} | error: {rows} | | | |")
                continue
            add(
                f"| {system} | {med([r['p50_ms'] for r in rows], '{:.2f}')} | "
                f"{med([r['p99_ms'] for r in rows], '{:.2f}')} | {med([r['mean_ms'] for r in rows], '{:.2f}')} | "
                f"{run['call_notes'].get(system, '')} |"
            )
        ratios = _all_ratios(res["w1"], ["p50_ms", "p99_ms"])
        if ratios:
            add("")
            add("| ratio | p50 | p99 |")
            add("| --- | --- | --- |")
            for (base, peer), values in ratios.items():
                add(f"| {base} / {peer} | {values['p50_ms']} | {values['p99_ms']} |")
        add("")
        add(f"Each system gets {cfg['w1_warmup']} warm-up calls first (not counted).")
        add("")

    # W2
    if "w2" in res:
        add(f"## W2 throughput: {cfg['w2_runs']} runs × {cfg['w2_steps']} steps, {cfg['w2_concurrency']} in flight")
        add("")
        add(
            "| system | runs/s | steps/s | server CPU s / 1k runs | deployment CPU s / 1k runs "
            "| server + deployment | client CPU s / 1k runs | wall s |"
        )
        add("| --- | --- | --- | --- | --- | --- | --- | --- |")
        notes: list[str] = []
        for system, rows in res["w2"].items():
            if isinstance(rows, str):
                add(f"| {system} | error: {rows} | | | | | | |")
                continue
            for row in rows:
                row["cpu_total_per_1k"] = row.get("cpu_server_per_1k", 0.0) + row.get("cpu_deployment_per_1k", 0.0)
            add(
                f"| {system} | {med([r['runs_per_s'] for r in rows])} "
                f"| {med([r['steps_per_s'] for r in rows], '{:.0f}')} "
                f"| {_cpu(rows, 'cpu_server_per_1k')} | {_cpu(rows, 'cpu_deployment_per_1k')} "
                f"| {_cpu(rows, 'cpu_total_per_1k')} "
                f"| {_cpu(rows, 'cpu_client_per_1k')} | {med([r['wall_s'] for r in rows])} |"
            )
            for row in rows:
                notes.extend(f"{system}: {n}" for n in row.get("notes", []))
            foreign = [r["foreign_cpu_s"] for r in rows if "foreign_cpu_s" in r]
            if foreign:
                busy = [r["machine_busy"] * 100 for r in rows]
                notes.append(
                    f"{system}: machine CPU busy during the timed runs {med(busy, '{:.0f}')} %; CPU seconds "
                    f"used by processes other than the measured ones meanwhile: {med(foreign, '{:.2f}')}"
                )
        ratios = _all_ratios(res["w2"], ["steps_per_s", "cpu_server_per_1k", "cpu_total_per_1k"])
        if ratios:
            add("")
            add(
                "| ratio | steps/s (higher is better) | server CPU per run (lower is better) "
                "| server + deployment CPU per run |"
            )
            add("| --- | --- | --- | --- |")
            for (base, peer), values in ratios.items():
                server = values["cpu_server_per_1k"] if not peer.startswith("dbos") else "– (one process)"
                add(f"| {base} / {peer} | {values['steps_per_s']} | {server} | {values['cpu_total_per_1k']} |")
        add("")
        add(
            "CPU is utime+stime from `/proc/<pid>/stat`, read before and after the timed runs. "
            "tether: server = the `tether server` process, deployment = its worker processes (children "
            "whose command line has `tether._worker`). Restate: server = `restate-server`, deployment "
            "= the hypercorn SDK endpoint. DBOS is a library: one process holds the workflow code, the "
            "system-database client and the driving loop, shown as *server* (its deployment and client "
            "columns are part of it). Client = this bench process (the HTTP load generator), for "
            f"tether and Restate. Each system gets {cfg['w2_warmup']} warm-up runs first."
        )
        if isinstance(res["w2"].get("tether-pg2"), list):
            add(
                "tether-pg2: server = both `tether server` processes, deployment = both nodes' workers. "
                + TWO_NODES_NOTE
            )
        for note in notes:
            add(f"- {note}")
        add("")

    # W3
    if "w3" in res:
        add("## W3 long journal (tether): time from the signal to the next new step, warm worker")
        add("")
        w3 = res["w3"]
        if isinstance(w3, str):
            add(f"error: {w3}")
        else:
            add("| journal entries N | time to next step ms | replayed entries/s (N / time) |")
            add("| --- | --- | --- |")
            medians: dict[int, float] = {}
            for n_text, times in w3["warm_s"].items():
                n = int(n_text)
                medians[n] = statistics.median(times)
                add(f"| {n:,} | {med([t * 1000 for t in times])} | {med([n / t for t in times], '{:,.0f}')} |")
            add("")
            add(_linearity(medians))
            add(
                f"The runs were built first ({w3['total_steps']:,} steps over all of them, concurrently, in "
                f"{w3['build_s']:.1f} s). Before each signal a tiny other run on the same deployment makes sure "
                "the worker is up, so this is replay (plus one step and the run's completion), not a cold start; "
                "W5 is the cold case."
            )
        add("")

    # W4
    if "w4" in res:
        add("## W4 idle scale (tether, `--worker-idle-timeout 3`)")
        add("")
        w4 = res["w4"]
        if isinstance(w4, str):
            add(f"error: {w4}")
        else:
            first = w4[0]
            add(
                f"{first['runs']:,} runs suspended on a signal across {first['deployments']} deployments "
                f"(distinct bundles).{' ' + cfg['w4_note'] if cfg.get('w4_note') else ''}"
            )
            add("")
            add("| measure | value |")
            add("| --- | --- |")
            rows = [
                (
                    "server RSS before the runs (deployments made, workers idle) MiB",
                    "rss_before_kib",
                    1 / 1024,
                    "{:,.1f}",
                ),
                ("server RSS with all runs suspended and workers idle MiB", "rss_after_kib", 1 / 1024, "{:,.1f}"),
                ("**RSS growth per suspended run KiB**", "kib_per_run", 1, "{:,.2f}"),
                ("**worker processes alive while idle**", "workers_idle", 1, "{:.0f}"),
                ("peak worker processes while the runs started", "peak_workers", 1, "{:.0f}"),
                ("seconds to deploy the bundles (4 at a time)", "deploy_s", 1, "{:,.1f}"),
                ("seconds to start all runs (64 in flight)", "start_s", 1, "{:,.1f}"),
                ("seconds from the first start until all are suspended", "suspend_s", 1, "{:,.1f}"),
                ("seconds until the workers idled out after that", "idle_wait_s", 1, "{:,.1f}"),
                ("seconds to send all signals (64 in flight)", "signal_s", 1, "{:,.1f}"),
                ("**seconds from the first signal until all runs completed**", "wake_all_s", 1, "{:,.1f}"),
                ("worker cold starts while waking them", "cold_starts", 1, "{:.0f}"),
            ]
            for label, key, scale, fmt in rows:
                add(f"| {label} | {med([r[key] * scale for r in w4], fmt)} |")
            add(f"| runs completed per second while waking | {med([r['runs'] / r['wake_all_s'] for r in w4])} |")
        add("")

    # W5
    if "w5" in res:
        add("## W5 cold wake (tether, `--worker-idle-timeout 3`)")
        add("")
        w5 = res["w5"]
        if isinstance(w5, str):
            add(f"error: {w5}")
        else:
            add(
                f"Signal a run whose deployment's worker has exited: {med([t * 1000 for t in w5], '{:.0f}')} ms "
                f"to its next step's completion (over {len(w5)} wakes; each waits for the worker to exit first)."
            )
        locked = res.get("w5_locked")
        if isinstance(locked, list):
            add("")
            add(
                f"The same on a deployment with its own environment (`requirements.txt`, built with uv): "
                f"{med([t * 1000 for t in locked], '{:.0f}')} ms (over {len(locked)} wakes)."
            )
        deploys = res.get("w5_deploy")
        if isinstance(deploys, dict):
            add("")
            add("Deploy time (`Client.deploy` of new content, start to answer):")
            add("")
            add("| bundle | seconds |")
            add("| --- | --- |")
            for key, label in (
                ("no_lock", "no lock: the server's environment, fingerprinted"),
                ("lock_new_env", "`requirements.txt`, environment built now (uv's cache warm)"),
                ("lock_reused_env", "`requirements.txt`, environment shared with an earlier deployment"),
            ):
                add(f"| {label} | {med(deploys[key], '{:.2f}')} |")
        add("")

    # W6
    if "w6" in res:
        _w6(res["w6"], cfg, add)

    add("## Targets (issues 3, 12 and 15)")
    add("")
    add("| target | achieved | |")
    add("| --- | --- | --- |")
    for target, achieved, ok in _targets(res):
        add(f"| {target} | {achieved} | {check(ok)} |")
    add("")
    if run["errors"]:
        add("## Errors")
        add("")
        for err in run["errors"]:
            add(f"- {err}")
        add("")
    return "\n".join(out)


def _cpu(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if key in r]
    return med(values, "{:.2f}") if values else "–"


def _w_ratios(section: dict[str, Any], keys: list[str], base: str = "tether") -> dict[str, dict[str, str]]:
    """``base`` / every other system of the section, per key (medians)."""
    ours = section.get(base)
    if not isinstance(ours, list):
        return {}
    out = {}
    for peer, rows in section.items():
        if peer == base or isinstance(rows, str):
            continue
        out[peer] = {
            key: ratio(median([r[key] for r in ours if key in r]), median([r[key] for r in rows if key in r]))
            for key in keys
        }
    return out


# The ratio rows of a W1/W2 table: tether (SQLite) against every other system, then tether on
# PostgreSQL (two nodes, then one) against the systems it is compared with there.
RATIO_BASES = {
    "tether": None,
    "tether-pg2": ("tether-pg", "dbos-pg", "restate"),
    "tether-pg": ("dbos-pg", "restate"),
}


def _all_ratios(section: dict[str, Any], keys: list[str]) -> dict[tuple[str, str], dict[str, str]]:
    out: dict[tuple[str, str], dict[str, str]] = {}
    for base, peers in RATIO_BASES.items():
        for peer, values in _w_ratios(section, keys, base).items():
            if peers is None or peer in peers:
                out[(base, peer)] = values
    return out


def _exponent(medians: dict[int, float]) -> tuple[float, int, int] | None:
    """k in time ∝ N^k between the two largest sizes (1 = linear; a fixed overhead makes it < 1)."""
    sizes = sorted(medians)
    if len(sizes) < 2:
        return None
    a, b = sizes[-2:]
    return math.log(medians[b] / medians[a]) / math.log(b / a), a, b


def _linearity(medians: dict[int, float]) -> str:
    found = _exponent(medians)
    if found is None:
        return "Linearity: needs two sizes or more."
    k, a, b = found
    marginal = (b - a) / max(1e-9, medians[b] - medians[a])
    verdict = "linear" if k <= LINEAR_MAX_EXPONENT else "**super-linear**"
    return (
        f"Scaling: time ∝ N^{k:.2f} from N={a:,} to N={b:,} → {verdict} (linear means an exponent ≤ "
        f"{LINEAR_MAX_EXPONENT}; a fixed per-attempt cost pulls it below 1). Marginal replay rate between "
        f"them: {marginal:,.0f} entries/s."
    )


def _targets(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []

    def m(section: str, system: str, key: str) -> float | None:
        rows_ = res.get(section, {}).get(system) if isinstance(res.get(section), dict) else None
        if not isinstance(rows_, list):
            return None
        return median([r[key] for r in rows_ if key in r])

    t_steps, r_steps, d_steps = (m("w2", s, "steps_per_s") for s in ("tether", "restate", "dbos-sqlite"))
    if t_steps and r_steps:
        rows.append(("W2 steps/s ≥ 5× Restate", f"{t_steps / r_steps:.3f}×", t_steps >= 5 * r_steps))
    busy = m("w2", "tether", "machine_busy")
    if busy is not None:
        rows.append(("W2 machine CPU-bound during tether's runs (≥ 85 % busy)", f"{busy:.0%}", busy >= 0.85))
    if t_steps and d_steps:
        rows.append(("W2 steps/s ≥ 10× DBOS-SQLite", f"{t_steps / d_steps:.3f}×", t_steps >= 10 * d_steps))
    p_steps, dp_steps = m("w2", "tether-pg", "steps_per_s"), m("w2", "dbos-pg", "steps_per_s")
    if p_steps and r_steps:
        rows.append(("tether-pg W2 steps/s ≥ 1× Restate", f"{p_steps / r_steps:.3f}×", p_steps >= r_steps))
    if p_steps and dp_steps:
        rows.append(
            ("tether-pg W2 steps/s ≥ 10× DBOS-PostgreSQL", f"{p_steps / dp_steps:.3f}×", p_steps >= 10 * dp_steps)
        )
    p50, dp50 = m("w1", "tether-pg", "p50_ms"), m("w1", "dbos-pg", "p50_ms")
    if p50 and dp50:
        rows.append(("tether-pg W1 p50 ≤ DBOS-PostgreSQL", f"{p50 / dp50:.3f}×", p50 <= dp50))
    # Two nodes against the same targets, and against one node (no target: the cost of coordination).
    p2_steps, p2_50 = m("w2", "tether-pg2", "steps_per_s"), m("w1", "tether-pg2", "p50_ms")
    if p2_steps and r_steps:
        rows.append(("tether-pg2 W2 steps/s ≥ 1× Restate", f"{p2_steps / r_steps:.3f}×", p2_steps >= r_steps))
    if p2_steps and dp_steps:
        rows.append(
            ("tether-pg2 W2 steps/s ≥ 10× DBOS-PostgreSQL", f"{p2_steps / dp_steps:.3f}×", p2_steps >= 10 * dp_steps)
        )
    if p2_50 and dp50:
        rows.append(("tether-pg2 W1 p50 ≤ DBOS-PostgreSQL", f"{p2_50 / dp50:.3f}×", p2_50 <= dp50))
    if p2_steps and p_steps:
        rows.append(
            (
                "tether-pg2 / tether-pg W2 steps/s (two nodes on one machine; no target)",
                f"{p2_steps / p_steps:.3f}×",
                None,
            )
        )
    if p2_50 and p50:
        rows.append(("tether-pg2 / tether-pg W1 p50 (no target)", f"{p2_50 / p50:.3f}×", None))
    t50, r50 = m("w1", "tether", "p50_ms"), m("w1", "restate", "p50_ms")
    t99, r99 = m("w1", "tether", "p99_ms"), m("w1", "restate", "p99_ms")
    if t50 and r50:
        rows.append(("W1 p50 ≤ 0.4× Restate", f"{t50 / r50:.3f}×", t50 <= 0.4 * r50))
    if t99 and r99:
        rows.append(("W1 p99 ≤ Restate", f"{t99 / r99:.3f}×", t99 <= r99))
    w3 = res.get("w3")
    if isinstance(w3, dict):
        meds = {int(n): statistics.median(t) for n, t in w3["warm_s"].items()}
        if len(meds) >= 3:
            found = _exponent(meds)
            assert found is not None
            k = found[0]
            biggest = max(meds)
            rate = biggest / meds[biggest]
            rows.append(("W3 linear", f"time ∝ N^{k:.2f}", k <= LINEAR_MAX_EXPONENT))
            rows.append(
                (f"W3 ≥ 200,000 replayed entries/s (N={biggest:,}, end to end)", f"{rate:,.0f}/s", rate >= 200_000)
            )
    w5 = res.get("w5")
    if isinstance(w5, list) and w5:
        wake = statistics.median(w5) * 1000
        rows.append(("W5 cold wake ≤ 150 ms", f"{wake:.0f} ms", wake <= 150))
    w6 = res.get("w6")
    if isinstance(w6, dict) and w6.get("runs"):
        overhead = median([r["overhead_ms_per_call"] for r in w6["runs"]]) or 0.0
        rate = median([r["runs_per_s"] for r in w6["runs"]]) or 0.0
        rows.append(
            (
                "W6 agent: overhead per model call beyond the model's own time (no target)",
                f"{overhead:.1f} ms; {rate:.0f} runs/s",
                None,
            )
        )
    w4 = res.get("w4")
    if isinstance(w4, list):
        workers = median([r["workers_idle"] for r in w4]) or 0
        kib = median([r["kib_per_run"] for r in w4]) or 0
        rows.append(("W4 0 worker processes while idle", f"{workers:.0f}", workers == 0))
        rows.append(("W4 server RSS growth ≤ 2 KiB per suspended run", f"{kib:.2f} KiB", kib <= 2))
    return rows


def _w6(w6: Any, cfg: dict[str, Any], add: Any) -> None:
    """The W6 section: tether's agent runs beside the same loop without tether."""
    delay_ms = cfg["w6_delay_s"] * 1000
    add(
        f"## W6 agents: {cfg['w6_runs']} runs of a 3-turn agent, {cfg['w6_concurrency']} in flight, "
        f"model delay {delay_ms:.0f} ms"
    )
    add("")
    if isinstance(w6, str):
        add(f"error: {w6}")
        add("")
        return
    journal = w6["journal"]
    add(
        f"One run journals {journal['entries']} entries: {', '.join(journal['names'])}. The model is "
        f"`python -m tether.testing.model_server --script researcher --delay {cfg['w6_delay_s']}`; the "
        "model's own time is measured there, per request, from the request received to the answer ready."
    )
    add("")
    add(
        "| system | in flight | runs/s | p50 ms | p99 ms | mean ms | model calls per run "
        "| model's own time per call ms | **overhead per model call ms** | server CPU ms / run "
        "| deployment CPU ms / run | server + deployment "
        "| model server CPU ms / run | client CPU ms / run |"
    )
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    notes: list[str] = []
    baseline = w6.get("baseline")
    plain = "plain loop (`openai` client, no tether)"
    lines: list[tuple[str, str, Any]] = [
        ("tether", str(cfg["w6_concurrency"]), w6["runs"]),
        ("tether", "1", [w6["sequential"]] if "sequential" in w6 else None),
    ]
    if isinstance(baseline, str):
        lines.append((plain, "", baseline))
    elif isinstance(baseline, dict):
        lines.append((plain, str(cfg["w6_concurrency"]), baseline["runs"]))
        lines.append((plain, "1", [baseline["sequential"]]))
    for label, flight, rows in lines:
        if rows is None:
            continue
        if isinstance(rows, str):
            add(f"| {label} | error: {rows} |" + " |" * 12)
            continue
        for row in rows:
            if "cpu_server_ms_per_run" in row:
                row["cpu_total_ms_per_run"] = row["cpu_server_ms_per_run"] + row.get("cpu_deployment_ms_per_run", 0.0)

        def col(key: str, fmt: str = "{:.2f}", rows: list[dict[str, Any]] = rows) -> str:
            values = [r[key] for r in rows if key in r]
            return med(values, fmt) if values else "–"

        add(
            f"| {label} | {flight} | {col('runs_per_s', '{:.1f}')} | {col('p50_ms', '{:.1f}')} "
            f"| {col('p99_ms', '{:.1f}')} | {col('mean_ms', '{:.1f}')} | {col('model_calls_per_run_seen', '{:.2f}')} "
            f"| {col('model_ms')} | **{col('overhead_ms_per_call')}** | {col('cpu_server_ms_per_run')} "
            f"| {col('cpu_deployment_ms_per_run')} | {col('cpu_total_ms_per_run')} | {col('cpu_model_ms_per_run')} "
            f"| {col('cpu_client_ms_per_run')} |"
        )
        for row in rows:
            notes.extend(f"{label}, {flight} in flight: {n}" for n in row.get("notes", []))
        busy = [r["machine_busy"] * 100 for r in rows if "machine_busy" in r]
        if busy and flight != "1":
            notes.append(f"{label}: machine CPU busy during the timed runs {med(busy, '{:.0f}')} %")
    ours = median([r["overhead_ms_per_call"] for r in w6["runs"]])
    if isinstance(baseline, dict) and ours is not None:
        theirs = median([r["overhead_ms_per_call"] for r in baseline["runs"]]) or 0.0
        alone = ""
        if "sequential" in w6:
            one, two = w6["sequential"]["overhead_ms_per_call"], baseline["sequential"]["overhead_ms_per_call"]
            alone = f"; one run at a time: {one - two:.1f} ms ({one:.1f} − {two:.1f} ms)"
        add("")
        add(
            f"**tether's cost per model call beyond a plain agent loop, {cfg['w6_concurrency']} in flight: "
            f"{ours - theirs:.1f} ms** ({ours:.1f} − {theirs:.1f} ms, medians){alone}."
        )
    add("")
    add(
        "Overhead per model call = (mean run latency − model calls per run × the model's own time per call) / "
        "model calls per run, with 3 model calls per run. For tether a run's latency is one "
        "`POST .../workflows/agent/runs?wait=` from this process, so the overhead holds: starting the run "
        "(journal, dispatch to the worker), the 3 HTTP calls to the model from the worker (an `AsyncOpenAI` "
        "client each, as `tether.sdk.agents` makes them), journaling 3 `llm` entries (the whole response) and "
        "2 `step` entries (each committed — fsync, group commit — before the run goes on), "
        "the 2 tool steps themselves, completing the run and answering; at "
        f"{cfg['w6_concurrency']} in flight also the time each of these waits for a CPU behind the other runs "
        "(the *1 in flight* rows, measured first, are without that). The "
        "plain loop is the same conversation driven in this process with one `AsyncOpenAI` client and the "
        "tools called in process, nothing journaled: its overhead is the model client's own HTTP cost (and "
        "the same waiting for a CPU), so the difference is what tether adds to an agent."
    )
    for note in notes:
        add(f"- {note}")
    add("")
