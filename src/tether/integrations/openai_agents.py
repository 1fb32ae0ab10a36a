"""Run OpenAI Agents SDK agents durably, with their manual pinned (``pip install 'tether[openai-agents]'``).

Example::

    from agents import Agent, function_tool
    import tether
    from tether.integrations import openai_agents

    @function_tool
    async def compute_risk_score(amount: int, country: str) -> int:
        \"\"\"Returns a risk score from 0 to 10 where higher means more suspicious.\"\"\"
        ...

    fraud = Agent(name="fraud", instructions="Decide whether to block.", model="gpt-4o-mini",
                  tools=[compute_risk_score], output_type=Verdict)
    app = tether.App("fraud")
    app.register(fraud)

    @app.workflow
    async def review(ctx: tether.Context, tx: Transaction) -> Verdict:
        result = await openai_agents.run(ctx, fraud, f"Review {tx.model_dump_json()}")
        return result.final_output

How: :func:`run` calls the SDK's own ``Runner.run`` on a copy of the agent (and of every
agent it hands off to) whose model is wrapped so that each model call goes through the run's
journal as an ``llm`` entry carrying the manual's digest, and whose function tools are wrapped
so that each call is a ``step``. The agent object itself is never changed.

Models: an agent whose ``model`` is a name (or unset) is served by the SDK's
``OpenAIChatCompletionsModel`` over the official ``openai`` client, at the base URL
``TETHER_MODEL_BASE_URL``, else ``OPENAI_BASE_URL``, else OpenAI's. Chat completions rather
than the Responses API because it is what every OpenAI-compatible server speaks (vLLM,
Ollama, LiteLLM, tether's scripted model server); an agent whose ``model`` is an SDK ``Model``
instance (the Responses model included) is called through that instance, still journaled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import TypeAdapter
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
    from agents import Agent, FunctionTool, Handoff, ModelSettings, RunConfig, Runner, RunResult
    from agents.agent_output import AgentOutputSchema, AgentOutputSchemaBase
    from agents.handoffs import handoff as make_handoff
    from agents.items import ModelResponse
    from agents.models.default_models import get_default_model
    from agents.models.interface import Model, ModelProvider, ModelTracing
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
    from agents.version import __version__ as FRAMEWORK_VERSION
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise missing_extra("openai-agents", "openai_agents", exc) from exc

__all__ = ["FRAMEWORK", "FRAMEWORK_VERSION", "Approval", "agent_name", "manuals", "run"]

FRAMEWORK = "openai-agents"
_RESPONSE = TypeAdapter(ModelResponse)


def agent_name(agent: Any) -> str:
    """The registered name of ``agent``: its own ``name``."""
    return str(agent.name)


def _callable_name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _instructions(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return {"dynamic": _callable_name(value)}


def _tool(tool: Any) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        approval = tool.needs_approval
        out: dict[str, Any] = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.params_json_schema,
            "strict": tool.strict_json_schema,
            "approval": approval if isinstance(approval, bool) else {"dynamic": _callable_name(approval)},
        }
        if not isinstance(tool.is_enabled, bool) or not tool.is_enabled:
            out["enabled"] = tool.is_enabled if isinstance(tool.is_enabled, bool) else {"dynamic": "callable"}
        guardrails = [g.get_name() for g in (tool.tool_input_guardrails or []) + (tool.tool_output_guardrails or [])]
        if guardrails:
            out["guardrails"] = guardrails
        sub = getattr(tool, "_agent_instance", None)
        if getattr(tool, "_is_agent_tool", False) and sub is not None:
            out["agent"] = sub.name
        return out
    return {"name": str(getattr(tool, "name", type(tool).__name__)), "type": type(tool).__name__}


def _handoff_of(item: Any) -> Handoff[Any, Any]:
    return item if isinstance(item, Handoff) else make_handoff(item)


def _handoff(item: Any) -> dict[str, Any]:
    found = _handoff_of(item)
    return {
        "name": found.tool_name,
        "description": found.tool_description,
        "parameters": found.input_json_schema,
        "agent": found.agent_name,
    }


def _output_schema(output_type: Any) -> Any:
    if output_type is None or output_type is str:
        return None
    schema = output_type if isinstance(output_type, AgentOutputSchemaBase) else AgentOutputSchema(output_type)
    if schema.is_plain_text():
        return None
    return {"schema": schema.json_schema(), "strict": schema.is_strict_json_schema()}


def _model(agent: Any) -> dict[str, Any]:
    model = agent.model
    if model is None:
        name: Any = get_default_model()
    elif isinstance(model, str):
        name = model
    else:
        name = {"class": type(model).__name__, "model": str(getattr(model, "model", ""))}
    settings: ModelSettings = agent.model_settings
    return {"name": name, "settings": settings.to_json_dict()}


def manual(agent: Any) -> dict[str, Any]:
    """What ``agent``'s model is shown besides the conversation (see :func:`manuals`)."""
    return {
        "framework": FRAMEWORK,
        "instructions": _instructions(agent.instructions),
        "prompt": None if agent.prompt is None else _instructions(agent.prompt),
        "handoff_description": agent.handoff_description,
        "model": _model(agent),
        "tools": [_tool(t) for t in agent.tools],
        "handoffs": [_handoff(h) for h in agent.handoffs],
        "output_schema": _output_schema(agent.output_type),
        "guardrails": {
            "input": [g.get_name() for g in agent.input_guardrails],
            "output": [g.get_name() for g in agent.output_guardrails],
        },
        "tool_use_behavior": _instructions(agent.tool_use_behavior)
        if not isinstance(agent.tool_use_behavior, dict)
        else to_jsonable_python(agent.tool_use_behavior),
        "mcp_servers": [str(getattr(s, "name", type(s).__name__)) for s in agent.mcp_servers],
    }


