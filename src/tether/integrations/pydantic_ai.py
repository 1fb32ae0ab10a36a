"""Run Pydantic AI agents durably, with their manual pinned (``pip install 'tether[pydantic-ai]'``).

Example::

    from pydantic_ai import Agent
    import tether
    from tether.integrations import pydantic_ai

    research = Agent("openai:gpt-4o-mini", name="research", instructions="...",
                     output_type=Report, defer_model_check=True)

    @research.tool_plain
    async def search(topic: str) -> list[str]:
        \"\"\"Find papers about a topic.\"\"\"
        ...

    app = tether.App("research")
    app.register(research)

    @app.workflow
    async def report(ctx: tether.Context, topic: str) -> Report:
        result = await pydantic_ai.run(ctx, research, f"Research {topic}")
        return result.output

How: :func:`run` calls the agent's own ``agent.run`` under ``agent.override``: the model is
wrapped so that each request goes through the run's journal as an ``llm`` entry carrying the
manual's digest, and each function tool's function is wrapped so that each call is a
``step``. The agent object itself is never changed.

Models: an agent whose model is a name (``"openai:NAME"`` or ``"NAME"``) is served by Pydantic
AI's ``OpenAIChatModel`` over the official ``openai`` client, at the base URL
``TETHER_MODEL_BASE_URL``, else ``OPENAI_BASE_URL``, else OpenAI's; an agent whose model is a
``Model`` instance is called through that instance, still journaled. Pass
``defer_model_check=True`` to ``Agent`` so that defining it needs no API key.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import Any

from pydantic_core import to_jsonable_python

from tether.core.manifest import manifest_digest
from tether.core.manual import field_digests
from tether.errors import IntegrationError, TerminalError
from tether.integrations import (
    Approval,
    StepScope,
    _context,
    _in_step,
    approval_of,
    attempt_of,
    is_workflow_tool,
    missing_extra,
)
from tether.sdk._attempt import Attempt
from tether.sdk.agents import BASE_URL_ENV, DEFAULT_BASE_URL, MODEL_RETRY
from tether.sdk.app import RetryPolicy
from tether.sdk.context import Context

try:
    import openai
    from pydantic_ai import DeferredToolRequests, DeferredToolResults, ToolDenied
    from pydantic_ai import __version__ as FRAMEWORK_VERSION
    from pydantic_ai.messages import ModelMessagesTypeAdapter, ModelResponse
    from pydantic_ai.models import Model, ModelRequestParameters
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise missing_extra("pydantic-ai", "pydantic_ai", exc) from exc

__all__ = ["FRAMEWORK", "FRAMEWORK_VERSION", "Approval", "agent_name", "manuals", "run"]

FRAMEWORK = "pydantic-ai"
_VOLATILE = frozenset({"timestamp", "run_id", "conversation_id"})
"""Message keys that differ between two replays of the same conversation (clock, ids)."""


def agent_name(agent: Any) -> str:
    """The registered name of ``agent``: its ``name``, which must be set.

    Raises:
        ValueError: the agent has no name.
    """
    if not agent.name:
        raise ValueError("a Pydantic AI agent registered with tether needs a name: Agent(..., name='research')")
    return str(agent.name)


def _callable_name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _instructions(agent: Any) -> list[Any]:
    parts: list[Any] = list(agent._system_prompts)
    parts += [{"dynamic": _callable_name(getattr(f, "function", f))} for f in agent._system_prompt_functions]
    for item in agent._instructions:
        value = item.instruction
        parts.append(value if isinstance(value, str) else {"dynamic": _callable_name(value)})
    return parts


def _tools(agent: Any) -> list[dict[str, Any]]:
    out = []
    for tool in agent._function_toolset.tools.values():
        spec = tool.tool_def
        entry: dict[str, Any] = {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters_json_schema,
            "strict": spec.strict,
            "approval": bool(tool.requires_approval),
        }
        if tool.prepare is not None:
            entry["prepare"] = {"dynamic": _callable_name(tool.prepare)}
        out.append(entry)
    return out


def _output(agent: Any) -> Any:
    schema = agent._output_schema
    tools = getattr(getattr(schema, "toolset", None), "_tool_defs", None) or []
    obj = getattr(schema, "object_def", None)
    return {
        "mode": type(schema).__name__,
        "schema": None if obj is None else obj.json_schema,
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.parameters_json_schema} for t in tools
        ],
    }


def _model_name(agent: Any) -> Any:
    model = agent.model
    if model is None or isinstance(model, str):
        return model
    return {"class": type(model).__name__, "model": str(getattr(model, "model_name", ""))}


def manual(agent: Any) -> dict[str, Any]:
    """What ``agent``'s model is shown besides the conversation (see :func:`manuals`)."""
    settings = agent.model_settings
    return {
        "framework": FRAMEWORK,
        "instructions": _instructions(agent),
        "model": {
            "name": _model_name(agent),
            "settings": to_jsonable_python(settings) if isinstance(settings, dict) or settings is None else "dynamic",
        },
        "tools": _tools(agent),
        "output_schema": _output(agent),
        "toolsets": [type(t).__name__ for t in agent.toolsets[1:]],
    }


