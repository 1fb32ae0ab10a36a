"""Run agents written with other frameworks durably, their manual pinned like tether's own.

- :mod:`tether.integrations.openai_agents`: the OpenAI Agents SDK (``pip install
  'tether[openai-agents]'``).
- :mod:`tether.integrations.pydantic_ai`: Pydantic AI (``pip install 'tether[pydantic-ai]'``).

Register a framework agent with ``app.register(agent)`` (its manual enters the manifest) and
run it from a workflow with ``await openai_agents.run(ctx, agent, input)`` or
``await pydantic_ai.run(ctx, agent, prompt)``. Every model call is an ``llm`` journal entry
carrying the manual's digest, every tool call a ``step``.

A tool runs as a step: at-least-once, its result journaled, never called again on replay.
A tool that needs the run's :class:`tether.Context` (to wait for a signal, ``ctx.set``, start a
child run) is marked with :func:`workflow_tool` and runs inline, as workflow code, where
:func:`current_context` returns the context. This module imports no framework: importing
tether never costs a framework's import time.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from tether.errors import IntegrationError

if TYPE_CHECKING:
    from tether.sdk._attempt import Attempt
    from tether.sdk.context import Context

__all__ = ["Approval", "IntegrationError", "current_context", "workflow_tool"]

T = TypeVar("T")

WORKFLOW_TOOL_ATTR = "__tether_workflow_tool__"

_context: ContextVar[Context | None] = ContextVar("tether_agent_context", default=None)
_in_step: ContextVar[StepScope | None] = ContextVar("tether_agent_step", default=None)


class StepScope:
    """Marks code running inside a tool step; remembers a misuse of the context there."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.misuse: IntegrationError | None = None

    def check(self) -> None:
        """Raise the misuse, even if the framework turned the tool's error into a message.

        Raises:
            IntegrationError: the tool asked for the run's context.
        """
        if self.misuse is not None:
            raise self.misuse


class Approval(BaseModel):
    """The payload of an approval signal: a human's decision on one tool call that needs it.

    Declare it on the workflow (``@app.workflow(signals={"approval": Approval})``) and name the
    signal in ``run(..., approval_signal="approval")``; each signal decides the oldest call
    still waiting.
    """

    approved: bool
    """Run the tool call (true) or refuse it (false: the model is told it was refused)."""
    reason: str = ""
    """Why, shown to the model when the call is refused."""


def approval_of(signal: str, payload: Any) -> Approval:
    """Read an approval signal's payload.

    Raises:
        IntegrationError: the payload has no boolean ``approved``.
    """
    from pydantic import ValidationError
    from pydantic_core import to_jsonable_python

    try:
        return Approval.model_validate(to_jsonable_python(payload))
    except ValidationError:
        raise IntegrationError(
            f"signal {signal} approves tool calls, so its payload needs a boolean 'approved' (and an optional "
            f"'reason'), got {payload!r}: declare it as tether.integrations.Approval"
        ) from None


def missing_extra(extra: str, module: str, exc: ImportError) -> IntegrationError:
    """The error raised when a framework integration is imported without its extra."""
    return IntegrationError(
        f"tether.integrations.{module} needs the {extra!r} extra ({exc}): pip install 'tether[{extra}]'"
    )


def workflow_tool(tool: T) -> T:
    """Mark a framework tool to run inline, as workflow code, instead of as a step.

    Such a tool may call :func:`current_context` and use the run's context (``ctx.signal``
    for a human's review, ``ctx.step``, ``ctx.set``, ``ctx.child``); what it does outside the
    context must follow the rules for workflow code (deterministic on replay). Put it above
    the framework's decorator (``@workflow_tool`` over ``@function_tool``) or below
    ``@agent.tool``; it marks the object it is given and returns it.
    """
    try:
        setattr(tool, WORKFLOW_TOOL_ATTR, True)
    except AttributeError:
        raise TypeError(f"cannot mark {tool!r} as a workflow tool: pass the tool or its function") from None
    return tool


def is_workflow_tool(*candidates: Any) -> bool:
    """Whether any of ``candidates`` (a tool, its function) was marked by :func:`workflow_tool`."""
    return any(getattr(c, WORKFLOW_TOOL_ATTR, False) is True for c in candidates if c is not None)


def current_context() -> Context:
    """The context of the run whose agent is calling the current tool.

    Raises:
        IntegrationError: outside a durable agent run, or in a tool that runs as a step.
    """
    step = _in_step.get()
    if step is not None:
        step.misuse = IntegrationError(
            f"tool {step.tool} runs as a step (at-least-once, its result journaled) and cannot use the run's "
            "context: mark it with @tether.integrations.workflow_tool to run it as workflow code"
        )
        raise step.misuse
    ctx = _context.get()
    if ctx is None:
        raise IntegrationError(
            "no tether run here: current_context() works in tools of an agent run with "
            "tether.integrations.openai_agents.run(ctx, ...) or tether.integrations.pydantic_ai.run(ctx, ...)"
        )
    return ctx


def attempt_of(ctx: Context) -> Attempt:
    """The attempt behind ``ctx`` (what the integrations journal through).

    Raises:
        TypeError: ``ctx`` is not the context a workflow received.
    """
    from tether.sdk._attempt import Attempt

    if not isinstance(ctx, Attempt):
        raise TypeError(f"expected the tether.Context the workflow received, got {ctx!r}")
    return ctx


class Integration(Protocol):
    """What an integration module offers the app's registry."""

    FRAMEWORK: str
    """The framework's name in the manifest (``openai-agents``, ``pydantic-ai``)."""

    def agent_name(self, agent: Any) -> str:
        """The name ``agent`` is registered and journaled under."""
        ...

    def manuals(self, agent: Any) -> dict[str, dict[str, Any]]:
        """The manual of ``agent`` and of the agents reachable from it, by name."""
        ...


def integration_for(agent: Any) -> Integration:
    """The integration module for ``agent``'s framework (imported only now).

    Raises:
        TypeError: ``agent`` is of no supported framework.
    """
    package = type(agent).__module__.partition(".")[0]
    if package == "agents":
        from tether.integrations import openai_agents

        return openai_agents
    if package == "pydantic_ai":
        from tether.integrations import pydantic_ai

        return pydantic_ai
    raise TypeError(
        f"app.register takes an OpenAI Agents SDK agents.Agent or a pydantic_ai.Agent, got {agent!r}; "
        "register tether's own agents with app.agent(...)"
    )