def _handoff_target(item: Any) -> Any:
    """The agent a ``handoff(...)`` object leads to, when the SDK keeps a reference to it."""
    ref = getattr(item, "_agent_ref", None)
    target = ref() if callable(ref) else None
    return target if isinstance(target, Agent) else None


def _reachable(agent: Any) -> list[Any]:
    """``agent`` and every agent it can hand off to or call as a tool, each once, by name."""
    seen: dict[str, Any] = {}
    todo = [agent]
    while todo:
        current = todo.pop(0)
        known = seen.get(current.name)
        if known is not None:
            if known is not current:
                raise IntegrationError(
                    f"two different agents are named {current.name!r} under agent {agent.name}: "
                    "give each agent a unique name (it names their journal entries)"
                )
            continue
        seen[current.name] = current
        for item in current.handoffs:
            target = item if isinstance(item, Agent) else _handoff_target(item)
            if target is not None:
                todo.append(target)
        for tool in current.tools:
            sub = getattr(tool, "_agent_instance", None)
            if getattr(tool, "_is_agent_tool", False) and isinstance(sub, Agent):
                todo.append(sub)
    return list(seen.values())


def manuals(agent: Any) -> dict[str, dict[str, Any]]:
    """The manual of ``agent`` and of every agent reachable from it, by agent name.

    Reachable: handed off to (``handoffs=[other]``) or called as a tool
    (``other.as_tool(...)``), recursively. Each is recorded in the manifest as an agent.
    """
    return {a.name: manual(a) for a in _reachable(agent)}


def _base_url() -> str:
    return next((os.environ[v] for v in BASE_URL_ENV if os.environ.get(v)), DEFAULT_BASE_URL)


def _inner_model(agent: Any, clients: list[openai.AsyncOpenAI]) -> Model:
    """The SDK model that really answers ``agent``'s calls (a client it opens joins ``clients``)."""
    if isinstance(agent.model, Model):
        return agent.model
    name = agent.model if isinstance(agent.model, str) and agent.model else get_default_model()
    client = openai.AsyncOpenAI(base_url=_base_url(), api_key=os.environ.get("OPENAI_API_KEY") or "not-set")
    clients.append(client)
    return OpenAIChatCompletionsModel(model=name, openai_client=client)