def manuals(agent: Any) -> dict[str, dict[str, Any]]:
    """The manual of ``agent`` by its name (Pydantic AI has no handoffs: an agent that calls
    another from a tool registers that one too)."""
    return {agent_name(agent): manual(agent)}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _inner_model(agent: Any, clients: list[openai.AsyncOpenAI]) -> Model:
    model = agent.model
    if isinstance(model, Model):
        return model
    if model is None:
        raise IntegrationError(f"agent {agent.name} has no model: Agent('openai:NAME', ...)")
    provider, _, name = str(model).partition(":")
    if not name:
        provider, name = "openai", str(model)
    if provider != "openai":
        raise IntegrationError(
            f"agent {agent.name}: model {model!r}: tether serves 'openai:NAME' models at an OpenAI-compatible "
            "base URL; for another provider pass a pydantic_ai Model instance as the agent's model"
        )
    base_url = next((os.environ[v] for v in BASE_URL_ENV if os.environ.get(v)), DEFAULT_BASE_URL)
    client = openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "not-set")
    clients.append(client)
    return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))


class _JournaledModel(WrapperModel):
    """A Pydantic AI model whose every request goes through the run's journal."""

    def __init__(self, attempt: Attempt, agent: Any, inner: Model, retry: RetryPolicy) -> None:
        super().__init__(inner)
        self._attempt = attempt
        self._name = agent_name(agent)
        self._retry = retry
        agent_manual = manual(agent)
        self._manual_digest = manifest_digest(agent_manual)
        self._fields = field_digests(agent_manual)
        self._model_name = _model_name(agent)

    async def request(
        self,
        messages: list[Any],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        conversation = _strip(ModelMessagesTypeAdapter.dump_python(messages, mode="json"))

        async def call() -> Any:
            try:
                response = await self.wrapped.request(messages, model_settings, model_request_parameters)
            except openai.APIStatusError as exc:
                if exc.status_code != 429 and exc.status_code < 500:
                    raise TerminalError(f"the model refused the request ({exc.status_code}): {exc.message}") from None
                raise
            return ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]

        result = await self._attempt.model_call(
            self._name,
            conversation=conversation,
            manual_digest=self._manual_digest,
            manual_fields=self._fields,
            args={"framework": FRAMEWORK, "model": self._model_name},
            call=call,
            retry=self._retry,
        )
        revived = ModelMessagesTypeAdapter.validate_python([result])[0]
        assert isinstance(revived, ModelResponse)
        return revived

    def request_stream(self, *args: Any, **kwargs: Any) -> Any:
        raise IntegrationError(
            "streaming is not durable: tether journals whole model responses; use pydantic_ai.run (agent.run)"
        )


def _step_tool(attempt: Attempt, tool: Any, retry: RetryPolicy) -> Any:
    """A copy of a Pydantic AI ``Tool`` whose function runs as a journaled step."""
    if is_workflow_tool(tool, tool.function):
        return tool
    schema = tool.function_schema
    original: Callable[..., Any] = schema.function
    name = tool.name

    async def journaled(*args: Any, **kwargs: Any) -> Any:
        shown = args[1:] if schema.takes_ctx else args

        async def call() -> Any:
            scope = StepScope(name)
            token = _in_step.set(scope)
            try:
                if inspect.iscoroutinefunction(original):
                    return await original(*args, **kwargs)
                return await asyncio.to_thread(original, *args, **kwargs)
            finally:
                _in_step.reset(token)

        return await attempt.tool_step(name, {"args": list(shown), "kwargs": kwargs}, call, retry=retry)

    wrapped = copy.copy(tool)
    wrapped.function_schema = dataclasses.replace(schema, function=journaled, is_async=True)
    return wrapped


