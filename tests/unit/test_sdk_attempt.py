"""sdk._attempt driven directly, with a recording fake sink instead of the runtime."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tether
from tether.errors import FencedError
from tether.protocol import Completion, InvokeRequest, InvokeResponse, NewEntry
from tether.sdk._attempt import Attempt, JournalSink


class RecordingSink:
    """A minimal JournalSink: keeps every batch in order, completes nothing, fences on demand."""

    def __init__(self, *, fence: bool = False) -> None:
        self.batches: list[list[NewEntry]] = []
        self.fence = fence

    @property
    def entries(self) -> list[NewEntry]:
        return [entry for batch in self.batches for entry in batch]

    async def append(self, entries: list[NewEntry]) -> list[Completion]:
        if self.fence:
            raise FencedError("attempt 1 is stale")
        self.batches.append(list(entries))
        return []


@pytest.fixture
def recording_sink() -> RecordingSink:
    return RecordingSink()


app = tether.App("attempt")
finished: list[str] = []


@app.function
async def slow(name: str, delay: float) -> str:
    await asyncio.sleep(delay)
    finished.append(name)
    return name


@app.workflow
async def pair(ctx: tether.Context) -> list[str]:
    return list(await asyncio.gather(ctx.step(slow, "a", 0.05), ctx.step(slow, "b", 0.0)))


@app.workflow(signals={"approval": bool})
async def gated(ctx: tether.Context) -> str:
    first = await ctx.step(slow, "before", 0.0)
    ok = await ctx.signal("approval")
    return f"{first}:{ok}"


@app.workflow(signals={"approval": bool})
async def guarded(ctx: tether.Context) -> str:
    try:
        return f"approved: {await ctx.signal('approval')}"
    except Exception as exc:
        return f"swallowed {type(exc).__name__}"


def request(workflow: str, journal: list[dict[str, Any]] | None = None, **input: Any) -> InvokeRequest:
    return {
        "run_id": "run_1",
        "attempt": 1,
        "token": "t",
        "deployment_id": "dep_test",
        "deployment_label": "v1",
        "manifest_digest": app.manifest_digest(),
        "component": workflow,
        "input": input,
        "journal": journal or [],
        "runtime_url": "",
    }


def attempt(req: InvokeRequest, sink: JournalSink) -> InvokeResponse:
    async def go() -> InvokeResponse:
        return await Attempt(app, req, sink).execute()

    return asyncio.run(go())


def as_journal(entries: list[NewEntry], **changes: Any) -> list[dict[str, Any]]:
    return [{**entry, **changes} for entry in entries]


def test_gather_indexes_follow_issue_order_not_completion(recording_sink: RecordingSink) -> None:
    finished.clear()
    response = attempt(request("pair"), recording_sink)
    assert response == {"outcome": "completed", "output": ["a", "b"]}
    assert finished == ["b", "a"]
    appended = [(e["index"], e["result"]) for e in recording_sink.entries]
    assert appended == [(1, "b"), (0, "a")]


def test_gather_replays_from_the_journal(recording_sink: RecordingSink) -> None:
    first = RecordingSink()
    attempt(request("pair"), first)
    finished.clear()
    response = attempt(request("pair", as_journal(first.entries)), recording_sink)
    assert response == {"outcome": "completed", "output": ["a", "b"]}
    assert finished == []
    assert recording_sink.entries == []


def test_a_signal_wait_suspends_then_completes(recording_sink: RecordingSink) -> None:
    response = attempt(request("gated"), recording_sink)
    assert response == {"outcome": "suspended", "waiting_on": [1]}
    kinds = [(e["index"], e["kind"], e["completed"]) for e in recording_sink.entries]
    assert kinds == [(0, "step", True), (1, "signal", False)]

    journal = as_journal(recording_sink.entries)
    journal[1].update(completed=True, result=True)
    second = RecordingSink()
    assert attempt(request("gated", journal), second) == {"outcome": "completed", "output": "before:True"}
    assert second.entries == []


def test_an_open_signal_in_the_journal_suspends_again(recording_sink: RecordingSink) -> None:
    first = RecordingSink()
    attempt(request("gated"), first)
    response = attempt(request("gated", as_journal(first.entries)), recording_sink)
    assert response == {"outcome": "suspended", "waiting_on": [1]}
    assert recording_sink.entries == []


def test_a_refused_append_ends_the_attempt_fenced() -> None:
    response = attempt(request("pair"), RecordingSink(fence=True))
    assert response == {"outcome": "fenced", "error": {"type": "Fenced", "message": "attempt 1 is stale"}}


def test_unknown_workflow_fails(recording_sink: RecordingSink) -> None:
    response = attempt(request("nope"), recording_sink)
    assert response == {"outcome": "failed", "error": {"type": "UnknownWorkflow", "message": "no workflow 'nope'"}}


def test_bad_input_fails_with_the_field_named(recording_sink: RecordingSink) -> None:
    response = attempt(request("pair", unexpected=1), recording_sink)
    assert response["outcome"] == "failed"
    assert response["error"]["type"] == "SchemaError"
    assert "unexpected" in response["error"]["message"]


class BrokenSink:
    """The runtime is unreachable: every append fails like a transport error would."""

    async def append(self, entries: list[NewEntry]) -> list[Completion]:
        raise ConnectionError("runtime unreachable")


def test_a_failed_append_ends_the_attempt_for_a_retry_and_never_fails_the_run() -> None:
    response = attempt(request("gated"), BrokenSink())
    assert response["outcome"] == "fenced"
    assert "journal append failed: ConnectionError: runtime unreachable" in response["error"]["message"]


class BufferedSink(RecordingSink):
    """The runtime had a signal buffered: the wait's append completes it at once."""

    def __init__(self, payload: Any) -> None:
        super().__init__()
        self.payload = payload

    async def append(self, entries: list[NewEntry]) -> list[Completion]:
        await super().append(entries)
        return [
            {"index": e["index"], "result": self.payload, "error": None}
            for e in entries
            if e["kind"] == "signal" and not e["completed"]
        ]


