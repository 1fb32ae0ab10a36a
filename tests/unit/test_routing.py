"""core.routing.draw: weighted, sticky per key."""

from __future__ import annotations

from collections import Counter

import pytest

from tether.core.routing import Target, draw

SPLIT = [Target("dep_old", 3), Target("dep_new", 1)]


def test_single_target_always_wins() -> None:
    assert {draw([Target("dep_a", 5)], f"k{i}") for i in range(50)} == {"dep_a"}


def test_draw_is_sticky_per_key() -> None:
    for i in range(200):
        key = f"run_{i}"
        assert draw(SPLIT, key) == draw(SPLIT, key) == draw(list(SPLIT), key)


def test_weights_are_honoured_over_2000_keys() -> None:
    counts = Counter(draw(SPLIT, f"key-{i}") for i in range(2000))
    assert set(counts) == {"dep_old", "dep_new"}
    assert counts["dep_new"] / 2000 == pytest.approx(0.25, abs=0.04)


def test_three_way_split() -> None:
    targets = [Target("a", 1), Target("b", 1), Target("c", 2)]
    counts = Counter(draw(targets, f"key-{i}") for i in range(2000))
    assert counts["a"] / 2000 == pytest.approx(0.25, abs=0.04)
    assert counts["b"] / 2000 == pytest.approx(0.25, abs=0.04)
    assert counts["c"] / 2000 == pytest.approx(0.5, abs=0.04)


def test_no_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one target"):
        draw([], "k")


@pytest.mark.parametrize("weight", [0, -1])
def test_non_positive_weight_is_an_error(weight: int) -> None:
    with pytest.raises(ValueError, match="weight of dep_b must be positive"):
        draw([Target("dep_a", 1), Target("dep_b", weight)], "k")


def test_non_positive_weight_is_an_error_even_alone() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        draw([Target("dep_a", 0)], "k")
