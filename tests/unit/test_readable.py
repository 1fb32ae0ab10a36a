"""Journal entries in words (``tether runs show`` and the dashboard)."""

from __future__ import annotations

from typing import Any

from tether._readable import clip, signals_by_entry, summarize


def entry(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"index": 0, "kind": kind, "name": name, "completed": True, "result": None, "error": None, **fields}


def test_model_calls_read_as_the_tools_asked_for_or_the_answer() -> None:
    calls = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "1", "function": {"name": "compute_risk_score", "arguments": '{"amount": 120}'}}
                    ],
                }
            }
        ],
        "_manual": {"instructions": "x"},
    }
    assert summarize(entry("llm", "reviewer", result=calls)) == (
        "agent reviewer asked to call compute_risk_score(amount=120)"
    )
    answer = {"choices": [{"message": {"role": "assistant", "content": "block it"}}]}
    assert summarize(entry("llm", "reviewer", result=answer)) == "agent reviewer answered: block it"
    agents_sdk = {"output": [{"type": "function_call", "name": "lookup", "arguments": '{"q": "ada"}'}]}
    assert summarize(entry("llm", "a", result=agents_sdk)) == 'agent a asked to call lookup(q="ada")'
    agents_answer = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "done"}]}]}
    assert summarize(entry("llm", "a", result=agents_answer)) == "agent a answered: done"
    pydantic_ai = {"parts": [{"part_kind": "tool-call", "tool_name": "lookup", "args": {"q": "bob"}}]}
    assert summarize(entry("llm", "p", result=pydantic_ai)) == 'agent p asked to call lookup(q="bob")'


def test_a_signal_reads_with_its_sender_and_its_own_arrival_time() -> None:
    signals = [
        {"id": 1, "name": "approval", "payload": {"ok": True}, "created_at": 0.0, "sent_by": "token:alice@default"},
        {"id": 2, "name": "approval", "payload": {}, "created_at": 5.0, "sent_by": None, "consumed_by_entry": None},
    ]
    signals[0]["consumed_by_entry"] = 3
    taken = signals_by_entry(signals)
    assert list(taken) == [3]
    done = entry("signal", "approval", result={"ok": True}, created_at=99.0)
    assert summarize(done, taken[3]) == (
        'signal approval from token:alice@default, arrived 1970-01-01 00:00:00: {"ok": true}'
    )
    waiting = entry("signal", "approval", completed=False, args={"timeout": 604800})
    assert summarize(waiting) == "waiting for signal approval (times out after 7d)"
    timed_out = entry("signal", "approval", error={"type": "SignalTimeout", "message": "no signal"})
    assert summarize(timed_out) == "signal approval: SignalTimeout: no signal"


def test_steps_sleeps_children_and_values_read_as_what_they_did() -> None:
    step = entry("step", "greeting", args={"name": "ada"}, result="hello ada")
    assert summarize(step) == 'called greeting(name="ada") → "hello ada"'
    failed = entry("step", "charge", error={"type": "StepFailed", "message": "card declined"})
    assert summarize(failed) == "step charge failed: StepFailed: card declined"
    assert summarize(entry("sleep", "sleep", completed=False, args={"seconds": 3600})) == "sleeping 1h"
    assert summarize(entry("sleep", "sleep", args={"seconds": 1.5}, completed_at=60.0)).startswith("slept 1.5s, woke")
    child = entry("child", "onboard", result={"ok": 1}, extra={"child_run_id": "run_1.4"})
    assert summarize(child) == 'child onboard run run_1.4 returned {"ok": 1}'
    assert summarize(entry("state", "stage", result="done")) == 'set stage = "done"'
    assert summarize(entry("random", "random", result=0.25)) == "random = 0.25"


def test_clip_marks_what_it_cut() -> None:
    assert clip("abcdef", 10) == "abcdef"
    assert clip("abcdefghijkl", 5) == "abcd…"
