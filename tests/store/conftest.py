"""The store contract suite: fixtures shared by every backend.

``TETHER_TEST_STORE`` picks the backend (``sqlite`` by default). Each test gets a fresh
store; tests are plain functions that hand an async body to ``run``, which executes it in
one event loop and closes the store in that same loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from tests._postgres import fresh_schema, postgres_url
from tether.store import Store, open_store

if TYPE_CHECKING:
    from tether.protocol import NewEntry
    from tether.store import Deployment, Run
    from tether.store.base import AttemptStart

T = TypeVar("T")

IMPLEMENTED = ("sqlite", "postgres")
TENANT = "acme"


def _kinds() -> list[str]:
    """The backends to run the suite on: ``TETHER_TEST_STORE`` if set, else SQLite, and
    PostgreSQL too where ``TETHER_TEST_POSTGRES_URL`` names one (always in CI)."""
    chosen = os.environ.get("TETHER_TEST_STORE")
    if chosen:
        return [chosen]
    if os.environ.get("TETHER_TEST_POSTGRES_URL") or os.environ.get("CI") == "true":
        return ["sqlite", "postgres"]
    return ["sqlite"]


@pytest.fixture(params=_kinds())
def store_kind(request: pytest.FixtureRequest) -> str:
    """The backend under test, shown in the test id."""
    kind: str = request.param
    if kind not in IMPLEMENTED:
        pytest.fail(
            f"TETHER_TEST_STORE={kind!r}: that store backend is not implemented (implemented: "
            f"{', '.join(IMPLEMENTED)})",
            pytrace=False,
        )
    return kind


@pytest.fixture
def reopen(store_kind: str, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Open another store on the test's database (a restart); the caller closes it."""
    if store_kind == "sqlite":
        data_dir = tmp_path / "data"
        yield lambda: open_store(data_dir)
        return
    url, drop = fresh_schema(postgres_url())
    node = "test-node"
    try:
        yield lambda: open_store(url, node_id=node)
    finally:
        drop()


class _Lifecycle:
    """Which store the test holds now (a restart replaces it) and whether it was closed."""

    def __init__(self, current: Store) -> None:
        self.current = current
        self.closed = False


@pytest.fixture
def _lifecycle(reopen: Callable[[], Store]) -> Iterator[_Lifecycle]:
    lifecycle = _Lifecycle(reopen())
    yield lifecycle
    if not lifecycle.closed:
        # The test never ran a body, so no event loop used the store.
        asyncio.run(lifecycle.current.close())


@pytest.fixture
def store(_lifecycle: _Lifecycle) -> Store:
    """A fresh, migrated, empty store."""
    return _lifecycle.current


@pytest.fixture
def run(_lifecycle: _Lifecycle) -> Callable[[Callable[[], Awaitable[T]]], T]:
    """Run an async body in a fresh event loop, then close the store in that loop."""

    def go(body: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            try:
                return await body()
            finally:
                _lifecycle.closed = True
                await _lifecycle.current.close()

        return asyncio.run(main())

    return go


def manifest(*workflows: str) -> dict[str, Any]:
    """A minimal manifest declaring ``workflows`` (and one non-workflow component)."""
    components: dict[str, Any] = {name: {"kind": "workflow"} for name in workflows}
    components["helper"] = {"kind": "step"}
    return {"app": "shop", "components": components}


class Kit:
    """Builders for deployments, runs, attempts and entries against one store."""

    tenant = TENANT

    def __init__(self, lifecycle: _Lifecycle, reopen: Callable[[], Store]) -> None:
        self._lifecycle = lifecycle
        self._reopen = reopen
        self.store = lifecycle.current

    async def restart(self) -> Store:
        """Close the store and open the same database again, as a restarted server does."""
        await self.store.close()
        self.store = self._lifecycle.current = self._reopen()
        return self.store

    async def deploy(
        self,
        deployment_id: str = "dep-a",
        *,
        env: str | None = None,
        tenant: str = TENANT,
        workflows: tuple[str, ...] = ("order", "ship"),
        bundle: bytes | None = None,
    ) -> Deployment:
        dep, _ = await self.store.create_deployment(
            tenant,
            deployment_id=deployment_id,
            kind="bundle" if bundle is not None else "endpoint",
            manifest=manifest(*workflows),
            manifest_digest="m-" + deployment_id,
            actor="alice",
            bundle=bundle,
            bundle_digest=None if bundle is None else "b-" + deployment_id,
            url=None if bundle is not None else "http://worker.invalid/" + deployment_id,
            env=env,
        )
        return dep

    async def new_run(self, workflow: str = "order", *, env: str = "prod", **kwargs: Any) -> Run:
        run, created = await self.store.create_run(self.tenant, workflow=workflow, input={"n": 1}, env=env, **kwargs)
        assert created
        return run

    async def claim(self, run_id: str, *, now: float | None = None) -> AttemptStart:
        """Claim ready runs; exactly ``run_id`` must be among them and nothing else."""
        starts = await self.store.claim_ready(time.time() + 1 if now is None else now, 1000)
        assert [s.run.id for s in starts] == [run_id]
        return starts[0]

    async def started(self, workflow: str = "order", *, env: str = "prod") -> AttemptStart:
        """A new run on ``env`` with its first attempt claimed."""
        return await self.claim((await self.new_run(workflow, env=env)).id)

    async def get(self, run_id: str) -> Run:
        return await self.store.get_run(self.tenant, run_id)

    @staticmethod
    def step(index: int, name: str = "charge", result: Any = "ok", digest: str = "d0") -> NewEntry:
        return {
            "index": index,
            "kind": "step",
            "name": name,
            "args_digest": digest,
            "completed": True,
            "result": result,
        }

    @staticmethod
    def sleep(index: int, seconds: float) -> NewEntry:
        return {
            "index": index,
            "kind": "sleep",
            "name": "sleep",
            "args_digest": f"s{seconds}",
            "completed": False,
            "args": {"seconds": seconds},
        }

    @staticmethod
    def wait_signal(index: int, name: str = "approve", timeout: float | None = None) -> NewEntry:
        return {
            "index": index,
            "kind": "signal",
            "name": name,
            "args_digest": f"t{timeout}",
            "completed": False,
            "args": {"timeout": timeout},
        }

    @staticmethod
    def child(index: int, workflow: str = "ship", child_input: Any = None) -> NewEntry:
        return {
            "index": index,
            "kind": "child",
            "name": workflow,
            "args_digest": "c0",
            "completed": False,
            "args": {"workflow": workflow, "input": child_input or {"parcel": index}},
        }


@pytest.fixture
def kit(_lifecycle: _Lifecycle, reopen: Callable[[], Store]) -> Kit:
    """Builders bound to ``store`` (and to its successor after :meth:`Kit.restart`)."""
    return Kit(_lifecycle, reopen)
