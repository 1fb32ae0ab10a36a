"""Test tether apps: in memory, against a scripted model, or on a real server.

:class:`WorkflowHarness` drives one run attempt after attempt through an in-memory journal
(:class:`MemorySink`) that follows the runtime store's rules, and can force a full replay
after every new entry (``always_replay=True``) to prove a workflow deterministic.
:func:`replay` checks a journal against the current code; :func:`replay_export` does the same
for a run exported with ``tether runs export RUN > run.json`` (the offline sibling of
``tether deployments check``). :class:`ScriptedModel` answers agents' model calls from replies
a test queues; :class:`TestServer` is a real ``tether server`` on a temporary directory.

Installing tether registers a pytest plugin with the fixtures ``tether_harness``,
``scripted_model`` and ``tether_server``, and runs ``async def`` tests (see docs/testing.md).

Example (``hello.py`` is ``examples/hello/hello.py``)::

    from hello import app
    from tether.testing import WorkflowHarness

    async def test_greet() -> None:
        harness = WorkflowHarness(app, always_replay=True)
        result = await harness.run("greet", {"name": "ada"})
        assert result.output == "hello ada"
"""

from __future__ import annotations

from tether.testing._harness import (
    EXPORT_FORMAT,
    ReplayVerdict,
    RunResult,
    WorkflowHarness,
    load_export,
    replay,
    replay_export,
)
from tether.testing._model import ScriptedModel
from tether.testing._server import TestServer
from tether.testing._sink import MemorySink

__all__ = [
    "EXPORT_FORMAT",
    "MemorySink",
    "ReplayVerdict",
    "RunResult",
    "ScriptedModel",
    "TestServer",
    "WorkflowHarness",
    "load_export",
    "replay",
    "replay_export",
]
