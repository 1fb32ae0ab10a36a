"""Traces of runs over OpenTelemetry: one span per attempt, one per journal entry.

Tracing is optional and needs the ``otel`` extra (``pip install 'tether[otel]'``). It is on when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, or
``TETHER_OTEL=1``, and off whenever ``OTEL_SDK_DISABLED=true``. Spans leave through the
OTLP/HTTP exporter, which reads the standard ``OTEL_*`` variables itself.

Off, the server holds a :class:`Tracing`, whose methods do nothing: the dispatcher pays one
method call per attempt and per append batch, never one per entry, and OpenTelemetry is not
even imported. docs/traces.md describes the spans, their attributes, parents and times.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tether._version import __version__
from tether.core.journal import WAITING_KINDS, JournalEntry
from tether.errors import FencedError, TetherError
from tether.protocol import NewEntry
from tether.store.records import AppendResult, AttemptStart, Run

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

log = logging.getLogger("tether.tracing")

SWITCHES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""Standard variables whose presence turns tracing on (where to export is tracing wanted)."""
MISSING_EXTRA = "tracing needs the otel extra: pip install 'tether[otel]'"
ERROR_OUTCOMES = frozenset({"failed", "retry", "stuck", "mismatch"})
"""Attempt outcomes whose span gets status ERROR."""
ENDED_OUTCOMES = frozenset({"completed", "failed", "stuck", "mismatch", "continue_as_new"})
"""Attempt outcomes after which the run has no next attempt to wake."""
ABANDONED: Mapping[str, Any] = {"outcome": "abandoned"}
"""The outcome of an attempt cut off by the server stopping (a new attempt recovers the run)."""

