"""The implementation of :class:`Context` for one attempt of one run.

An attempt receives the run's journal, runs the workflow function, answers re-issued commands
from the journal through :class:`tether.core.replay.Replayer`, executes new ones and appends
their entries through a :class:`JournalSink`. It ends when the workflow returns or raises
(``completed``/``failed``), when the workflow only waits on timers, signals or children
(``suspended``), when the code disagrees with the journal (``mismatch``), when the code rejects
a signal payload it is given (``stuck``: the payload is durable, so only other code can take
it), or when the runtime refuses its appends (``fenced``).

Durability: a step's result is returned to the code only after the runtime acknowledged its
entry. Values produced synchronously (``now``, ``uuid``, ``random``, ``set``) are buffered and
made durable before the next side effect runs and before the attempt ends, so no side effect
ever depends on a value that a replay could produce differently.
"""

from __future__ import annotations

import asyncio
import inspect
import random as _random
import time
import traceback
import uuid as _uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, Protocol, TypeVar, cast

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from tether import _json
from tether.core.journal import MANUAL_KEY, Command, EntryKind, args_digest
from tether.core.manual import field_digests
from tether.core.replay import Action, Decision, Replayer
from tether.errors import (
    AgentError,
    ChildFailedError,
    FencedError,
    RunCancelledError,
    SchemaError,
    SignalTimeoutError,
    StepFailedError,
    TerminalError,
)
from tether.protocol import Completion, ErrorInfo, InvokeRequest, InvokeResponse, NewEntry
from tether.sdk.agents import AgentDefinition, complete
from tether.sdk.app import App, ComponentDefinition, RetryPolicy, definition_of
from tether.sdk.context import Context, RunInfo

T = TypeVar("T")

NO_ARGS = args_digest(None)
SUSPEND_SETTLE_TICKS = 4
"""Event-loop turns to let workflow code react before deciding it only waits."""


class JournalSink(Protocol):
    """Where an attempt appends entries: the runtime, over HTTP, or a test fake."""

    async def append(self, entries: list[NewEntry]) -> list[Completion]:
        """Make ``entries`` durable atomically; return completions of waiting entries.

        Raises:
            FencedError: the attempt is stale or an entry contradicts a durable one.
        """
        ...


