"""``tether.App`` and the decorators that register components.

Each decorator attaches a definition object to the function (``__tether_definition__``) and
records it in the app's registry; :meth:`App.manifest` reads the registry back into the
deployment's manifest.
"""

from __future__ import annotations

import inspect
import platform
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError

from tether._version import __version__
from tether.core.manifest import manifest_digest

if TYPE_CHECKING:
    from tether.sdk.agents import AgentDefinition, Model

F = TypeVar("F", bound=Callable[..., Any])
A = TypeVar("A")

DEFINITION_ATTR = "__tether_definition__"


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a step is retried when it raises anything but :class:`tether.TerminalError`."""

    max_attempts: int = 3
    """Total tries, the first included; 1 means no retry."""
    initial_interval: timedelta | float = 0.1
    """Wait before the second try (seconds or a timedelta)."""
    backoff: float = 2.0
    """Factor applied to the wait after every try."""
    max_interval: timedelta | float = 30.0
    """Upper bound of one wait."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.backoff < 1:
            raise ValueError("RetryPolicy.backoff must be at least 1")

    def delay(self, tries_done: int) -> float:
        """Seconds to wait after ``tries_done`` failed tries."""
        base = _seconds(self.initial_interval) * self.backoff ** (tries_done - 1)
        return min(base, _seconds(self.max_interval))

    def to_json(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": _seconds(self.initial_interval),
            "backoff": self.backoff,
            "max_interval": _seconds(self.max_interval),
        }


DEFAULT_RETRY = RetryPolicy()


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _signature_model(
    name: str, fn: Callable[..., Any], skip_first: bool
) -> tuple[type[BaseModel], list[str], Any, bool]:
    """A pydantic model of ``fn``'s parameters, their names, the return type, and whether the
    first parameter is the context (always skipped for workflows; for a tool, when annotated
    ``tether.Context``)."""
    from tether.sdk.context import Context

    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    takes_context = skip_first or bool(params and hints.get(params[0].name) is Context)
    if takes_context:
        first = hints.get(params[0].name, Context) if params else None
        if not params or first is not Context:
            shown = ", ".join(p.name for p in params)
            raise TypeError(
                f"workflow {name} must take the context as its first parameter: "
                f"async def {name}(ctx: tether.Context{', ' if shown else ''}{shown}) -> ..."
            )
        params = params[1:]
    fields: dict[str, Any] = {}
    names: list[str] = []
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{name}: *args and **kwargs parameters cannot be described by a schema")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
        names.append(param.name)
        _check_json(annotation, f"{name}: parameter {param.name!r}")
    model = create_model(f"{name}_input", __base__=_Input, **fields)
    ret = hints.get("return", Any)
    _check_json(ret, f"{name}: the return type")
    return model, names, ret, takes_context


def _query_definition(workflow: str, name: str, fn: Callable[..., Any]) -> QueryDefinition:
    """The definition of query ``name`` of ``workflow`` from its handler's signature.

    Raises:
        TypeError: the handler does not take the query context first, or a type cannot be JSON.
    """
    from tether.sdk._query import QueryContext
    from tether.sdk.context import Context

    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    if not params or hints.get(params[0].name) not in (QueryContext, Context):
        shown = ", ".join(p.name for p in params[1:])
        raise TypeError(
            f"query {name} of workflow {workflow} must take the query context as its first parameter: "
            f"def {fn.__name__}(ctx: tether.QueryContext{', ' if shown else ''}{shown}) -> ..."
        )
    fields: dict[str, Any] = {}
    names: list[str] = []
    for param in params[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"query {name}: *args and **kwargs parameters cannot be described by a schema")
        annotation = hints.get(param.name, Any)
        _check_json(annotation, f"query {name}: parameter {param.name!r}")
        fields[param.name] = (annotation, ... if param.default is param.empty else param.default)
        names.append(param.name)
    ret = hints.get("return", Any)
    _check_json(ret, f"query {name}: the return type")
    return QueryDefinition(
        name=name,
        workflow=workflow,
        fn=fn,
        description=inspect.cleandoc(fn.__doc__ or ""),
        input_model=create_model(f"{workflow}_{name}_query_input", __base__=_Input, **fields),
        param_names=names,
        output=TypeAdapter(ret),
    )


