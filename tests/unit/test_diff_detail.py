"""A signature change says which parameters changed, not two identical truncated schemas."""

from __future__ import annotations

import tether
from tether.core.manifest import diff


def manifest(with_currency: bool) -> dict:  # type: ignore[type-arg]
    app = tether.App("fraud")
    if with_currency:

        async def score(amount: int, currency: str) -> float:
            return 0.0
    else:

        async def score(amount: int) -> float:  # type: ignore[misc]
            return 0.0

    app.tool(score)
    return app.manifest()


def test_signature_change_detail_shows_what_changed() -> None:
    (change,) = diff(manifest(False), manifest(True))
    assert (change.change, change.detail) == (
        "signature changed",
        "input_schema: added currency; now required: currency",
    )


def test_long_descriptions_are_shown_around_their_first_difference() -> None:
    old = {"components": {"t": {"kind": "tool", "description": "x" * 200 + " from 0 to 10."}}}
    new = {"components": {"t": {"kind": "tool", "description": "x" * 200 + " from 0 to 100."}}}
    (change,) = diff(old, new)
    assert "0 to 10." in change.detail and "0 to 100." in change.detail
