"""The six workloads. Every request loop is bounded in count and in time."""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from . import procs
from .paths import TETHER_APP
from .systems import ModelServer, TetherSystem, until


class Invoker(Protocol):
    name: str

    async def invoke(self, n: int) -> int: ...

    def pid_groups(self) -> dict[str, list[int]]: ...


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def latency_stats(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": sum(latencies) / len(latencies) * 1000,
    }


# --- W1 latency ---------------------------------------------------------------------------------


async def w1_latency(system: Invoker, *, calls: int, reps: int, warmup: int) -> list[dict[str, float]]:
    """``calls`` sequential start→result of the 1-step workflow, per repetition."""
    for _ in range(warmup):
        assert await system.invoke(1) == 1
    results = []
    for _ in range(reps):
        latencies = []
        deadline = time.monotonic() + 600
        for _ in range(calls):
            if time.monotonic() > deadline:
                raise TimeoutError("workload 1: over 600 s")
            start = time.perf_counter()
            assert await system.invoke(1) == 1
            latencies.append(time.perf_counter() - start)
        results.append(latency_stats(latencies))
    return results


# --- W2 throughput ------------------------------------------------------------------------------


async def w2_throughput(
    system: Invoker, *, runs: int, steps: int, concurrency: int, reps: int, warmup: int
) -> list[dict[str, Any]]:
    """``runs`` runs of ``steps`` steps, ``concurrency`` in flight; CPU per process group."""
    expected = steps * (steps + 1) // 2
    for _ in range(warmup):
        assert await system.invoke(steps) == expected
    results = []
    for _ in range(reps):
        todo = iter(range(runs))
        done = 0

        async def lane(todo: Any) -> None:
            nonlocal done
            for _ in todo:
                assert await system.invoke(steps) == expected
                done += 1

        groups = system.pid_groups()
        before = {name: procs.CpuSnapshot.take(pids) for name, pids in groups.items()}
        client0 = client_cpu()
        busy0 = procs.machine_busy_seconds()
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(lane(todo) for _ in range(concurrency))), timeout=1800)
        wall = time.perf_counter() - start
        busy = procs.machine_busy_seconds() - busy0
        client = client_cpu() - client0
        after_groups = system.pid_groups()
        row: dict[str, Any] = {
            "wall_s": wall,
            "runs_per_s": done / wall,
            "steps_per_s": done * steps / wall,
            "cpu_client_per_1k": client / done * 1000,
            "notes": [],
        }
        ours = client
        for name, pids in groups.items():
            # processes started during the measurement (a new worker) count too
            after = procs.CpuSnapshot.take(set(pids) | set(after_groups.get(name, [])))
            spent, lost = procs.cpu_between(before[name], after)
            ours += spent
            row[f"cpu_{name}_per_1k"] = spent / done * 1000
            if lost:
                row["notes"].append(f"a {name} process exited during the measurement: its CPU is missing")
            row[f"{name}_processes"] = len(after.seconds)
        row["foreign_cpu_s"] = max(0.0, busy - ours)  # other processes on the machine meanwhile
        row["machine_busy"] = busy / wall / (os.cpu_count() or 1)
        results.append(row)
    return results


# --- W3 long journal (tether) -------------------------------------------------------------------


async def w3_long_journal(tether: TetherSystem, *, sizes: list[int], reps: int) -> dict[str, Any]:
    """Runs of ``long(n)``: n steps, then a signal; the time from the signal to the run's next
    step completing (which replays the n journaled entries), with a warm worker."""
    build_start = time.perf_counter()
    runs: dict[int, list[str]] = {n: [] for n in sizes}
    for n in sizes:
        for _ in range(reps):
            runs[n].append(await tether.start_run("long", {"n": n}))
    pending = [run_id for ids in runs.values() for run_id in ids]

    async def all_suspended() -> bool:
        statuses = await asyncio.gather(*(tether.status(run_id) for run_id in pending))
        for run_id, status in zip(list(pending), statuses, strict=True):
            if status in {"failed", "stuck", "cancelled", "completed"}:
                raise RuntimeError(f"workload 3: run {run_id} is {status} before its signal")
            if status == "suspended":
                pending.remove(run_id)
        return not pending

    build_timeout = 120 + sum(sizes) * reps / 50  # bounded even at 50 steps/s
    await until(all_suspended, build_timeout, "the long runs to reach their signal", interval=0.5)
    build_s = time.perf_counter() - build_start
    warm: dict[int, list[float]] = {}
    for n in sizes:
        warm[n] = []
        for run_id in runs[n]:
            assert await tether.invoke(1) == 1  # a tiny other run: the worker is up
            start = time.perf_counter()
            await tether.signal(run_id)
            assert await tether.result(run_id, timeout=600) == n + 1
            warm[n].append(time.perf_counter() - start)
    return {"warm_s": warm, "build_s": build_s, "total_steps": sum(sizes) * reps}


