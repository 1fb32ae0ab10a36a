"""Queries: read-only handlers declared on a workflow, answered from a run's journal.

The runtime sends a query to the run's **pinned** deployment (its worker is started on demand,
as for a resumed run) with the run's journal, as for a dry run. The deployment rebuilds what
the journal says — the run's input, its durable state (``ctx.set``) as of the last entry, the
entries themselves — into a :class:`QueryContext` and calls the handler. Nothing is appended
and the run is not touched: the request carries no attempt token, and a handler that issues a
journaled command (a step, a sleep, a signal wait, ``ctx.now()``...) is refused at the call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from tether.core.journal import EntryKind, JournalEntry
from tether.errors import QueryRefusedError, SchemaError
from tether.protocol import InvokeRequest, InvokeResponse
from tether.sdk._attempt import describe_validation
from tether.sdk.context import Context, RunInfo

if TYPE_CHECKING:
    import uuid

    from tether.sdk.agents import AgentDefinition
    from tether.sdk.app import App, QueryDefinition

T = TypeVar("T")
QUERY_TIMEOUT = 30.0
"""Seconds an async handler may take before the query fails (it holds a caller's request)."""


class QueryContext(Context):
    """What a query handler receives: the run as its journal left it, read-only.

    Example::

        @app.query(review)
        async def progress(ctx: tether.QueryContext) -> dict:
            return {"stage": ctx.state.get("stage"), "entries": len(ctx.journal)}

    Every journaled method of :class:`tether.Context` raises :class:`tether.errors.QueryRefusedError`
    here: a query never adds to the journal or changes the run.
    """

    def __init__(self, *, info: RunInfo, query: str, input: Mapping[str, Any], journal: Sequence[JournalEntry]) -> None:
        """Build the context from the run's input and journal (the runtime does this)."""
        self._info = info
        self._query = query
        self._input = MappingProxyType(dict(input))
        self._journal = tuple(journal)
        state: dict[str, Any] = {}
        for entry in self._journal:
            if entry.kind == EntryKind.STATE and entry.completed and entry.error is None:
                state[entry.name] = entry.result
        self._state = MappingProxyType(state)

    @property
    def info(self) -> RunInfo:
        """The run id, its pinned deployment, and the number of the run's latest attempt."""
        return self._info

    @property
    def input(self) -> Mapping[str, Any]:
        """The run's input, as JSON."""
        return self._input

    @property
    def state(self) -> Mapping[str, Any]:
        """The run's durable state (every ``ctx.set``) as of the journal's last entry, as JSON."""
        return self._state

    @property
    def journal(self) -> Sequence[JournalEntry]:
        """The run's journal entries, by index."""
        return self._journal

    def _refuse(self, what: str) -> NoReturn:
        raise QueryRefusedError(
            f"query {self._query} of workflow {self._info.workflow} called {what}, a journaled command: a query "
            "is read-only and may not add to the run's journal. Read ctx.state, ctx.input or ctx.journal instead, "
            "and let the workflow record what the query needs with ctx.set"
        )

    def step(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        self._refuse(f"ctx.step({getattr(fn, '__name__', fn)!s})")

    def run(self, name: str, fn: Callable[[], Awaitable[T] | T], /) -> Awaitable[T]:
        self._refuse(f"ctx.run({name!r})")

    def now(self) -> datetime:
        self._refuse("ctx.now()")

    def uuid(self) -> uuid.UUID:
        self._refuse("ctx.uuid()")

    def random(self) -> float:
        self._refuse("ctx.random()")

    def sleep(self, duration: timedelta | float, /) -> Awaitable[None]:
        self._refuse("ctx.sleep()")

    def signal(self, name: str, /, *, timeout: timedelta | float | None = None) -> Awaitable[Any]:
        self._refuse(f"ctx.signal({name!r})")

    def set(self, key: str, value: Any, /) -> None:
        self._refuse(f"ctx.set({key!r})")

    async def agent(self, agent: AgentDefinition, prompt: str, /) -> Any:
        self._refuse(f"ctx.agent({getattr(agent, 'name', agent)!s})")

    def continue_as_new(self, input: dict[str, Any] | None = None, /, *, upgrade: bool = True) -> NoReturn:
        self._refuse("ctx.continue_as_new()")

    def child(
        self, workflow: Callable[..., Awaitable[T]] | str, input: dict[str, Any] | None = None, /
    ) -> Awaitable[T]:
        self._refuse(f"ctx.child({getattr(workflow, '__name__', workflow)!s})")


def _failed(kind: str, message: str) -> InvokeResponse:
    return {"outcome": "failed", "error": {"type": kind, "message": message}}


async def answer_query(app: App, request: InvokeRequest) -> InvokeResponse:
    """Answer ``request["query"]`` for the run in ``request``: ``answered`` with the output, or
    ``failed`` with why (an unknown query, input that does not fit, a refused command, an
    exception of the handler)."""
    call = request.get("query")
    assert call is not None
    workflow = app.get(request["component"], "workflow")
    if workflow is None:
        return _failed("UnknownWorkflow", f"no workflow {request['component']!r}")
    found: QueryDefinition | None = workflow.queries.get(call["name"])
    if found is None:
        declared = ", ".join(sorted(workflow.queries)) or "none"
        return _failed(
            "UnknownQuery", f"workflow {workflow.name} declares no query {call['name']!r}; it declares: {declared}"
        )
    try:
        model = found.input_model.model_validate(call.get("input") or {})
    except ValidationError as exc:
        return _failed(SchemaError.__name__, f"input of query {found.name}: {describe_validation(exc)}")
    kwargs = {name: getattr(model, name) for name in found.param_names}
    ctx = QueryContext(
        info=RunInfo(
            run_id=request["run_id"],
            workflow=workflow.name,
            deployment_id=request["deployment_id"],
            deployment_label=request["deployment_label"],
            attempt=request["attempt"],
        ),
        query=found.name,
        input=request["input"],
        journal=[JournalEntry.from_json(dict(e)) for e in request["journal"]],
    )
    try:
        value = found.fn(ctx, **kwargs)
        if inspect.isawaitable(value):
            value = await asyncio.wait_for(value, QUERY_TIMEOUT)
        output = to_jsonable_python(found.output.validate_python(value))
    except QueryRefusedError as exc:
        return _failed(QueryRefusedError.__name__, exc.message)
    except TimeoutError:
        return _failed(
            "QueryTimeout",
            f"query {found.name} did not answer within {QUERY_TIMEOUT:g}s: a query reads the journal; "
            "it should not wait on anything",
        )
    except ValidationError as exc:
        return _failed(
            SchemaError.__name__,
            f"query {found.name} answered a value its return type refuses: {describe_validation(exc)}",
        )
    except Exception as exc:
        return _failed(type(exc).__name__, str(exc))
    return {"outcome": "answered", "output": output}
