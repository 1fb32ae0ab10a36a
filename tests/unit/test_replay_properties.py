"""Properties of core.replay over generated journals (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.journal import Command, EntryKind, JournalEntry, args_digest
from tether.core.replay import Action, Replayer, replay

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
commands = st.builds(
    lambda kind, name, args: Command(kind.value, name, args_digest(args)),
    st.sampled_from(list(EntryKind)),
    st.sampled_from(["a", "b", "c", "fetch", "score"]),
    json_values,
)
programs = st.lists(commands, min_size=1, max_size=20)


def journal_of(program: list[Command]) -> list[JournalEntry]:
    return [
        JournalEntry(i, c.kind, c.name, c.args_digest, result={"i": i}, manual_digest=c.manual_digest)
        for i, c in enumerate(program)
    ]


@settings(max_examples=100)
@given(program=programs, times=st.integers(1, 5))
def test_replaying_any_number_of_times_is_all_replay(program: list[Command], times: int) -> None:
    journal = journal_of(program)
    for _ in range(times):
        replayer = Replayer(journal)
        decisions = [replayer.issue(i, c) for i, c in enumerate(program)]
        assert [d.action for d in decisions] == [Action.REPLAY] * len(program)
        assert [d.entry for d in decisions] == journal
        assert replayer.finish() is None


@settings(max_examples=200)
@given(program=programs, data=st.data())
def test_a_changed_command_is_detected_at_exactly_its_index(program: list[Command], data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(program) - 1), label="position")
    part = data.draw(st.sampled_from(["kind", "name", "args"]), label="part")
    original = program[position]
    if part == "kind":
        changed = replace(original, kind=data.draw(st.sampled_from([k.value for k in EntryKind if k != original.kind])))
    elif part == "name":
        changed = replace(original, name=original.name + "_v2")
    else:
        changed = replace(original, args_digest=args_digest(["changed", original.args_digest]))
    issued = [*program[:position], changed, *program[position + 1 :]]

    decisions = replay(journal_of(program), issued)

    assert [d.action for d in decisions] == [Action.REPLAY] * position + [Action.MISMATCH]
    mismatch = decisions[-1].mismatch
    assert mismatch is not None
    assert (mismatch.index, mismatch.reason) == (position, part)
    assert mismatch.render().startswith(f"entry {position}: journal has {original.describe()}, code issued ")


@given(program=programs)
def test_dropping_the_last_command_is_detected_by_finish(program: list[Command]) -> None:
    replayer = Replayer(journal_of(program))
    for index, command in enumerate(program[:-1]):
        assert replayer.issue(index, command).action is Action.REPLAY
    mismatch = replayer.finish()
    assert mismatch is not None
    last = len(program) - 1
    assert (mismatch.index, mismatch.issued, mismatch.reason) == (last, None, "missing")
    assert mismatch.render() == f"entry {last}: journal has {program[-1].describe()}, code finished without issuing it"


@given(program=programs, data=st.data())
def test_gaps_execute_and_recorded_gaps_finish_clean(program: list[Command], data: st.DataObject) -> None:
    gaps = data.draw(st.sets(st.integers(0, len(program) - 1)), label="gaps")
    journal = [e for e in journal_of(program) if e.index not in gaps]
    replayer = Replayer(journal)
    for index, command in enumerate(program):
        decision = replayer.issue(index, command)
        if index in gaps:
            assert decision.action is Action.EXECUTE
            replayer.record(JournalEntry(index, command.kind, command.name, command.args_digest))
        else:
            assert decision.action is Action.REPLAY
    assert replayer.finish() is None


@given(program=programs, data=st.data())
def test_open_entries_wait(program: list[Command], data: st.DataObject) -> None:
    open_ = data.draw(st.sets(st.integers(0, len(program) - 1)), label="open")
    journal = [replace(e, completed=e.index not in open_) for e in journal_of(program)]
    actions = [d.action for d in replay(journal, program)]
    assert actions == [Action.WAIT if i in open_ else Action.REPLAY for i in range(len(program))]


@given(program=programs, extra=commands)
def test_commands_beyond_the_journal_execute(program: list[Command], extra: Command) -> None:
    decisions = replay(journal_of(program), [*program, extra, extra])
    assert [d.action for d in decisions[-2:]] == [Action.EXECUTE, Action.EXECUTE]


@given(program=programs)
def test_after_a_mismatch_every_decision_repeats_it(program: list[Command]) -> None:
    replayer = Replayer(journal_of(program))
    first = replayer.issue(0, replace(program[0], name="other"))
    assert first.action is Action.MISMATCH
    for index, command in enumerate(program[1:], start=1):
        assert replayer.issue(index, command) == first
    assert replayer.finish() == first.mismatch


@settings(max_examples=100)
@given(program=programs, issued=programs, drop_last=st.booleans())
def test_the_wire_form_of_a_journal_decides_exactly_like_its_entries(
    program: list[Command], issued: list[Command], drop_last: bool
) -> None:
    journal = journal_of(program)
    from_entries = Replayer(journal)
    from_wire = Replayer(wire=[e.to_json() for e in journal])
    commands = issued[:-1] if drop_last else issued
    for index, command in enumerate(commands):
        by_entry, by_wire = from_entries.issue(index, command), from_wire.issue(index, command)
        assert by_wire == by_entry
        assert (by_wire.result, by_wire.error) == (by_entry.result, by_entry.error)
    assert from_wire.finish() == from_entries.finish()