class _Stop(BaseException):
    """Ends the attempt from inside workflow code (mismatch, fenced, a rejected signal payload);
    never caught by users."""


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new``: ends the run and starts a linked one.

    It derives from BaseException so that ``except Exception`` in workflow code does not
    swallow it; re-raise it if you catch everything.
    """

    def __init__(self, input: dict[str, Any], upgrade: bool) -> None:
        super().__init__("continue as new")
        self.input = input
        self.upgrade = upgrade


def error_info(exc: BaseException, *, with_traceback: bool = False) -> ErrorInfo:
    """The journaled/reported form of an exception."""
    info: ErrorInfo = {"type": type(exc).__name__, "message": str(exc)}
    if with_traceback:
        info["traceback"] = "".join(traceback.format_exception(exc))
    return info


def _sleep_revive(result: Any, error: ErrorInfo | None) -> None:
    if error is not None and error["type"] == "Cancelled":
        raise RunCancelledError


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def validated_input(definition: ComponentDefinition, data: Any) -> dict[str, Any]:
    """Validate a workflow's input object and return its typed keyword arguments.

    Raises:
        SchemaError: naming every offending field.
    """
    try:
        model = definition.input_model.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(f"input of {definition.name}: {describe_validation(exc)}") from None
    return {name: getattr(model, name) for name in definition.param_names}


def describe_validation(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: message`` pairs."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class Attempt(Context):
    """One attempt of one run; see the module docstring."""

    def __init__(self, app: App, request: InvokeRequest, sink: JournalSink) -> None:
        """Prepare the attempt; nothing runs until :meth:`execute`."""
        self._app = app
        self._request = request
        self._sink = sink
        self._workflow = app.get(request["component"], "workflow")
        self._replayer = Replayer(wire=request["journal"])
        self._next_index = 0
        self._buffer: list[NewEntry] = []
        self._buffer_appends: set[asyncio.Future[None]] = set()
        self._busy = 0
        self._waits: dict[int, tuple[asyncio.Future[Any], Callable[[Any, ErrorInfo | None], Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poke = asyncio.Event()
        self._fenced: str | None = None
        self._stuck: ErrorInfo | None = None
        """Why the attempt cannot go on with this code (a signal payload it rejects)."""
        self._revivers: dict[str, Callable[[Any, ErrorInfo | None], Any]] = {}
        self._resolved: dict[tuple[Any, tuple[str, ...]], ComponentDefinition] = {}
        self._manual_digests: dict[str, str] = {}
        self._manual_fields: dict[str, dict[str, str]] = {}
        self._dry_run = bool(request.get("dry_run"))
        self._dry_end: int | None = None
        """In a dry run: the first index the journal does not hold (where replay stopped)."""
        self._info = RunInfo(
            run_id=request["run_id"],
            workflow=request["component"],
            deployment_id=request["deployment_id"],
            deployment_label=request["deployment_label"],
            attempt=request["attempt"],
        )

    # --- the driver -------------------------------------------------------------------

    async def execute(self) -> InvokeResponse:
        """Run the attempt to one of its outcomes."""
        workflow = self._workflow
        if workflow is None:
            return {
                "outcome": "failed",
                "error": {"type": "UnknownWorkflow", "message": f"no workflow {self._request['component']!r}"},
            }
        try:
            kwargs = validated_input(workflow, self._request["input"])
        except SchemaError as exc:
            return {"outcome": "failed", "error": error_info(exc)}
        main: asyncio.Task[Any] = asyncio.create_task(workflow.fn(self, **kwargs))
        # The driver wakes when poked, and the workflow's end pokes it too: one event to wait
        # on, rather than a new waiter task and an asyncio.wait for every step.
        main.add_done_callback(lambda _: self._poke.set())
        self._poke.set()
        while True:
            await self._poke.wait()
            if self._stopped():
                return await self._abort(main)
            if main.done():
                return await self._finish(main)
            self._poke.clear()
            if self._only_waiting():
                for _ in range(SUSPEND_SETTLE_TICKS):
                    await asyncio.sleep(0)
                if self._stopped():
                    return await self._abort(main)
                if self._only_waiting() and not main.done():
                    return await self._suspend(main)

    def _stopped(self) -> bool:
        return (
            self._fenced is not None
            or self._stuck is not None
            or self._replayer.mismatch is not None
            or self._dry_end is not None
        )

    def _only_waiting(self) -> bool:
        return self._busy == 0 and any(not fut.done() for fut, _ in self._waits.values())

    async def _cancel_all(self, main: asyncio.Task[Any]) -> None:
        tasks = [main, *self._tasks]
        for task in tasks:
            task.cancel()
        # Gathering finished tasks too retrieves their exceptions (no "never retrieved" noise).
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _abort(self, main: asyncio.Task[Any]) -> InvokeResponse:
        await self._cancel_all(main)
        if self._fenced is not None:
            return {"outcome": "fenced", "error": {"type": "Fenced", "message": self._fenced}}
        if self._stuck is not None:
            return {"outcome": "stuck", "error": self._stuck}
        mismatch = self._replayer.mismatch
        if mismatch is None:
            assert self._dry_end is not None
            return {"outcome": "compatible", "replayed": self._dry_end}
        return {"outcome": "mismatch", "mismatch": mismatch.to_json()}

    async def _suspend(self, main: asyncio.Task[Any]) -> InvokeResponse:
        # Read what we wait on first: cancelling the workflow cancels the future it awaits.
        waiting = sorted(i for i, (fut, _) in self._waits.items() if not fut.done())
        await self._cancel_all(main)
        if self._dry_run:
            return {"outcome": "compatible", "replayed": self._next_index}
        try:
            await self._flush()
        except _Stop:
            return await self._abort(main)
        return {"outcome": "suspended", "waiting_on": waiting}

    async def _finish(self, main: asyncio.Task[Any]) -> InvokeResponse:
        # Commands issued but never awaited still complete and are journaled.
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._flush()
        except _Stop:
            return await self._abort(main)
        if self._stopped():
            return await self._abort(main)
        exc = main.exception()
        mismatch = self._replayer.finish()
        if mismatch is not None:
            return {"outcome": "mismatch", "mismatch": mismatch.to_json()}
        if self._dry_run:
            return {"outcome": "compatible", "replayed": self._next_index}
        if isinstance(exc, ContinueAsNew):
            return {"outcome": "continue_as_new", "input": exc.input, "upgrade": exc.upgrade}
        if exc is not None:
            return {"outcome": "failed", "error": error_info(exc, with_traceback=True)}
        result = main.result()
        if self._workflow is not None:
            try:
                self._workflow.output.validate_python(result)
            except ValidationError as err:
                # Declared '-> int', returned a string: the caller would read a value the
                # deployment's own schema says cannot be.
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}" for e in err.errors()[:5]
                )
                message = (
                    f"workflow {self._workflow.name} returned a value its declared return type rejects: {problems}"
                )
                return {"outcome": "failed", "error": {"type": "OutputInvalid", "message": message}}
        try:
            output = to_jsonable_python(result)
        except Exception as err:
            return {"outcome": "failed", "error": error_info(err)}
        return {"outcome": "completed", "output": output}

    # --- journal plumbing ----------------------------------------------------------------

    def _issue(self, command: Command) -> tuple[int, Decision]:
        index = self._next_index
        self._next_index += 1
        decision = self._replayer.issue(index, command)
        if decision.action is Action.EXECUTE and self._dry_run:
            # A dry run checks the journal and executes nothing: the code reached its end.
            self._dry_end = index
            decision = Decision(Action.MISMATCH)
        if decision.action is Action.MISMATCH:
            self._poke.set()
        return index, decision

    async def _append(self, entries: list[NewEntry]) -> None:
        batch = self._buffer + entries
        carries_buffer = bool(self._buffer)
        self._buffer = []
        marker: asyncio.Future[None] | None = None
        if carries_buffer:
            marker = asyncio.get_running_loop().create_future()
            self._buffer_appends.add(marker)
        try:
            completions = await self._sink.append(batch)
        except FencedError as exc:
            self._fenced = exc.message
            self._poke.set()
            raise _Stop from None
        except Exception as exc:
            # An append that failed (runtime unreachable, 5xx) is not the workflow's failure:
            # end the attempt; the runtime starts a new one that replays what is durable.
            self._fenced = f"journal append failed: {type(exc).__name__}: {exc}"
            self._poke.set()
            raise _Stop from None
        finally:
            if marker is not None:
                self._buffer_appends.discard(marker)
                marker.set_result(None)
        for completion in completions:
            self._complete(completion["index"], completion["result"], completion["error"])

    async def _flush(self) -> None:
        """Make every buffered value durable (and wait for appends already carrying some)."""
        if self._buffer:
            await self._append([])
        if self._buffer_appends:
            await asyncio.gather(*self._buffer_appends)

    def _complete(self, index: int, result: Any, error: ErrorInfo | None) -> None:
        found = self._waits.get(index)
        if found is None:
            return
        future, revive = found
        if future.done():
            return
        try:
            future.set_result(revive(result, error))
        except _Stop:
            pass  # The attempt ends (the driver was poked); the code never sees this result.
        except Exception as exc:
            future.set_exception(exc)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run a command's work as a task; the attempt counts as busy from this very moment.

        Counting from the spawn, not from the task's first step, matters: between the two, the
        driver could otherwise see only open waits and suspend on an entry never appended.
        """
        self._busy += 1
        task = asyncio.ensure_future(self._busy_while(coro))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def _busy_while(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._poke.set()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            # Mark the outcome as seen: the code that awaits it sees it anyway, and an attempt
            # that ends early must not log every task it abandoned.
            task.exception()

    def _done(self, revive: Callable[[Any, ErrorInfo | None], T], decision: Decision) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(revive(decision.result, cast(ErrorInfo | None, decision.error)))
        except _Stop:
            pass  # The attempt ends (the driver was poked); the code never sees this result.
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _never(self) -> asyncio.Future[Any]:
        """What an async command answers after a mismatch: the driver ends the attempt."""
        return asyncio.get_running_loop().create_future()

    def _waiting(
        self,
        index: int,
        decision: Decision,
        entry: NewEntry,
        revive: Callable[[Any, ErrorInfo | None], T],
    ) -> Awaitable[T]:
        """The shared path of the waiting kinds: sleep, signal, child."""
        if decision.action is Action.REPLAY:
            return self._done(revive, decision)
        if decision.action is Action.MISMATCH:
            return self._never()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waits[index] = (future, revive)
        if decision.action is Action.EXECUTE:
            self._spawn(self._append_waiting(entry))
        else:
            self._poke.set()
        return future

    async def _append_waiting(self, entry: NewEntry) -> None:
        await self._append([entry])

    # --- the Context ---------------------------------------------------------------------

    @property
    def info(self) -> RunInfo:
        return self._info

    def _resolve(self, fn: Any, kinds: tuple[str, ...]) -> ComponentDefinition:
        cached = self._resolved.get((fn, kinds))
        if cached is not None:
            return cached
        definition = definition_of(fn)
        name = fn if isinstance(fn, str) else (definition.name if definition else getattr(fn, "__name__", repr(fn)))
        found = self._app.get(name)
        if found is None or found.kind not in kinds:
            raise TypeError(
                f"{name!r} is not a registered {' or '.join(kinds)} of app {self._app.name}: "
                f"decorate it with @app.{kinds[0]}"
            )
        self._resolved[(fn, kinds)] = found
        return found

    def step(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        definition = self._resolve(fn, ("function", "tool"))
        if definition.takes_context:
            raise TypeError(
                f"tool {definition.name} takes the context, so it is not a step: "
                f"call it directly (await {definition.name}(ctx, ...)) or give it to an agent"
            )
        bound = definition.bind(args, kwargs)
        payload = to_jsonable_python(bound)
        command = Command(EntryKind.STEP, definition.name, args_digest(payload))
        index, decision = self._issue(command)
        revive = self._revivers.get(definition.name)
        if revive is None:
            revive = self._revivers[definition.name] = self._step_revive(definition)
        if decision.action is Action.REPLAY:
            return self._done(revive, decision)
        if decision.action is not Action.EXECUTE:
            return self._never()
        return self._spawn(
            self._execute(index, command, payload, lambda: definition.fn(**bound), definition.retry, revive)
        )

    def _step_revive(self, definition: ComponentDefinition) -> Callable[[Any, ErrorInfo | None], Any]:
        def revive(result: Any, error: ErrorInfo | None) -> Any:
            if error is not None:
                raise StepFailedError(definition.name, error["type"], error["message"])
            return definition.output.validate_python(result)

        return revive

    def run(self, name: str, fn: Callable[[], Awaitable[T] | T], /) -> Awaitable[T]:
        command = Command(EntryKind.RUN, name, NO_ARGS)
        index, decision = self._issue(command)

        def revive(result: Any, error: ErrorInfo | None) -> Any:
            if error is not None:
                raise StepFailedError(name, error["type"], error["message"])
            return result

        if decision.action is Action.REPLAY:
            return self._done(revive, decision)
        if decision.action is not Action.EXECUTE:
            return self._never()
        return self._spawn(self._execute(index, command, None, fn, RetryPolicy(), revive))

    async def _execute(
        self,
        index: int,
        command: Command,
        payload: Any,
        call: Callable[[], Any],
        retry: RetryPolicy,
        revive: Callable[[Any, ErrorInfo | None], T],
    ) -> T:
        await self._flush()
        began = time.monotonic()
        result, error, tries = await self._call(call, retry)
        entry: NewEntry = {
            "index": index,
            "kind": command.kind,
            "name": command.name,
            "args_digest": command.args_digest,
            "completed": True,
            "result": result,
            "error": error,
            "duration": round(time.monotonic() - began, 6),
        }
        if payload is not None:
            entry["args"] = payload
        if tries > 1:
            entry["tries"] = tries
        if command.manual_digest is not None:
            entry["manual_digest"] = command.manual_digest
        await self._append([entry])
        return revive(result, error)

    async def _call(self, call: Callable[[], Any], retry: RetryPolicy) -> tuple[Any, ErrorInfo | None, int]:
        """The action's JSON result or error, and how many tries it took."""
        tries = 0
        while True:
            tries += 1
            try:
                value = call()
                if inspect.isawaitable(value):
                    value = await value
                return to_jsonable_python(value), None, tries
            except TerminalError as exc:
                return None, error_info(exc), tries
            except Exception as exc:
                if tries >= retry.max_attempts:
                    return None, error_info(exc), tries
                await asyncio.sleep(retry.delay(tries))

    def _value(self, kind: EntryKind, produce: Callable[[], Any]) -> Any:
        index, decision = self._issue(Command(kind, kind.value, NO_ARGS))
        if decision.action is Action.REPLAY:
            return decision.result
        if decision.action is not Action.EXECUTE:
            raise _Stop
        value = produce()
        self._buffer.append(
            {
                "index": index,
                "kind": kind,
                "name": kind.value,
                "args_digest": NO_ARGS,
                "completed": True,
                "result": value,
            }
        )
        return value

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._value(EntryKind.NOW, time.time), tz=UTC)

    def uuid(self) -> _uuid.UUID:
        return _uuid.UUID(self._value(EntryKind.UUID, lambda: str(_uuid.uuid4())))

    def random(self) -> float:
        return float(self._value(EntryKind.RANDOM, _random.random))

    def set(self, key: str, value: Any, /) -> None:
        payload = to_jsonable_python(value)
        index, decision = self._issue(Command(EntryKind.STATE, key, args_digest(payload)))
        if decision.action is Action.REPLAY:
            return
        if decision.action is not Action.EXECUTE:
            raise _Stop
        self._buffer.append(
            {
                "index": index,
                "kind": EntryKind.STATE,
                "name": key,
                "args_digest": args_digest(payload),
                "completed": True,
                "result": payload,
            }
        )

    def sleep(self, duration: timedelta | float, /) -> Awaitable[None]:
        args = {"seconds": max(0.0, _seconds(duration))}
        command = Command(EntryKind.SLEEP, "sleep", args_digest(args))
        index, decision = self._issue(command)
        entry = self._pending_entry(index, command, args)
        return self._waiting(index, decision, entry, _sleep_revive)

    def signal(self, name: str, /, *, timeout: timedelta | float | None = None) -> Awaitable[Any]:
        assert self._workflow is not None
        adapter = self._workflow.signals.get(name)
        if adapter is None:
            raise TypeError(
                f"workflow {self._workflow.name} does not declare signal {name!r}: "
                f"add it to @app.workflow(signals={{{name!r}: PayloadType}})"
            )
        args = {"timeout": None if timeout is None else _seconds(timeout)}
        command = Command(EntryKind.SIGNAL, name, args_digest(args))
        index, decision = self._issue(command)

        def revive(result: Any, error: ErrorInfo | None) -> Any:
            if error is not None:
                if error["type"] == "Cancelled":
                    raise RunCancelledError
                raise SignalTimeoutError(name)
            try:
                return adapter.validate_python(result)
            except ValidationError as exc:
                self._reject_signal(index, name, result, exc)

        return self._waiting(index, decision, self._pending_entry(index, command, args), revive)

    def _reject_signal(self, index: int, name: str, payload: Any, exc: ValidationError) -> NoReturn:
        """End the attempt ``stuck``: the code rejects a signal payload the journal holds.

        The payload was accepted under the schema of the deployment the run was pinned to when
        it arrived, and is durable now; a run moved to code whose signal model changed cannot
        take it. That is a version problem, not the workflow's failure: the run stops where an
        operator can move it to code that accepts the payload, and it resumes there.
        """
        if self._stuck is None:
            text = _json.dumps(payload).decode()
            self._stuck = {
                "type": "SignalRejected",
                "message": (
                    f"entry {index}: signal {name!r} carries a payload that workflow {self._info.workflow} on "
                    f"{self._info.deployment_label} rejects ({describe_validation(exc)}); payload: "
                    f"{text if len(text) <= 200 else text[:199] + '…'}. Move the run to a deployment whose "
                    "code accepts it, such as the one it came from: tether runs move RUN --to DEPLOYMENT"
                ),
            }
        self._poke.set()
        raise _Stop

    async def agent(self, agent: AgentDefinition, prompt: str, /) -> Any:
        found = self._app.agents.get(getattr(agent, "name", str(agent)))
        if found is None or found is not agent:
            raise TypeError(f"{agent!r} is not an agent of app {self._app.name}: create it with app.agent(...)")
        manual_digest = self._manual_digests.get(agent.name)
        if manual_digest is None:
            manual_digest = self._manual_digests[agent.name] = agent.manual_digest()
        tools = {tool.name: tool for tool in agent.tools}
        specs = agent.tool_specs()
        output_format = agent.response_format()
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": agent.instructions},
            {"role": "user", "content": prompt},
        ]
        for _ in range(agent.max_turns):
            request: dict[str, Any] = {"model": agent.model.name, "messages": messages, **agent.model.params}
            if specs:
                request["tools"] = specs
            if output_format is not None:
                request["response_format"] = output_format
            response = await self._llm(agent, request, manual_digest)
            message = response["choices"][0]["message"]
            messages.append({k: message[k] for k in ("role", "content", "tool_calls") if message.get(k) is not None})
            calls = message.get("tool_calls") or []
            if not calls:
                return self._final_answer(agent, message.get("content"))
            for call in calls:
                content = await self._tool_call(tools, call)
                messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": content})
        raise AgentError(agent.name, f"no final answer within max_turns={agent.max_turns}")

    def _llm(self, agent: AgentDefinition, request: dict[str, Any], manual_digest: str) -> Awaitable[Any]:
        """One model call, journaled as ``llm``: identity = the conversation's digest + the manual's."""
        fields = self._manual_fields.get(agent.name)
        if fields is None:
            fields = self._manual_fields[agent.name] = field_digests(agent.manual())
        return self.model_call(
            agent.name,
            conversation=request["messages"],
            manual_digest=manual_digest,
            manual_fields=fields,
            args={"model": agent.model.describe(), "messages": len(request["messages"])},
            call=lambda: complete(agent.model, request),
            retry=agent.model.retry,
        )

    def model_call(
        self,
        agent: str,
        *,
        conversation: Any,
        manual_digest: str,
        manual_fields: dict[str, str],
        args: dict[str, Any],
        call: Callable[[], Awaitable[Any]],
        retry: RetryPolicy,
    ) -> Awaitable[Any]:
        """One model call of ``agent``, journaled as an ``llm`` entry; for agent loops.

        The entry's identity is the agent's name, the digest of ``conversation`` (what the
        model is sent besides the manual) and ``manual_digest``; ``manual_fields``
        (:func:`tether.core.manual.field_digests`) are recorded in the result under
        ``_manual`` so that a replay through another manual names the fields that changed. ``call`` returns the response
        as JSON; on replay the journaled response is returned and nothing is called.

        Raises:
            StepFailedError: the call failed for good (after ``retry``).
        """
        command = Command(EntryKind.LLM, agent, args_digest(conversation), manual_digest, manual_fields)
        index, decision = self._issue(command)

        def revive(result: Any, error: ErrorInfo | None) -> Any:
            if error is not None:
                raise StepFailedError(f"model call of agent {agent}", error["type"], error["message"])
            if isinstance(result, dict) and MANUAL_KEY in result:
                result = {k: v for k, v in result.items() if k != MANUAL_KEY}
            return result

        async def recorded() -> Any:
            # The manual's field digests ride in the result: replay receives results (not
            # arguments), and they let a mismatch name the field that changed.
            response = to_jsonable_python(await call())
            return {**response, MANUAL_KEY: manual_fields} if isinstance(response, dict) else response

        if decision.action is Action.REPLAY:
            return self._done(revive, decision)
        if decision.action is not Action.EXECUTE:
            return self._never()
        return self._quiet(self._spawn(self._execute(index, command, args, recorded, retry, revive)))

    def tool_step(
        self, name: str, arguments: Any, call: Callable[[], Awaitable[Any]], /, *, retry: RetryPolicy
    ) -> Awaitable[Any]:
        """A tool call of an agent loop, journaled as a ``step`` named ``name``.

        ``arguments`` (JSON) make the step's identity; ``call`` returns its JSON result, which
        is journaled before it is returned (at-least-once, retried by ``retry``). On replay the
        journaled result is returned and nothing is called.

        Raises:
            StepFailedError: the call failed for good.
        """
        payload = to_jsonable_python(arguments)
        command = Command(EntryKind.STEP, name, args_digest(payload))
        index, decision = self._issue(command)

        def revive(result: Any, error: ErrorInfo | None) -> Any:
            if error is not None:
                raise StepFailedError(name, error["type"], error["message"])
            return result

        if decision.action is Action.REPLAY:
            return self._done(revive, decision)
        if decision.action is not Action.EXECUTE:
            return self._never()
        return self._quiet(self._spawn(self._execute(index, command, payload, call, retry, revive)))

    async def _quiet(self, task: asyncio.Task[T]) -> T:
        """Await ``task``; if the attempt is ending (fenced, mismatch), wait to be cancelled
        instead of raising through a framework's agent loop, which would log it as a failure."""
        try:
            return await task
        except _Stop:
            await asyncio.get_running_loop().create_future()
            raise

    @property
    def app(self) -> App:
        """The app this attempt runs (the pinned deployment's code)."""
        return self._app

    async def _tool_call(self, tools: dict[str, ComponentDefinition], call: dict[str, Any]) -> str:
        """Run one tool call the model asked for; the answer is what the model reads next."""
        function = call.get("function") or {}
        tool = tools.get(function.get("name", ""))
        if tool is None:
            return _json.dumps({"error": f"there is no tool {function.get('name')!r}"}).decode()
        try:
            arguments = _json.loads(function.get("arguments") or "{}")
            kwargs = validated_input(tool, arguments)
        except (ValueError, SchemaError) as exc:
            return _json.dumps({"error": f"invalid arguments for {tool.name}: {exc}"}).decode()
        if tool.takes_context:
            result = await tool.fn(self, **kwargs)
        else:
            result = await self.step(tool.fn, **kwargs)
        return _json.dumps(to_jsonable_python(result)).decode()

    @staticmethod
    def _final_answer(agent: AgentDefinition, content: Any) -> Any:
        if agent.output_type is str:
            return "" if content is None else str(content)
        text = str(content or "").strip()
        if text.startswith("```"):
            text = text.strip("`").removeprefix("json").strip()
        try:
            return agent.output.validate_json(text)
        except ValidationError as exc:
            raise AgentError(agent.name, f"its final answer is not a valid {agent.output_type!r}: {exc}") from None

    def continue_as_new(self, input: dict[str, Any] | None = None, /, *, upgrade: bool = True) -> NoReturn:
        assert self._workflow is not None
        payload = to_jsonable_python(input or {})
        validated_input(self._workflow, payload)
        args = {"input": payload, "upgrade": upgrade}
        command = Command(EntryKind.CONTINUE_AS_NEW, self._workflow.name, args_digest(args))
        index, decision = self._issue(command)
        if decision.action is Action.MISMATCH:
            raise _Stop
        if decision.action is Action.EXECUTE:
            self._buffer.append(
                {
                    "index": index,
                    "kind": command.kind,
                    "name": command.name,
                    "args_digest": command.args_digest,
                    "completed": True,
                    "args": args,
                    "result": None,
                }
            )
        raise ContinueAsNew(payload, upgrade)

    def child(
        self, workflow: Callable[..., Awaitable[T]] | str, input: dict[str, Any] | None = None, /
    ) -> Awaitable[T]:
        definition = self._resolve(workflow, ("workflow",))
        validated_input(definition, input or {})
        args = {"workflow": definition.name, "input": to_jsonable_python(input or {})}
        command = Command(EntryKind.CHILD, definition.name, args_digest(args))
        index, decision = self._issue(command)

        def revive(result: Any, error: ErrorInfo | None) -> Any:
            if error is not None:
                raise ChildFailedError(definition.name, error["type"], error["message"])
            return definition.output.validate_python(result)

        return self._waiting(index, decision, self._pending_entry(index, command, args), revive)

    @staticmethod
    def _pending_entry(index: int, command: Command, args: Any) -> NewEntry:
        return {
            "index": index,
            "kind": command.kind,
            "name": command.name,
            "args_digest": command.args_digest,
            "completed": False,
            "args": args,
        }