# --- W4 idle scale (tether) ---------------------------------------------------------------------


def make_bundles(root: Path, count: int) -> list[Path]:
    """``count`` copies of the bench app that differ by one constant: distinct bundles."""
    folders = []
    for k in range(count):
        folder = root / f"app{k:03d}"
        shutil.copytree(TETHER_APP, folder, ignore=shutil.ignore_patterns("__pycache__"))
        module = folder / "benchapp.py"
        text = module.read_text()
        module.write_text(text.replace("VARIANT = 0", f"VARIANT = {k + 1}", 1))
        folders.append(folder)
    return folders


async def gather_bounded(coros: list[Any], limit: int, timeout: float) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return list(await asyncio.wait_for(asyncio.gather(*(one(c) for c in coros)), timeout=timeout))


async def wait_no_workers(tether: TetherSystem, timeout: float) -> float:
    """Wait until no worker process is alive; seconds waited."""
    start = time.perf_counter()

    async def none() -> bool:
        # The server's count: a warm spare is a process but no deployment's worker.
        return (await tether.metrics()).get("tether_workers_alive", 0) == 0

    await until(none, timeout, "the workers to idle out", interval=0.2)
    return time.perf_counter() - start


async def w4_idle_scale(tether: TetherSystem, bundles_dir: Path, *, runs: int, deployments: int) -> dict[str, Any]:
    """``runs`` runs suspended on a signal across ``deployments`` deployments; RSS, workers; then
    signal them all and time until all are complete. ``tether`` runs with a short idle timeout."""
    assert tether.server is not None
    folders = make_bundles(bundles_dir, deployments)
    t0 = time.perf_counter()
    dep_ids = await gather_bounded([tether.deploy(folder) for folder in folders], 4, 60 + 30 * deployments)
    deploy_s = time.perf_counter() - t0
    await wait_no_workers(tether, tether.idle_timeout + 120)
    await asyncio.sleep(1.0)
    rss_before = procs.rss_kib(tether.server.pid) or 0
    metrics0 = await tether.metrics()

    t0 = time.perf_counter()
    run_ids = await gather_bounded(
        [tether.start_run("idle", {}, deployment=dep_ids[i % deployments]) for i in range(runs)], 64, 600 + runs / 10
    )
    start_s = time.perf_counter() - t0
    peak_workers = 0

    async def suspended() -> bool:
        nonlocal peak_workers
        peak_workers = max(peak_workers, len(tether.workers()))
        metrics = await tether.metrics()
        return metrics.get("tether_runs{suspended}", 0) >= runs

    await until(suspended, 600 + runs / 10, f"{runs} runs to suspend", interval=0.25)
    suspend_s = time.perf_counter() - t0
    idle_wait = await wait_no_workers(tether, tether.idle_timeout + 120)
    await asyncio.sleep(1.0)
    workers_idle = int((await tether.metrics()).get("tether_workers_alive", 0))
    rss_after = procs.rss_kib(tether.server.pid) or 0
    metrics1 = await tether.metrics()

    t0 = time.perf_counter()
    await gather_bounded([tether.signal(run_id) for run_id in run_ids], 64, 600 + runs / 10)
    signal_s = time.perf_counter() - t0
    completed0 = metrics0.get("tether_runs{completed}", 0)

    async def all_done() -> bool:
        metrics = await tether.metrics()
        if metrics.get("tether_runs{stuck}", 0) or metrics.get("tether_runs{failed}", 0):
            raise RuntimeError(f"workload 4: runs failed or stuck: {metrics}")
        return metrics.get("tether_runs{completed}", 0) - completed0 >= runs

    await until(all_done, 900 + runs / 10, f"{runs} signalled runs to complete", interval=0.1)
    wake_s = time.perf_counter() - t0
    metrics2 = await tether.metrics()
    cold = metrics2.get("tether_worker_cold_starts_total", 0) - metrics1.get("tether_worker_cold_starts_total", 0)
    return {
        "runs": runs,
        "deployments": deployments,
        "deploy_s": deploy_s,
        "start_s": start_s,
        "suspend_s": suspend_s,
        "idle_wait_s": idle_wait,
        "peak_workers": peak_workers,
        "workers_idle": workers_idle,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "kib_per_run": (rss_after - rss_before) / runs,
        "signal_s": signal_s,
        "wake_all_s": wake_s,
        "cold_starts": cold,
    }


# --- W5 cold wake (tether) ----------------------------------------------------------------------


