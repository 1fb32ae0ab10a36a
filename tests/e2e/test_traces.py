"""OpenTelemetry export, end to end: a real server sends OTLP/HTTP to a receiver in the test."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.e2e.conftest import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
SWITCHES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "TETHER_OTEL", "OTEL_SDK_DISABLED")


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    error: bool
    start: int
    end: int
    service: str


def _value(value: AnyValue) -> Any:
    return getattr(value, str(value.WhichOneof("value")))


class Receiver:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf body."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.requests.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the server's exporter is what is under test, not this log

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def spans(self) -> list[Span]:
        with self.lock:
            requests = list(self.requests)
        found = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            Span(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                error=span.status.code == span.status.STATUS_CODE_ERROR,
                                start=span.start_time_unix_nano,
                                end=span.end_time_unix_nano,
                                service=resource["service.name"],
                            )
                        )
        return found

    def of_run(self, run_id: str) -> list[Span]:
        return [s for s in self.spans() if s.attributes.get("tether.run.id") == run_id]

    def wait_for(self, run_id: str, count: int, timeout: float = 20) -> list[Span]:
        """The run's spans once ``count`` have arrived (the exporter batches on a timer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.of_run(run_id)
            if len(spans) >= count:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"{len(self.of_run(run_id))} spans of {run_id} arrived, expected {count}")


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    found = Receiver()
    found.thread.start()
    yield found
    found.http.shutdown()
    found.http.server_close()


@pytest.fixture
def traced(tmp_path: Path, receiver: Receiver, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path / "data",
        tmp_path / "server.log",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"},
    )
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- server log ---\n{proc.log_path.read_text(errors='replace')[-8000:]}\n")


def _check_run(spans: list[Span], run_id: str, dep: dict[str, Any]) -> tuple[list[Span], dict[int, Span]]:
    """The run's attempt spans by number and entry spans by index, after the common checks."""
    assert {s.trace_id for s in spans} == {hashlib.sha256(run_id.encode()).digest()[:16].hex()}
    assert {s.service for s in spans} == {"tether"}
    for span in spans:
        assert span.attributes["tether.deployment.id"] == dep["id"]
        assert span.attributes["tether.deployment.label"] == "v1"
        assert span.start <= span.end
    attempts = sorted((s for s in spans if s.name.startswith("attempt ")), key=lambda s: s.attributes["tether.attempt"])
    entries = {s.attributes["tether.entry.index"]: s for s in spans if not s.name.startswith("attempt ")}
    assert len(attempts) + len(entries) == len(spans), "a journal entry was exported twice"
    assert [a.attributes["tether.attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    for attempt in attempts:
        assert attempt.parent_id == ""
    return attempts, entries


def test_attempts_and_journal_entries_export_as_one_trace_per_run(
    traced: ServerProcess, receiver: Receiver, tmp_path: Path
) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "hello")
    dep = traced.call(lambda c: c.deploy(tmp_path / "hello", env="prod"))
    greet = traced.call(lambda c: c.start_run("greet", {"name": "ada"}, env="prod", wait=30))
    assert greet["status"] == "completed"
    onboard = traced.call(lambda c: c.start_run("onboard", {"name": "grace"}, env="prod"))
    traced.wait_for(onboard["id"], {"suspended"})
    # A second waiting run resumes only after a server restart: its trace must carry on.
    later = traced.call(lambda c: c.start_run("onboard", {"name": "alan"}, env="prod"))
    traced.wait_for(later["id"], {"suspended"})
    traced.call(lambda c: c.signal(onboard["id"], "approval", {"ok": True}))
    traced.wait_for(onboard["id"], {"completed"})
    receiver.wait_for(onboard["id"], 6)
    traced.stop()
    traced.start()
    traced.call(lambda c: c.signal(later["id"], "approval", {"ok": False}))
    traced.wait_for(later["id"], {"completed"})
    receiver.wait_for(later["id"], 6)
    traced.stop()  # flushes: exact counts below also prove nothing is exported twice

    attempts, entries = _check_run(receiver.of_run(greet["id"]), greet["id"], dep)
    assert [a.name for a in attempts] == ["attempt greet"]
    (attempt,) = attempts
    assert attempt.attributes["tether.workflow"] == "greet"
    assert attempt.attributes["tether.attempt.outcome"] == "completed" and not attempt.error
    assert list(entries) == [0]
    step = entries[0]
    assert step.name == "step greeting" and step.parent_id == attempt.span_id
    assert step.attributes["tether.entry.kind"] == "step" and step.attributes["tether.entry.name"] == "greeting"
    assert step.attributes["tether.attempt"] == 1
    assert attempt.start <= step.start <= step.end <= attempt.end

    for run in (onboard, later):
        attempts, entries = _check_run(receiver.of_run(run["id"]), run["id"], dep)
        first, second = attempts  # before the signal, and after it
        assert [a.attributes["tether.attempt.outcome"] for a in attempts] == ["suspended", "completed"]
        assert first.end <= second.start
        assert {i: e.name for i, e in entries.items()} == {
            0: "step greeting",
            1: "state stage",
            2: "signal approval",
            3: "state stage",
        }
        assert [entries[i].parent_id for i in range(4)] == [
            first.span_id,
            first.span_id,
            second.span_id,
            second.span_id,
        ]
        assert [entries[i].attributes["tether.attempt"] for i in range(4)] == [1, 1, 1, 2]
        wait = entries[2]
        # The wait spans from its append in the first attempt to the signal's arrival.
        assert first.start <= wait.start <= first.end and wait.end <= second.start
        assert wait.end - wait.start > 0


def test_a_server_with_tracing_off_exports_nothing(tmp_path: Path, receiver: Receiver) -> None:
    # The endpoint is set, so only the off switch stands between the server and the receiver.
    proc = ServerProcess(
        tmp_path / "data",
        tmp_path / "server.log",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SDK_DISABLED": "true"},
    )
    proc.start()
    try:
        shutil.copytree(EXAMPLE, tmp_path / "hello")
        proc.call(lambda c: c.deploy(tmp_path / "hello", env="prod"))
        run = proc.call(lambda c: c.start_run("greet", {"name": "ada"}, env="prod", wait=30))
        assert run["status"] == "completed"
    finally:
        proc.stop()
    assert receiver.requests == []


NO_EXTRA = """
import sys
from tether.errors import TetherError
from tether.server.app import create_app
from tether.server.tracing import Tracing, open_tracing

async def journal(tenant_id, run_id):
    return []

assert type(open_tracing(journal=journal)) is Tracing
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported although tracing is off"
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import os
os.environ["TETHER_OTEL"] = "1"
try:
    open_tracing(journal=journal)
except TetherError as exc:
    print(exc.message)
"""


def test_tracing_off_imports_no_opentelemetry_and_on_without_the_extra_says_what_to_install() -> None:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    done = subprocess.run([sys.executable, "-c", NO_EXTRA], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tracing needs the otel extra: pip install 'tether[otel]'"