def _check_json(annotation: Any, what: str) -> None:
    """Refuse, where it is declared, a type tether cannot carry as JSON (the journal, the API).

    Raises:
        TypeError: saying what to use instead.
    """
    try:
        schema = TypeAdapter(annotation).json_schema()
    except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema, PydanticUserError) as exc:
        shown = getattr(annotation, "__name__", repr(annotation))
        raise TypeError(
            f"{what} is {shown}, which tether cannot carry as JSON ({type(exc).__name__}): use JSON types, "
            "a pydantic model or a dataclass"
        ) from None
    if _has_set(schema):
        # JSON has no sets: a set would reach callers (and the journal) as a list, in an order
        # that differs from process to process. Refused rather than silently turned into a list.
        shown = getattr(annotation, "__name__", None) or repr(annotation)
        raise TypeError(
            f"{what} is (or holds) a set ({shown}), which JSON cannot carry: a caller would get a list in no "
            "particular order. Declare list[...] (sorted, if order must not matter) instead"
        )


def _has_set(schema: Any) -> bool:
    """Whether a JSON schema describes a set somewhere (pydantic marks them ``uniqueItems``)."""
    if isinstance(schema, dict):
        return schema.get("uniqueItems") is True or any(_has_set(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_set(v) for v in schema)
    return False


@dataclass(eq=False)
class QueryDefinition:
    """A read-only query handler declared on a workflow (:meth:`App.query`)."""

    name: str
    """The query's name, unique within its workflow."""
    workflow: str
    """The workflow it reads runs of."""
    fn: Callable[..., Any]
    """The handler: ``(ctx: tether.QueryContext, ...) -> T``, sync or async."""
    description: str
    """The docstring."""
    input_model: type[BaseModel]
    """Pydantic model of the parameters (the context excluded)."""
    param_names: list[str]
    """Parameter names in order."""
    output: TypeAdapter[Any]
    """Adapter of the return annotation."""

    def describe(self) -> dict[str, Any]:
        """This query's entry in its workflow's manifest entry."""
        return {
            "description": self.description,
            "input_schema": self.input_model.model_json_schema(),
            "output_schema": self.output.json_schema(),
        }


@dataclass(eq=False)
class ComponentDefinition:
    """What a decorator registers: a workflow, function or tool."""

    kind: str
    """``workflow``, ``function`` or ``tool``."""
    name: str
    """The registered name, unique in the app."""
    fn: Callable[..., Any]
    """The user's function."""
    description: str
    """The docstring (what callers and models read)."""
    input_model: type[BaseModel]
    """Pydantic model of the parameters (the context excluded)."""
    param_names: list[str]
    """Parameter names in order."""
    output: TypeAdapter[Any]
    """Adapter of the return annotation; revives journaled results."""
    retry: RetryPolicy = DEFAULT_RETRY
    """Retry policy (functions and tools)."""
    signals: dict[str, TypeAdapter[Any]] = field(default_factory=dict)
    """Declared signals and their payload adapters (workflows)."""
    takes_context: bool = False
    """A tool whose first parameter is the context: agents call it inline, in the workflow,
    so it may use ``ctx.step``, ``ctx.signal`` (e.g. a human's review) and the rest."""
    queries: dict[str, QueryDefinition] = field(default_factory=dict)
    """Declared read-only queries (workflows), by name."""

    def describe(self) -> dict[str, Any]:
        """This component's manifest entry."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_model.model_json_schema(),
            "output_schema": self.output.json_schema(),
        }
        if self.kind == "workflow":
            out["signals"] = {name: adapter.json_schema() for name, adapter in sorted(self.signals.items())}
            if self.queries:
                # Only when declared: manifests of workflows without queries keep their digest.
                out["queries"] = {name: query.describe() for name, query in sorted(self.queries.items())}
        else:
            out["retry"] = self.retry.to_json()
        return out

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map positional and keyword arguments to parameter names."""
        if len(args) > len(self.param_names):
            raise TypeError(f"{self.name} takes {len(self.param_names)} arguments, {len(args)} given")
        bound = dict(zip(self.param_names, args, strict=False))
        for key, value in kwargs.items():
            if key in bound:
                raise TypeError(f"{self.name} got two values for argument {key!r}")
            bound[key] = value
        return bound


def definition_of(obj: Any) -> ComponentDefinition | None:
    """The definition a tether decorator attached to ``obj``, if any."""
    found = getattr(obj, DEFINITION_ATTR, None)
    return found if isinstance(found, ComponentDefinition) else None


class App:
    """A tether application: the registry of its workflows, functions and tools.

    Example::

        app = tether.App("hello")

        @app.function
        async def greeting(name: str) -> str:
            return f"hello {name}"

        @app.workflow
        async def greet(ctx: tether.Context, name: str) -> str:
            return await ctx.step(greeting, name)
    """

    def __init__(self, name: str) -> None:
        """Create an empty app called ``name``."""
        if not name or not name.replace("-", "_").isidentifier():
            raise ValueError(f"app name {name!r} must be a non-empty identifier")
        self.name = name
        self.components: dict[str, ComponentDefinition] = {}
        self.agents: dict[str, AgentDefinition] = {}
        self.framework_agents: dict[str, Any] = {}
        """Agents of other frameworks registered with :meth:`register`, by name."""

    def _taken(self, name: str) -> bool:
        return name in self.components or name in self.agents or name in self.framework_agents

    def _register(self, definition: ComponentDefinition) -> None:
        if self._taken(definition.name):
            raise ValueError(f"app {self.name} already registers a component named {definition.name!r}")
        self.components[definition.name] = definition
        setattr(definition.fn, DEFINITION_ATTR, definition)

    def _define(
        self,
        kind: str,
        fn: Callable[..., Any],
        name: str | None,
        retry: RetryPolicy | None = None,
        signals: Mapping[str, Any] | None = None,
    ) -> ComponentDefinition:
        if not callable(fn):
            raise TypeError(f"@app.{kind} decorates a function, got {fn!r}")
        component = name or fn.__name__
        if kind == "workflow" and not inspect.iscoroutinefunction(fn):
            raise TypeError(f"workflow {component} must be defined with 'async def'")
        if kind == "workflow":
            from tether.sdk._guard import clock_calls_in

            for call, line in clock_calls_in(fn):
                raise TypeError(
                    f"{inspect.getsourcefile(fn)}:{line}: workflow {component} calls {call}, which gives another "
                    "time on every replay: use ctx.now() (recorded once and replayed), or read the clock in a step"
                )
        model, names, ret, takes_context = _signature_model(component, fn, skip_first=kind == "workflow")
        if takes_context and kind == "function":
            raise TypeError(f"function {component} takes the context: register it as a @app.tool or a workflow")
        definition = ComponentDefinition(
            kind=kind,
            name=component,
            fn=fn,
            description=inspect.cleandoc(fn.__doc__ or ""),
            input_model=model,
            param_names=names,
            output=TypeAdapter(ret),
            retry=retry or DEFAULT_RETRY,
            signals={key: TypeAdapter(value) for key, value in (signals or {}).items()},
            takes_context=takes_context and kind == "tool",
        )
        self._register(definition)
        return definition

    @overload
    def workflow(self, fn: F, /) -> F: ...
    @overload
    def workflow(
        self, fn: None = None, /, *, name: str | None = None, signals: Mapping[str, Any] | None = None
    ) -> Callable[[F], F]: ...
    def workflow(self, fn: Any = None, /, *, name: str | None = None, signals: Mapping[str, Any] | None = None) -> Any:
        """Register a workflow: ``async def wf(ctx: tether.Context, ...) -> T``.

        Args:
            fn: the workflow function (when used without arguments).
            name: the registered name (default: the function's name).
            signals: the signals the workflow accepts and their payload types.
        """

        def wrap(f: F) -> F:
            self._define("workflow", f, name, signals=signals)
            return f

        return wrap(fn) if fn is not None else wrap

    @overload
    def function(self, fn: F, /) -> F: ...
    @overload
    def function(
        self, fn: None = None, /, *, name: str | None = None, retry: RetryPolicy | None = None
    ) -> Callable[[F], F]: ...
    def function(self, fn: Any = None, /, *, name: str | None = None, retry: RetryPolicy | None = None) -> Any:
        """Register a function that workflows call with ``await ctx.step(fn, ...)``."""

        def wrap(f: F) -> F:
            self._define("function", f, name, retry=retry)
            return f

        return wrap(fn) if fn is not None else wrap

    @overload
    def tool(self, fn: F, /) -> F: ...
    @overload
    def tool(
        self, fn: None = None, /, *, name: str | None = None, retry: RetryPolicy | None = None
    ) -> Callable[[F], F]: ...
    def tool(self, fn: Any = None, /, *, name: str | None = None, retry: RetryPolicy | None = None) -> Any:
        """Register a tool: a function whose description and schema agents are shown."""

        def wrap(f: F) -> F:
            self._define("tool", f, name, retry=retry)
            return f

        return wrap(fn) if fn is not None else wrap

    def query(self, workflow: Callable[..., Any] | str, /, *, name: str | None = None) -> Callable[[F], F]:
        """Declare a read-only query on ``workflow``: ``(ctx: tether.QueryContext, ...) -> T``.

        A query is answered by the deployment a run is pinned to, from the run's journal: its
        input, its state (``ctx.set``) and its entries (see :class:`tether.QueryContext`). It
        may not issue journaled commands (``ctx.step``, ``ctx.sleep``, ``ctx.signal``,
        ``ctx.now``...): they raise :class:`tether.errors.QueryRefusedError`. Its parameter and
        return schemas go into the manifest, so ``tether deployments diff`` shows when they change.

        Example::

            @app.query(review)
            async def progress(ctx: tether.QueryContext) -> dict:
                return {"stage": ctx.state.get("stage")}

        Args:
            workflow: the workflow (the decorated function, or its registered name).
            name: the query's name (default: the handler's name).
        """
        if isinstance(workflow, str):
            target = self.get(workflow, "workflow")
        else:
            found = definition_of(workflow)
            target = found if found is not None and self.components.get(found.name) is found else None
            if target is not None and target.kind != "workflow":
                target = None
        if target is None:
            shown = workflow if isinstance(workflow, str) else getattr(workflow, "__name__", repr(workflow))
            raise TypeError(
                f"@app.query({shown}): not a workflow of app {self.name}: pass a function decorated with "
                "@app.workflow (or its name), declared before the query"
            )
        owner = target

        def wrap(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@app.query decorates a function, got {fn!r}")
            query_name = name or fn.__name__
            if query_name in owner.queries:
                raise ValueError(f"workflow {owner.name} already declares a query named {query_name!r}")
            owner.queries[query_name] = _query_definition(owner.name, query_name, fn)
            return fn

        return wrap

    def agent(
        self,
        name: str,
        /,
        *,
        model: Model,
        instructions: str,
        tools: Sequence[Callable[..., Any]] = (),
        output_type: Any = str,
        max_turns: int = 10,
        description: str = "",
    ) -> AgentDefinition:
        """Register an agent: call it from a workflow with ``await ctx.agent(agent, prompt)``.

        Args:
            name: the registered name.
            model: the model it calls (``tether.Model("openai:gpt-4o-mini")``).
            instructions: the system prompt.
            tools: functions registered with ``@app.tool`` it may call.
            output_type: the final answer's type; anything but ``str`` is read as JSON and
                validated.
            max_turns: model calls allowed before it fails with ``AgentError``.
            description: what it is for (shown to people, not sent to the model).
        """
        from tether.sdk.agents import AgentDefinition
        from tether.sdk.agents import Model as _Model

        if self._taken(name):
            raise ValueError(f"app {self.name} already registers a component named {name!r}")
        if not isinstance(model, _Model):
            raise TypeError(
                f"agent {name}: model must be a tether.Model, e.g. tether.Model('openai:gpt-4o-mini'), "
                f"not {type(model).__name__}; an OpenAI Agents SDK or Pydantic AI agent is registered with "
                "app.register(agent)"
            )
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        resolved = []
        for tool in tools:
            definition = definition_of(tool)
            if (
                definition is None
                or definition.kind != "tool"
                or self.components.get(definition.name) is not definition
            ):
                raise TypeError(f"agent {name}: {tool!r} is not a tool of app {self.name}: decorate it with @app.tool")
            resolved.append(definition)
        agent = AgentDefinition(
            name=name,
            model=model,
            instructions=inspect.cleandoc(instructions),
            tools=resolved,
            output_type=output_type,
            max_turns=max_turns,
            description=description,
        )
        self.agents[name] = agent
        return agent

    def register(self, agent: A, /) -> A:
        """Register an agent of another framework so that its manual is part of the deployment.

        ``agent`` is an OpenAI Agents SDK ``agents.Agent`` or a Pydantic AI
        ``pydantic_ai.Agent``; run it from a workflow with
        :func:`tether.integrations.openai_agents.run` or
        :func:`tether.integrations.pydantic_ai.run`. Its manual (instructions, tools with their
        descriptions and schemas, handoffs, output schema, model and settings) is read when the
        manifest is built, so tools added to it after this call are included. Agents it hands
        off to or calls as tools are recorded too.

        Returns:
            ``agent`` itself.

        Raises:
            TypeError: ``agent`` is of no supported framework.
            ValueError: its name is already taken in this app.
        """
        from tether.integrations import integration_for

        name = integration_for(agent).agent_name(agent)
        if self.framework_agents.get(name) is agent:
            return agent
        if self._taken(name):
            raise ValueError(f"app {self.name} already registers a component named {name!r}: rename the agent")
        self.framework_agents[name] = agent
        return agent

    def _framework_components(self) -> dict[str, dict[str, Any]]:
        from tether.integrations import integration_for

        out: dict[str, dict[str, Any]] = {}
        for agent in self.framework_agents.values():
            integration = integration_for(agent)
            for name, manual in integration.manuals(agent).items():
                if name in self.components or name in self.agents:
                    raise ValueError(
                        f"app {self.name}: agent {name!r} (reached from {integration.agent_name(agent)}) "
                        "has the name of another component: rename one of them"
                    )
                entry = {
                    "kind": "agent",
                    "name": name,
                    "framework": integration.FRAMEWORK,
                    "manual": manual,
                    "manual_digest": manifest_digest(manual),
                }
                if out.get(name, entry) != entry:
                    raise ValueError(f"app {self.name}: two different agents are named {name!r}: rename one")
                out[name] = entry
        return out

    def get(self, name: str, kind: str | None = None) -> ComponentDefinition | None:
        """The registered component ``name`` (of ``kind`` when given)."""
        found = self.components.get(name)
        if found is None or (kind is not None and found.kind != kind):
            return None
        return found

    def manifest(self) -> dict[str, Any]:
        """The canonical description of everything this app registers."""
        return {
            "app": self.name,
            "python": ".".join(platform.python_version_tuple()[:2]),
            "tether": __version__,
            "components": {
                **{name: c.describe() for name, c in self.components.items()},
                **{name: a.describe() for name, a in self.agents.items()},
                **self._framework_components(),
            },
        }

    def manifest_digest(self) -> str:
        """Digest of :meth:`manifest`."""
        return manifest_digest(self.manifest())
