"""core.journal: canonical JSON, digests, entry round trips and the comparison."""

from __future__ import annotations

import pytest

from tether.core.journal import (
    WAITING_KINDS,
    Command,
    EntryKind,
    JournalEntry,
    Mismatch,
    args_digest,
    canonical_json,
    compare,
)


def test_canonical_json_sorts_keys_at_every_depth() -> None:
    assert canonical_json({"b": 1, "a": {"d": [2, 1], "c": None}}) == b'{"a":{"c":null,"d":[2,1]},"b":1}'


def test_canonical_json_ignores_insertion_order() -> None:
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})


def test_args_digest_is_16_hex_digits_and_order_independent() -> None:
    digest = args_digest({"amount": 120, "currency": "EUR"})
    assert len(digest) == 16
    assert int(digest, 16) >= 0
    assert digest == args_digest({"currency": "EUR", "amount": 120})


def test_args_digest_distinguishes_values_and_types() -> None:
    assert args_digest({"n": 1}) != args_digest({"n": 2})
    assert args_digest({"n": 1}) != args_digest({"n": "1"})
    assert args_digest(None) != args_digest({})


def test_waiting_kinds() -> None:
    assert {EntryKind.SLEEP, EntryKind.SIGNAL, EntryKind.CHILD} == WAITING_KINDS


def test_describe_shows_kind_name_and_short_digest() -> None:
    command = Command("step", "compute_risk_score", "ab12cd34ef56ab78")
    assert command.describe() == "step compute_risk_score(#ab12)"
    llm = Command("llm", "reviewer", "ab12cd34ef56ab78", manual_digest="0123456789abcdef")
    assert llm.describe() == "llm reviewer(#ab12) manual #01234567"


def test_entry_json_round_trip() -> None:
    entry = JournalEntry(
        index=3,
        kind="llm",
        name="reviewer",
        args_digest="ab12cd34ef56ab78",
        result={"text": "ok"},
        manual_digest="ffff0000ffff0000",
        args={"prompt": "hi"},
        attempt=2,
        created_at=10.5,
        completed_at=11.0,
        extra={"model": "m"},
    )
    assert JournalEntry.from_json(entry.to_json()) == entry


def test_entry_json_omits_empty_optional_fields() -> None:
    data = JournalEntry(0, "now", "now", args_digest(None), result=1.0).to_json()
    assert "manual_digest" not in data
    assert "args" not in data
    assert "extra" not in data
    assert JournalEntry.from_json(data).command == Command("now", "now", args_digest(None))


def test_entry_from_minimal_json_defaults_to_completed() -> None:
    entry = JournalEntry.from_json({"index": 0, "kind": "step", "name": "a", "args_digest": "00"})
    assert entry.completed
    assert entry.extra == {}


ENTRY = JournalEntry(1, "step", "score", "468b000000000000")


@pytest.mark.parametrize(
    ("command", "reason", "issued"),
    [
        (Command("run", "score", "468b000000000000"), "kind", "run score(#468b)"),
        (Command("step", "score_v2", "468b000000000000"), "name", "step score_v2(#468b)"),
        (Command("step", "score", "9f01000000000000"), "args", "step score(#9f01)"),
        (Command("step", "score", "468b000000000000", "aaaa0000"), "manual", "step score(#468b) manual #aaaa0000"),
    ],
)
def test_compare_names_the_first_differing_part(command: Command, reason: str, issued: str) -> None:
    mismatch = compare(ENTRY, command)
    assert mismatch == Mismatch(1, "step score(#468b)", issued, reason)
    assert mismatch.render() == f"entry 1: journal has step score(#468b), code issued {issued}"


def test_compare_kind_wins_over_name() -> None:
    mismatch = compare(ENTRY, Command("run", "other", "9f01000000000000"))
    assert mismatch is not None
    assert mismatch.reason == "kind"


def test_compare_same_command_is_no_mismatch() -> None:
    assert compare(ENTRY, ENTRY.command) is None


def test_missing_mismatch_renders_and_round_trips() -> None:
    mismatch = Mismatch(4, "step decide(#0a0b)", None, "missing")
    assert mismatch.render() == "entry 4: journal has step decide(#0a0b), code finished without issuing it"
    data = mismatch.to_json()
    assert data["message"] == mismatch.render()
    assert Mismatch.from_json(data) == mismatch
