"""The manual split into named fields: what manifest diffs and replay mismatches name."""

from __future__ import annotations

from typing import Any

from tether.core.journal import Command, EntryKind, JournalEntry, compare
from tether.core.manifest import diff, manifest_digest
from tether.core.manual import changed_fields, field_digests, manual_fields


def a_manual(description: str = "Returns a risk score from 0 to 10.", **more: Any) -> dict[str, Any]:
    return {
        "framework": "openai-agents",
        "instructions": "Decide whether to block.",
        "model": {"name": "gpt-4o-mini", "settings": {}},
        "tools": [
            {"name": "compute_risk_score", "description": description, "parameters": {"type": "object"}},
            {"name": "lookup", "description": "Look a customer up.", "parameters": {"type": "object"}},
        ],
        "handoffs": [],
        "output_schema": None,
        **more,
    }


def test_fields_name_each_tool_part_in_both_manual_forms() -> None:
    fields = manual_fields(a_manual())
    assert fields["tool compute_risk_score description"] == "Returns a risk score from 0 to 10."
    assert fields["tools order"] == ["compute_risk_score", "lookup"]
    assert fields["instructions"] == "Decide whether to block."
    # tether's own agents record tools as OpenAI function specs: the same fields come out.
    builtin = {"tools": [{"type": "function", "function": {"name": "add", "description": "Adds.", "parameters": {}}}]}
    assert manual_fields(builtin) == {
        "tool add description": "Adds.",
        "tool add parameters": {},
        "tools order": ["add"],
    }


def test_changes_are_named_field_by_field() -> None:
    old, new = a_manual(), a_manual("Returns a risk score from 0 to 100.")
    assert changed_fields(manual_fields(old), manual_fields(new)) == [
        ("tool compute_risk_score description changed", "tool compute_risk_score description")
    ]
    # The same from digests alone (what the journal records).
    assert [label for label, _ in changed_fields(field_digests(old), field_digests(new))] == [
        "tool compute_risk_score description changed"
    ]
    fewer = a_manual()
    fewer["tools"] = fewer["tools"][:1]
    assert [label for label, _ in changed_fields(manual_fields(old), manual_fields(fewer))] == ["tool lookup removed"]
    assert [label for label, _ in changed_fields(manual_fields(fewer), manual_fields(old))] == ["tool lookup added"]
    swapped = a_manual(instructions="Always allow.")
    assert [label for label, _ in changed_fields(manual_fields(old), manual_fields(swapped))] == [
        "instructions changed"
    ]


def agent_entry(manual: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "agent",
        "name": "fraud",
        "framework": "openai-agents",
        "manual": manual,
        "manual_digest": manifest_digest(manual),
    }


def test_the_manifest_diff_names_the_agent_and_the_field() -> None:
    old = {"app": "fraud", "components": {"fraud": agent_entry(a_manual())}}
    new = {"app": "fraud", "components": {"fraud": agent_entry(a_manual("Returns a risk score from 0 to 100."))}}
    changes = diff(old, new)
    assert [(c.component, c.change) for c in changes] == [("fraud", "tool compute_risk_score description changed")]
    assert "0 to 10." in changes[0].detail and "0 to 100." in changes[0].detail
    assert diff(old, old) == []


def test_a_replay_through_another_manual_names_the_field() -> None:
    old, new = a_manual(), a_manual("Returns a risk score from 0 to 100.")
    entry = JournalEntry(
        0,
        EntryKind.LLM,
        "fraud",
        "ab12ab12ab12ab12",
        manual_digest=manifest_digest(old),
        result={"choices": [], "_manual": field_digests(old)},
    )
    issued = Command(EntryKind.LLM, "fraud", "ab12ab12ab12ab12", manifest_digest(new), field_digests(new))
    mismatch = compare(entry, issued)
    assert mismatch is not None and mismatch.reason == "manual"
    assert mismatch.detail == "manual of agent fraud: tool compute_risk_score description changed"
    assert mismatch.render().endswith("; manual of agent fraud: tool compute_risk_score description changed")
    assert mismatch.to_json()["detail"] == mismatch.detail
    # A journal written before fields were recorded still mismatches, without naming one.
    bare = JournalEntry(0, EntryKind.LLM, "fraud", "ab12ab12ab12ab12", manual_digest=manifest_digest(old))
    plain = compare(bare, issued)
    assert plain is not None and plain.reason == "manual" and plain.detail is None