class _ChatProvider(ModelProvider):
    """Serves model names at tether's base URL, for agents run inside a tool (``as_tool``):
    their whole run is one step, so their calls are not journaled one by one."""

    def __init__(self, clients: list[openai.AsyncOpenAI]) -> None:
        self._clients = clients

    def get_model(self, model_name: str | None) -> Model:
        client = openai.AsyncOpenAI(base_url=_base_url(), api_key=os.environ.get("OPENAI_API_KEY") or "not-set")
        self._clients.append(client)
        return OpenAIChatCompletionsModel(model=model_name or get_default_model(), openai_client=client)


class _JournaledModel(Model):
    """An SDK ``Model`` whose every response goes through the run's journal."""

    def __init__(self, attempt: Attempt, agent: Any, inner: Model, retry: RetryPolicy) -> None:
        self._attempt = attempt
        self._name = agent.name
        self._inner = inner
        self._retry = retry
        agent_manual = manual(agent)
        self._manual_digest = manifest_digest(agent_manual)
        self._fields = field_digests(agent_manual)
        self._model_name = _model(agent)["name"]

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        conversation = {"system": system_instructions, "input": to_jsonable_python(input)}

        async def call() -> Any:
            try:
                response = await self._inner.get_response(
                    system_instructions,
                    input,
                    model_settings,
                    tools,
                    output_schema,
                    handoffs,
                    tracing,
                    previous_response_id=previous_response_id,
                    conversation_id=conversation_id,
                    prompt=prompt,
                )
            except openai.APIStatusError as exc:
                if exc.status_code != 429 and exc.status_code < 500:
                    raise TerminalError(f"the model refused the request ({exc.status_code}): {exc.message}") from None
                raise
            return _RESPONSE.dump_python(response, mode="json")

        result = await self._attempt.model_call(
            self._name,
            conversation=conversation,
            manual_digest=self._manual_digest,
            manual_fields=self._fields,
            args={"framework": FRAMEWORK, "model": self._model_name},
            call=call,
            retry=self._retry,
        )
        return _RESPONSE.validate_python(result)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise IntegrationError(
            "streaming is not durable: tether journals whole model responses; use openai_agents.run "
            "(Runner.run), not Runner.run_streamed"
        )


class _Durable:
    """Copies of the agents of one run whose model and tools go through the journal."""

    def __init__(self, attempt: Attempt, retry: RetryPolicy, tool_retry: RetryPolicy, known: list[Any]) -> None:
        self._attempt = attempt
        self._known = {id(a) for a in known}
        self._retry = retry
        self._tool_retry = tool_retry
        self._copies: dict[int, Any] = {}
        self.clients: list[openai.AsyncOpenAI] = []
        """The model clients opened for this run (closed when it ends)."""

    def agent(self, agent: Any) -> Any:
        found = self._copies.get(id(agent))
        if found is not None:
            return found
        if id(agent) not in self._known:
            raise IntegrationError(
                f"agent {agent.name} was reached by a handoff but is not in the manifest: hand off to the Agent "
                "itself or to handoff(agent), so that app.register records its manual"
            )
        if agent.mcp_servers:
            raise IntegrationError(
                f"agent {agent.name} uses MCP servers, whose tools tether cannot pin in the manifest: "
                "wrap what they do in function tools"
            )
        copy = agent.clone(model=_JournaledModel(self._attempt, agent, _inner_model(agent, self.clients), self._retry))
        self._copies[id(agent)] = copy
        copy.tools = [self._tool(agent, t) for t in agent.tools]
        copy.handoffs = [self._handoff(h) for h in agent.handoffs]
        return copy

    def _handoff(self, item: Any) -> Any:
        if isinstance(item, Agent):
            return self.agent(item)
        original: Callable[[Any, str], Awaitable[Any]] = item.on_invoke_handoff

        async def invoke(context: Any, arguments: str) -> Any:
            return self.agent(await original(context, arguments))

        return dataclasses.replace(item, on_invoke_handoff=invoke)

    def _tool(self, agent: Any, tool: Any) -> Any:
        if not isinstance(tool, FunctionTool):
            raise IntegrationError(
                f"agent {agent.name}: tool {getattr(tool, 'name', tool)!r} ({type(tool).__name__}) runs on the model "
                "provider's side, where tether cannot journal it: use function tools"
            )
        if is_workflow_tool(tool):
            return tool
        original = tool.on_invoke_tool
        attempt, retry, name = self._attempt, self._tool_retry, tool.name

        async def invoke(tool_context: Any, arguments: str) -> Any:
            try:
                parsed: Any = json.loads(arguments or "{}")
            except ValueError:
                parsed = arguments

            async def call() -> Any:
                scope = StepScope(name)
                token = _in_step.set(scope)
                try:
                    value = await original(tool_context, arguments)
                finally:
                    _in_step.reset(token)
                scope.check()
                return value

            return await attempt.tool_step(name, {"arguments": parsed}, call, retry=retry)

        return dataclasses.replace(tool, on_invoke_tool=invoke)