def _rejected(response: InvokeResponse) -> str:
    assert response["outcome"] == "stuck", response
    assert response["error"]["type"] == "SignalRejected"
    return response["error"]["message"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_journaled_signal_payload_the_code_rejects_ends_the_attempt_stuck(
    recording_sink: RecordingSink, dry_run: bool
) -> None:
    first = RecordingSink()
    attempt(request("gated"), first)
    journal = as_journal(first.entries)
    journal[1].update(completed=True, result={"decision": "yes"})
    req = request("gated", journal)
    if dry_run:
        req["dry_run"] = True
    message = _rejected(attempt(req, recording_sink))
    assert message.startswith("entry 1: signal 'approval' carries a payload that workflow gated on v1 rejects (")
    assert "valid boolean" in message and 'payload: {"decision":"yes"}' in message
    assert "tether runs move RUN --to DEPLOYMENT" in message
    assert recording_sink.entries == []


def test_workflow_code_cannot_catch_a_rejected_signal_payload(recording_sink: RecordingSink) -> None:
    first = RecordingSink()
    attempt(request("guarded"), first)
    journal = as_journal(first.entries)
    journal[0].update(completed=True, result=[1])
    assert "entry 0" in _rejected(attempt(request("guarded", journal), recording_sink))
    # A payload the code accepts goes through the same wait untouched.
    journal[0].update(result=True)
    assert attempt(request("guarded", journal), recording_sink) == {"outcome": "completed", "output": "approved: True"}


def test_a_buffered_signal_payload_the_code_rejects_ends_the_attempt_stuck() -> None:
    sink = BufferedSink({"decision": "yes"})
    message = _rejected(attempt(request("gated"), sink))
    assert message.startswith("entry 1: signal 'approval'")
    # The wait's entry was appended (the runtime holds the payload now); nothing after it.
    assert [(e["index"], e["kind"]) for e in sink.entries] == [(0, "step"), (1, "signal")]