JournalReader = Callable[[str, str], Awaitable[list[JournalEntry]]]
"""Reads a run's whole journal, with timestamps: ``(tenant_id, run_id) -> entries``."""


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` switches tracing on (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in SWITCHES) or environ.get("TETHER_OTEL", "").strip() == "1"


def run_trace_id(run_id: str) -> int:
    """The trace id of every span of a run: the first 16 bytes of sha256 of its id.

    Derived rather than random so that all attempts of a run, across server restarts and
    weeks of waiting, land in one trace that anyone holding the run id can look up.
    """
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big") or 1


class Tracing:
    """Tracing switched off: every method does nothing.

    The dispatcher calls these at fixed points; :func:`open_tracing` returns this class or the
    OpenTelemetry implementation.
    """

    __slots__ = ()

    def start_attempt(self, start: AttemptStart) -> None:
        """An attempt is being dispatched."""

    def end_attempt(self, run: Run, outcome: Mapping[str, Any]) -> None:
        """The attempt ``run.attempt`` of ``run`` ended with ``outcome`` (a protocol outcome)."""

    def appended(
        self,
        items: Sequence[tuple[str, int, list[NewEntry]]],
        results: Sequence[AppendResult | FencedError],
    ) -> None:
        """Appends were committed (or refused): ``(run_id, attempt, entries)`` and each result."""

    async def close(self) -> None:
        """Flush what is buffered and stop exporting."""


def open_tracing(*, journal: JournalReader) -> Tracing:
    """The server's tracing, as the environment asks for it.

    Args:
        journal: reads a run's journal with timestamps, for waits that completed between
            attempts.

    Raises:
        TetherError: tracing is switched on but the ``otel`` extra is not installed.
    """
    if not tracing_wanted(os.environ):
        return Tracing()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    except ImportError as exc:
        raise TetherError(MISSING_EXTRA) from exc

    class RunTraceIds(RandomIdGenerator):
        """Random ids, except the trace id of an attempt span: :func:`run_trace_id`."""

        def __init__(self) -> None:
            self.next_trace_id: int | None = None

        def generate_trace_id(self) -> int:
            if self.next_trace_id is not None:
                return self.next_trace_id
            return super().generate_trace_id()

    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "unknown_service")).startswith("unknown_service"):
        # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named the service.
        resource = resource.merge(Resource({"service.name": "tether"}))
    ids = RunTraceIds()
    provider = TracerProvider(resource=resource, id_generator=ids)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return _OtelTracing(provider, ids, journal=journal)


@dataclass(slots=True)
class _Live:
    """An attempt in flight and what its entry spans need."""

    span: Span
    context: Context
    """The attempt span as the parent of its entries."""
    run: Run
    deployment_id: str
    deployment_label: str


class _TraceIds(Protocol):
    """The id generator of the provider, as the attempt spans steer it."""

    next_trace_id: int | None
    """The trace id the next root span gets (None: a random one)."""


class _OtelTracing(Tracing):
    """Spans through an OpenTelemetry SDK tracer provider of the server's own."""

    __slots__ = (
        "_error",
        "_ids",
        "_in_context",
        "_journal",
        "_live",
        "_provider",
        "_root",
        "_tasks",
        "_tracer",
        "_waiting",
    )

    def __init__(self, provider: TracerProvider, ids: _TraceIds, *, journal: JournalReader) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context

        self._provider = provider
        self._ids = ids
        self._tracer: Tracer = provider.get_tracer("tether", __version__)
        self._in_context = trace.set_span_in_context
        self._root = Context()
        """No parent, whatever the current context holds: an attempt span is a root of its run's trace."""
        self._error = trace.StatusCode.ERROR
        self._journal = journal
        self._live: dict[tuple[str, int], _Live] = {}
        self._waiting: dict[str, set[int]] = {}
        """Per run, the waiting entries seen incomplete: whichever attempt next sees one
        completed emits its span."""
        self._tasks: set[asyncio.Task[None]] = set()

    def start_attempt(self, start: AttemptStart) -> None:
        run, deployment = start.run, start.deployment
        attributes: dict[str, AttributeValue] = {
            "tether.run.id": run.id,
            "tether.deployment.id": deployment.id,
            "tether.deployment.label": deployment.label,
            "tether.workflow": run.workflow,
            "tether.attempt": run.attempt,
        }
        if run.parent_run_id is not None:
            attributes["tether.run.parent_id"] = run.parent_run_id
        self._ids.next_trace_id = run_trace_id(run.id)
        try:
            span = self._tracer.start_span(f"attempt {run.workflow}", context=self._root, attributes=attributes)
        finally:
            self._ids.next_trace_id = None
        live = _Live(span, self._in_context(span), run, deployment.id, deployment.label)
        self._live[(run.id, run.attempt)] = live
        woken = self._woken(start)
        if woken:
            task = asyncio.create_task(self._emit_woken(live, woken), name=f"tether-trace-{run.id}")
            self._tasks.add(task)
            task.add_done_callback(self._reap)

    def _woken(self, start: AttemptStart) -> dict[int, bool]:
        """Waiting entries this attempt is the first to see completed: index -> whether it is
        known to have waited (else it may have completed at once and have its span already)."""
        run = start.run
        known = self._waiting.pop(run.id, None)
        woken: dict[int, bool] = {}
        waiting: set[int] = set()
        for row in start.rows:
            if row["kind"] not in WAITING_KINDS:
                continue
            index = row["idx"]
            if not row["completed"]:
                waiting.add(index)
            elif known is not None:
                if index in known:
                    woken[index] = True
            elif row["attempt"] == run.attempt - 1:
                # This server never saw the run wait (it restarted since): the previous
                # attempt most likely suspended on it; the journal's times tell whether it
                # waited at all or was completed at once (its span sent then).
                woken[index] = False
        if waiting:
            self._waiting[run.id] = waiting
        return woken

    async def _emit_woken(self, live: _Live, woken: dict[int, bool]) -> None:
        for entry in await self._journal(live.run.tenant_id, live.run.id):
            waited = woken.get(entry.index)
            if waited is None or entry.completed_at is None:
                continue
            if not waited and entry.completed_at == entry.created_at:
                continue
            self._entry_span(
                live,
                entry.index,
                entry.kind,
                entry.name,
                entry.attempt,
                entry.error,
                int(entry.created_at * 1e9),
                int(entry.completed_at * 1e9),
            )

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not trace the waits of an attempt", exc_info=task.exception())

    def end_attempt(self, run: Run, outcome: Mapping[str, Any]) -> None:
        live = self._live.pop((run.id, run.attempt), None)
        if live is None:
            return
        kind = str(outcome.get("outcome"))
        live.span.set_attribute("tether.attempt.outcome", kind)
        if kind in ERROR_OUTCOMES:
            live.span.set_status(self._error, _describe(outcome.get("error") or outcome.get("mismatch")))
        if kind in ENDED_OUTCOMES:
            self._waiting.pop(run.id, None)
        live.span.end()

    def appended(
        self,
        items: Sequence[tuple[str, int, list[NewEntry]]],
        results: Sequence[AppendResult | FencedError],
    ) -> None:
        # The worker does not say when an action began; its measured duration does.
        now = time.time_ns()
        for (run_id, attempt, entries), result in zip(items, results, strict=True):
            live = self._live.get((run_id, attempt))
            if live is None or isinstance(result, FencedError):
                continue
            at_once = {c["index"]: c["error"] for c in result.completions}
            for entry in entries:
                index = entry["index"]
                if entry["completed"]:
                    duration = entry.get("duration")
                    began = now - int(duration * 1e9) if isinstance(duration, int | float) else now
                    error = entry.get("error")
                elif index in at_once:
                    began, error = now, at_once[index]
                else:
                    self._waiting.setdefault(run_id, set()).add(index)
                    continue
                self._entry_span(live, index, entry["kind"], entry["name"], attempt, error, began, now)

    def _entry_span(
        self,
        parent: _Live,
        index: int,
        kind: str,
        name: str,
        attempt: int,
        error: Mapping[str, Any] | None,
        start_ns: int,
        end_ns: int,
    ) -> None:
        attributes: dict[str, AttributeValue] = {
            "tether.run.id": parent.run.id,
            "tether.deployment.id": parent.deployment_id,
            "tether.deployment.label": parent.deployment_label,
            "tether.attempt": attempt,
            "tether.entry.index": index,
            "tether.entry.kind": kind,
            "tether.entry.name": name,
        }
        if error is not None:
            attributes["error.type"] = str(error.get("type", "Error"))
        span = self._tracer.start_span(
            kind if name == kind else f"{kind} {name}",
            context=parent.context,
            attributes=attributes,
            start_time=start_ns,
        )
        if error is not None:
            span.set_status(self._error, _describe(error))
        span.end(end_time=end_ns)

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for live in list(self._live.values()):
            self.end_attempt(live.run, ABANDONED)
        # Shutting down exports what is buffered, over blocking HTTP.
        await asyncio.to_thread(self._provider.shutdown)


def _describe(error: Any) -> str:
    """A status description from an ``{"type", "message"}`` error or a mismatch."""
    if not isinstance(error, Mapping):
        return "" if error is None else str(error)
    message = str(error.get("message", ""))
    kind = error.get("type")
    return f"{kind}: {message}" if kind else message
