"""Shared fixtures of the unit layer: golden journals and the two replay modes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

JOURNALS = Path(__file__).parent.parent / "fixtures" / "journals"


@pytest.fixture
def golden() -> Callable[[str], dict[str, Any]]:
    """Load ``tests/fixtures/journals/<name>.json``."""

    def load(name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((JOURNALS / f"{name}.json").read_text())
        return doc

    return load


@pytest.fixture(params=[False, True], ids=["plain", "always_replay"])
def always_replay(request: pytest.FixtureRequest) -> bool:
    """Run an SDK test both ways: straight through, and replayed after every new entry."""
    return bool(request.param)