async def run(
    ctx: Context,
    agent: Any,
    input: str | list[Any],
    /,
    *,
    context: Any = None,
    max_turns: int = 10,
    approval_signal: str | None = None,
    run_config: RunConfig | None = None,
    retry: RetryPolicy = MODEL_RETRY,
    tool_retry: RetryPolicy | None = None,
) -> RunResult:
    """Run ``agent`` on ``input`` durably, like ``Runner.run``, and return the SDK's ``RunResult``.

    Every model call (of ``agent`` and of the agents it hands off to) is an ``llm`` entry
    carrying that agent's manual digest; every function tool call is a ``step``; on replay
    nothing is called again. A tool whose ``needs_approval`` interrupts the run waits for the
    workflow's signal ``approval_signal`` (payload :class:`tether.integrations.Approval`, one
    per interrupted call, in order): the run suspends with no process kept, and the tool runs
    (or the model is told it was rejected) when the signal arrives, on the run's deployment.

    Args:
        ctx: the workflow's context.
        agent: an ``agents.Agent`` registered with ``app.register(agent)``.
        input: the user's input (a string, or input items).
        context: the SDK's run context object, passed to tools and dynamic instructions.
        max_turns: as in ``Runner.run``.
        approval_signal: the declared signal that approves or rejects tool calls.
        run_config: as in ``Runner.run``; tracing is disabled unless it enables it, and it
            may not set ``model`` (set the model on the agent: it is part of the manual).
        retry: how a failed model call is retried (a 429, a 5xx or a network error).
        tool_retry: how a tool call that raises is retried (default: tether's step policy).
            The SDK's own failure handling first turns a tool's exception into a message
            for the model, unless the tool was made with ``failure_error_function=None``.

    Raises:
        IntegrationError: the agent is not registered, or uses what tether cannot journal.
        StepFailedError: a model call failed for good.
    """
    attempt = attempt_of(ctx)
    registered = attempt.app.framework_agents.get(getattr(agent, "name", ""))
    known = [] if registered is None else _reachable(registered)
    if not any(a is agent for a in known):
        raise IntegrationError(
            f"agent {getattr(agent, 'name', agent)!r} is not registered with app {attempt.app.name}: "
            "call app.register(agent) so that its manual is part of the deployment"
        )
    durable = _Durable(attempt, retry, tool_retry or RetryPolicy(), known)
    config = run_config or RunConfig(tracing_disabled=True, model_provider=_ChatProvider(durable.clients))
    if config.model is not None:
        raise IntegrationError("run_config.model overrides the agents' models: set the model on the agent instead")
    start = durable.agent(agent)
    token = _context.set(ctx)
    try:
        result = await Runner.run(start, input, context=context, max_turns=max_turns, run_config=config)
        while result.interruptions:
            state = result.to_state()
            for item in result.interruptions:
                tool = item.tool_name or "a tool"
                if approval_signal is None:
                    raise IntegrationError(
                        f"agent {agent.name}: tool {tool} needs approval: pass approval_signal='NAME' "
                        "to openai_agents.run and declare the signal on the workflow"
                    )
                decision = approval_of(approval_signal, await ctx.signal(approval_signal))
                if decision.approved:
                    state.approve(item)
                else:
                    state.reject(item, rejection_message=decision.reason or None)
            result = await Runner.run(start, state, context=context, max_turns=max_turns, run_config=config)
        return result
    finally:
        _context.reset(token)
        for client in durable.clients:
            await client.close()