async def run(
    ctx: Context,
    agent: Any,
    prompt: str | None = None,
    /,
    *,
    deps: Any = None,
    approval_signal: str | None = None,
    retry: RetryPolicy = MODEL_RETRY,
    tool_retry: RetryPolicy | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``agent`` on ``prompt`` durably, like ``agent.run``, and return its ``AgentRunResult``.

    Every model request is an ``llm`` entry carrying the agent's manual digest; every function
    tool call is a ``step``; on replay nothing is called again. A tool registered with
    ``requires_approval=True`` makes the run wait for the workflow's signal ``approval_signal``
    (payload :class:`tether.integrations.Approval`, one per call, in order): the run suspends
    with no process kept, and continues with the tool approved or denied when it arrives, on
    the run's deployment.

    Args:
        ctx: the workflow's context.
        agent: a ``pydantic_ai.Agent`` registered with ``app.register(agent)``.
        prompt: the user prompt.
        deps: the agent's dependencies, as in ``agent.run``.
        approval_signal: the declared signal that approves or denies tool calls.
        retry: how a failed model call is retried (a 429, a 5xx or a network error).
        tool_retry: how a tool call that raises is retried (default: tether's step policy).
        **kwargs: more ``agent.run`` arguments (``message_history``, ``usage_limits``, ...).

    Raises:
        IntegrationError: the agent is not registered, or uses what tether cannot journal.
        StepFailedError: a model call failed for good.
    """
    attempt = attempt_of(ctx)
    name = getattr(agent, "name", None) or ""
    registered: Any = attempt.app.framework_agents.get(name)
    if registered is None or registered is not agent:
        raise IntegrationError(
            f"agent {name or agent!r} is not registered with app {attempt.app.name}: "
            "call app.register(agent) so that its manual is part of the deployment"
        )
    for refused in ("model", "output_type", "toolsets", "deferred_tool_results"):
        if refused in kwargs:
            raise IntegrationError(
                f"pydantic_ai.run does not take {refused}=: it is part of the agent's manual; set it on the agent"
            )
    if len(agent.toolsets) > 1:
        raise IntegrationError(
            f"agent {name} has toolsets beyond its function tools ({', '.join(manual(agent)['toolsets'])}), "
            "which tether cannot pin in the manifest: register their tools as function tools"
        )
    step_retry = tool_retry or RetryPolicy()
    tools = [_step_tool(attempt, t, step_retry) for t in agent._function_toolset.tools.values()]
    clients: list[openai.AsyncOpenAI] = []
    model = _JournaledModel(attempt, agent, _inner_model(agent, clients), retry)
    output_type = [agent.output_type, DeferredToolRequests]
    token = _context.set(ctx)
    try:
        with agent.override(model=model, tools=tools):
            result = await agent.run(prompt, deps=deps, output_type=output_type, **kwargs)
            while isinstance(result.output, DeferredToolRequests):
                requests = result.output
                if requests.calls:
                    raise IntegrationError(f"agent {name}: external (deferred) tool calls are not supported")
                if approval_signal is None:
                    tools_named = ", ".join(c.tool_name for c in requests.approvals)
                    raise IntegrationError(
                        f"agent {name}: tool {tools_named} needs approval: pass approval_signal='NAME' "
                        "to pydantic_ai.run and declare the signal on the workflow"
                    )
                answers = DeferredToolResults()
                for call in requests.approvals:
                    decision = approval_of(approval_signal, await ctx.signal(approval_signal))
                    answers.approvals[call.tool_call_id] = (
                        True if decision.approved else ToolDenied(decision.reason or "The tool call was refused.")
                    )
                history = result.all_messages()
                rest = {k: v for k, v in kwargs.items() if k != "message_history"}
                result = await agent.run(
                    None,
                    deps=deps,
                    output_type=output_type,
                    message_history=history,
                    deferred_tool_results=answers,
                    **rest,
                )
        return result
    finally:
        _context.reset(token)
        for client in clients:
            await client.close()
