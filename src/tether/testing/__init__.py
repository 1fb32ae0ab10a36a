"""Test tether workflows in memory: no server, no database, no network.

:class:`WorkflowHarness` drives one run attempt after attempt through an in-memory journal
(:class:`MemorySink`) that follows the runtime store's rules, and can force a full replay
after every new entry (``always_replay=True``) to prove a workflow deterministic.
:func:`replay` checks a recorded journal against the current code.

Example::

    from tether.testing import WorkflowHarness

    async def test_greet() -> None:
        harness = WorkflowHarness(app, always_replay=True)
        result = await harness.run("greet", {"name": "ada"})
        assert result.output == "hello ada"
"""

from __future__ import annotations

from tether.testing._harness import RunResult, WorkflowHarness, replay
from tether.testing._sink import MemorySink

__all__ = [
    "MemorySink",
    "RunResult",
    "WorkflowHarness",
    "replay",
]
