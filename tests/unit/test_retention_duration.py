"""``--retention`` durations: a number and a unit, nothing else."""

from __future__ import annotations

import pytest

from tether.server.retention import parse_duration, parse_override, pass_interval


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("1.5h", 5400), (" 2d ", 172800)]
)
def test_durations_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "0d", "-1d", "d", "1w", "1 day", ""])
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="30d, 12h, 15m or 60s"):
        parse_duration(text)


def test_passes_come_often_enough_and_never_busy_loop() -> None:
    assert pass_interval(2) == 1.0
    assert pass_interval(60) == 6.0
    assert pass_interval(30 * 86400) == 300.0


def test_an_environment_override_names_the_environment_and_a_duration() -> None:
    assert parse_override("prod=90d") == ("prod", 90 * 86400)
    for text in ("prod", "=90d", "prod=90"):
        with pytest.raises(ValueError, match="prod=90d|30d, 12h"):
            parse_override(text)