async def w5_cold_wake(tether: TetherSystem, *, reps: int) -> list[float]:
    """Signal a run whose deployment's worker has exited: seconds to its next step's completion."""
    run_ids = [await tether.start_run("idle", {}) for _ in range(reps)]
    pending = list(run_ids)

    async def suspended() -> bool:
        for run_id in list(pending):
            if await tether.status(run_id) == "suspended":
                pending.remove(run_id)
        return not pending

    await until(suspended, 120, "the cold-wake runs to suspend", interval=0.1)
    times = []
    for run_id in run_ids:
        await wait_no_workers(tether, tether.idle_timeout + 60)
        start = time.perf_counter()
        await tether.signal(run_id)
        assert await tether.result(run_id, timeout=120) == 1  # VARIANT 0 + 1
        times.append(time.perf_counter() - start)
    return times


LOCK_REQUIREMENTS = "pydantic>=2.10,<3\n"
"""A bundle lock for W5's deploys: resolves to what the worker needs, nothing more."""


async def w5_deploy(tether: TetherSystem, workdir: Path, *, reps: int) -> dict[str, list[float]]:
    """Seconds per ``tether deploy`` of new content: without a lock (fingerprinted), with a
    ``requirements.txt`` whose environment must be built (uv's cache warm), and with one whose
    environment exists already (shared)."""
    times: dict[str, list[float]] = {"no_lock": [], "lock_new_env": [], "lock_reused_env": []}
    envs = tether.workdir / "data" / "envs"
    for rep in range(reps):
        for kind, seconds in times.items():
            folder = workdir / f"{kind}-{rep}"
            shutil.copytree(TETHER_APP, folder, ignore=shutil.ignore_patterns("__pycache__"))
            with (folder / "benchapp.py").open("a") as source:
                source.write(f"\n# {kind} {rep}\n")
            if kind != "no_lock":
                (folder / "requirements.txt").write_text(LOCK_REQUIREMENTS)
            if kind == "lock_new_env" and envs.exists():
                for env in envs.iterdir():
                    if not env.name.startswith("."):
                        shutil.rmtree(env)
            start = time.perf_counter()
            await tether.deploy(folder)
            seconds.append(time.perf_counter() - start)
    return times


# --- W6 agents (tether, and a plain agent loop as the baseline) ----------------------------------

AGENT_CALLS = 3  # model calls per run of the researcher agent: lookup, publish, the answer
AGENT_TOOLS = 2


async def _timed_lanes(
    call: Any, *, runs: int, concurrency: int, pid_groups: dict[str, list[int]], groups_after: Any
) -> dict[str, Any]:
    """``runs`` calls of ``call(i)`` with ``concurrency`` in flight: each one's latency, the
    wall time, and the CPU of every process group and of this process meanwhile."""
    todo = iter(range(runs))
    latencies: list[float] = []

    async def lane() -> None:
        for i in todo:
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    before = {name: procs.CpuSnapshot.take(pids) for name, pids in pid_groups.items()}
    client0 = client_cpu()
    busy0 = procs.machine_busy_seconds()
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(lane() for _ in range(concurrency))), timeout=1800)
    wall = time.perf_counter() - start
    busy = procs.machine_busy_seconds() - busy0
    client = client_cpu() - client0
    after_groups = groups_after()
    done = len(latencies)
    row: dict[str, Any] = {
        "runs": done,
        "wall_s": wall,
        "runs_per_s": done / wall,
        **latency_stats(latencies),
        "cpu_client_ms_per_run": client / done * 1000,
        "notes": [],
    }
    ours = client
    for name, pids in pid_groups.items():
        after = procs.CpuSnapshot.take(set(pids) | set(after_groups.get(name, [])))
        spent, lost = procs.cpu_between(before[name], after)
        ours += spent
        row[f"cpu_{name}_ms_per_run"] = spent / done * 1000
        if lost:
            row["notes"].append(f"a {name} process exited during the measurement: its CPU is missing")
    row["foreign_cpu_s"] = max(0.0, busy - ours)
    row["machine_busy"] = busy / wall / (os.cpu_count() or 1)
    return row


def _overhead(row: dict[str, Any], model_times: list[float], runs: int) -> None:
    """Add the model's own time (measured at the model server) and the overhead per model call:
    (mean run latency - model calls per run x mean model time) / model calls per run."""
    calls = len(model_times) / runs
    model_ms = sum(model_times) / len(model_times) * 1000
    row["model_calls_per_run_seen"] = calls
    row["model_ms"] = model_ms
    row["overhead_ms_per_call"] = (row["mean_ms"] - AGENT_CALLS * model_ms) / AGENT_CALLS


