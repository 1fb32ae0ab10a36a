"""tether's pytest plugin, loaded by pytest wherever tether is installed (entry point ``pytest11``).

Fixtures:

- ``tether_harness``: make a :class:`~tether.testing.WorkflowHarness` for an app, replaying
  after every new entry by default (``tether_harness(app)``; ``always_replay=False`` to
  drive it straight through).
- ``scripted_model``: a :class:`~tether.testing.ScriptedModel` serving chat completions from
  the replies the test queues; agents of ``tether.Model`` without ``base_url`` call it.
- ``tether_server``: a real ``tether server`` (:class:`~tether.testing.TestServer`) on a
  temporary data directory, stopped after the test.

``async def test_...`` functions run on a fresh event loop, with no other plugin needed.
Tests marked for pytest-asyncio, anyio or trio are left to those plugins.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.sdk.app import App
from tether.testing._harness import WorkflowHarness
from tether.testing._model import ScriptedModel
from tether.testing._server import TestServer

_OTHER_RUNNERS = ("asyncio", "anyio", "trio")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test with :func:`asyncio.run` (unless another plugin owns it)."""
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    if any(pyfuncitem.get_closest_marker(name) is not None for name in _OTHER_RUNNERS):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(function(**arguments))
    return True


@pytest.fixture
def tether_harness() -> Callable[..., WorkflowHarness]:
    """Make a harness: ``tether_harness(app, always_replay=True, run_id="run-1")``."""

    def make(app: App, *, always_replay: bool = True, **options: Any) -> WorkflowHarness:
        return WorkflowHarness(app, always_replay=always_replay, **options)

    return make


@pytest.fixture
def scripted_model() -> Iterator[ScriptedModel]:
    """A scripted OpenAI-compatible model on loopback, in this process, for the test's duration."""
    with ScriptedModel() as model:
        yield model


@pytest.fixture
def tether_server(tmp_path: Path) -> Iterator[TestServer]:
    """A real ``tether server`` on a data directory under the test's ``tmp_path``."""
    with TestServer(tmp_path / "tether-data") as server:
        yield server
