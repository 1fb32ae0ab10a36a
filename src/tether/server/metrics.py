"""Prometheus metrics of one server (``GET /metrics``), on a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
RUN_LABELS = ("tenant", "deployment_id", "deployment_label", "status")


class _Live(Collector):
    """Values the runtime keeps itself, read at scrape time."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        values = self._read()
        yield GaugeMetricFamily("tether_workers_alive", "Bundle worker processes running.", value=values["workers"])
        yield GaugeMetricFamily(
            "tether_warm_spares",
            "Started interpreters waiting to become a deployment's worker (not counted as workers).",
            value=values.get("spares", 0),
        )
        yield CounterMetricFamily("tether_worker_cold_starts", "Workers started.", value=values["cold_starts"])
        yield CounterMetricFamily("tether_attempts_started", "Attempts dispatched.", value=values["attempts"])
        yield CounterMetricFamily("tether_timers_fired", "Durable timers fired.", value=values["timers"])
        yield CounterMetricFamily(
            "tether_attempts_redispatched",
            "Runs found running with no attempt in flight and dispatched again by the supervisor.",
            value=values["redispatched"],
        )
        yield CounterMetricFamily(
            "tether_runs_pruned", "Finished runs pruned by retention (--retention).", value=values["pruned"]
        )
        yield CounterMetricFamily(
            "tether_store_faults",
            "Store operations refused for a fault of the store (disk full, locked, read-only, I/O): answered 503.",
            value=values["store_faults"],
        )


class Metrics:
    """What the server measures; see docs/http-api.md for the list."""

    def __init__(self) -> None:
        """Create the metrics on a fresh registry."""
        self.registry = CollectorRegistry()
        self.runs = Gauge(
            "tether_runs",
            "Runs by tenant, deployment and status.",
            RUN_LABELS,
            registry=self.registry,
        )
        self.attempts = Counter("tether_attempts", "Attempts ended, by outcome.", ["outcome"], registry=self.registry)
        self.append_entries = Histogram(
            "tether_journal_append_entries",
            "Journal entries per append batch (one link frame or HTTP append).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.steps = Histogram(
            "tether_step_duration_seconds",
            "How long steps, inline runs and model calls took in the worker, retries included.",
            ["kind"],
            registry=self.registry,
        )
        self.step_retries = Counter(
            "tether_step_retries",
            "Retries of steps, inline runs and model calls inside attempts (tries beyond the first).",
            ["kind"],
            registry=self.registry,
        )
        self.commit_transactions = Histogram(
            "tether_store_commit_transactions",
            "Write transactions per group commit (one fsync).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def watch(self, read: Callable[[], dict[str, float]]) -> None:
        """Also expose what ``read`` returns (workers, cold_starts, attempts, timers, redispatched,
        pruned, store_faults)."""
        self.registry.register(_Live(read))

    def render(self, runs: dict[tuple[str, str, str, str], int]) -> bytes:
        """The text exposition, with run counts (by tenant, deployment id, label and status) as of now."""
        self.runs.clear()
        for labels, count in runs.items():
            self.runs.labels(*labels).set(count)
        return generate_latest(self.registry)

    @staticmethod
    def render_tenant(runs: dict[tuple[str, str, str, str], int]) -> bytes:
        """Only run counts (one tenant's): what a tenant's token sees, nothing server-wide."""
        registry = CollectorRegistry()
        gauge = Gauge("tether_runs", "Runs by tenant, deployment and status.", RUN_LABELS, registry=registry)
        for labels, count in runs.items():
            gauge.labels(*labels).set(count)
        return generate_latest(registry)