async def w6_agents(
    tether: TetherSystem,
    model: ModelServer,
    *,
    runs: int,
    concurrency: int,
    reps: int,
    warmup: int,
    sequential: int,
) -> dict[str, Any]:
    """``runs`` runs of the 3-turn ``agent`` workflow, ``concurrency`` in flight, per repetition:
    runs/s, latency, CPU per run and tether's overhead per model call beyond the model's own time;
    before them, ``sequential`` runs one at a time (the same measures without queueing)."""
    for i in range(warmup):
        await tether.invoke_agent(f"warm-up {i}")
    # What one run journals: the workload is what it claims (3 model calls, 2 tool steps).
    sample = await tether.invoke_agent("tides")
    output = sample["output"]
    if not (output.get("published") is True and len(output.get("findings", [])) == 2):
        raise WorkflowCheckFailed(f"workload 6: the agent answered {output}")
    entries = await tether.journal(str(sample["id"]))
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    journal = {
        "entries": len(entries),
        "kinds": kinds,
        "names": [f"{e['kind']} {e['name']}" for e in entries],
    }
    if kinds.get("llm") != AGENT_CALLS or kinds.get("step") != AGENT_TOOLS:
        raise WorkflowCheckFailed(
            f"workload 6: one run journaled {journal['names']}, not {AGENT_CALLS} llm + {AGENT_TOOLS} step entries"
        )

    async def one(i: int) -> None:
        run = await tether.invoke_agent(f"topic {i}")
        if run["output"].get("published") is not True:
            raise WorkflowCheckFailed(f"workload 6: run {run['id']} answered {run['output']}")

    async def measure(runs: int, concurrency: int) -> dict[str, Any]:
        groups = tether.pid_groups()
        assert model.proc is not None
        groups["model"] = [model.proc.pid]
        mark = model.mark()
        row = await _timed_lanes(
            one, runs=runs, concurrency=concurrency, pid_groups=groups, groups_after=tether.pid_groups
        )
        _overhead(row, model.seconds_since(mark), runs)
        return row

    # One at a time first: the overhead without waiting for a CPU behind other runs.
    alone = await measure(sequential, 1)
    results = [await measure(runs, concurrency) for _ in range(reps)]
    return {"runs": results, "sequential": alone, "journal": journal}


BASELINE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find what is known about a topic.",
            "parameters": {
                "properties": {"topic": {"title": "Topic", "type": "string"}},
                "required": ["topic"],
                "type": "object",
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "publish",
            "description": "Publish a summary on the team's page.",
            "parameters": {
                "properties": {"summary": {"title": "Summary", "type": "string"}},
                "required": ["summary"],
                "type": "object",
            },
        },
    },
]


async def w6_baseline(
    model: ModelServer, *, runs: int, concurrency: int, reps: int, warmup: int, sequential: int
) -> dict[str, Any]:
    """The same agent without tether: the 3-call loop driven in this process with the official
    ``openai`` client (one ``AsyncOpenAI``, as a plain agent would keep), ``concurrency`` in flight,
    the tools called in process. Nothing is journaled."""
    import openai

    tools = {
        "lookup": lambda topic: [f"{topic}: a survey", f"{topic}: open problems"],
        "publish": lambda summary: f"published {len(summary)} characters",
    }
    from pydantic import BaseModel

    class Report(BaseModel):  # the bench app's Report: its schema is sent like tether's agent sends it
        topic: str
        findings: list[str]
        published: bool

    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": Report.model_json_schema()}}
    client = openai.AsyncOpenAI(base_url=model.url, api_key="unset", max_retries=0, timeout=120)

    async def agent(topic: str) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": "Look the topic up with lookup, then publish a summary with publish, then report.",
            },
            {"role": "user", "content": f'Research this: {{"topic": "{topic}"}}'},
        ]
        for _ in range(10):
            response = await client.chat.completions.create(
                model="researcher",
                messages=messages,  # type: ignore[arg-type]
                tools=BASELINE_TOOLS,  # type: ignore[arg-type]
                extra_body={"response_format": response_format},
            )
            message = response.choices[0].message
            if not message.tool_calls:
                return dict(json.loads(message.content or "{}"))
            messages.append(message.model_dump(mode="json", exclude_unset=True))
            for call in message.tool_calls:
                result = tools[call.function.name](**json.loads(call.function.arguments))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        raise WorkflowCheckFailed("workload 6 baseline: no final answer within 10 model calls")

    async def one(i: int) -> None:
        answer = await agent(f"topic {i}")
        if answer.get("published") is not True:
            raise WorkflowCheckFailed(f"workload 6 baseline: the agent answered {answer}")

    async def measure(runs: int, concurrency: int) -> dict[str, Any]:
        assert model.proc is not None
        groups = {"model": [model.proc.pid]}
        mark = model.mark()
        row = await _timed_lanes(one, runs=runs, concurrency=concurrency, pid_groups=groups, groups_after=dict)
        _overhead(row, model.seconds_since(mark), runs)
        return row

    async with client:
        for i in range(warmup):
            await one(i)
        alone = await measure(sequential, 1)
        results = [await measure(runs, concurrency) for _ in range(reps)]
    return {"runs": results, "sequential": alone}


class WorkflowCheckFailed(RuntimeError):
    pass
