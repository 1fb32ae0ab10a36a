"""Agents: a model, its instructions and tools, and the manual the model reads.

Model calls go through the official ``openai`` client (``AsyncOpenAI`` with a base URL),
imported only when an agent first calls its model.

The *manual* is exactly what a model call is given besides the conversation: the
instructions, every tool's name, description and parameter schema, the model's name and
parameters, and the schema of the expected answer. Its digest is recorded on every ``llm``
journal entry, so a run can never read its history through a different manual unnoticed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from tether.core.manifest import manifest_digest
from tether.errors import TerminalError
from tether.sdk.app import ComponentDefinition, RetryPolicy

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BASE_URL_ENV = ("TETHER_MODEL_BASE_URL", "OPENAI_BASE_URL")
MODEL_RETRY = RetryPolicy(max_attempts=5, initial_interval=0.5, backoff=2.0, max_interval=20.0)


class Model:
    """A chat model behind an OpenAI-compatible API.

    Example: ``tether.Model("openai:gpt-4o-mini", temperature=0)``. The base URL comes from
    ``base_url``, else ``TETHER_MODEL_BASE_URL``, else ``OPENAI_BASE_URL``, else OpenAI's; the
    key from the environment variable named by ``api_key_env``. Neither is part of the
    manual: they say where the model is, not what it is told.
    """

    def __init__(
        self,
        spec: str,
        /,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        retry: RetryPolicy = MODEL_RETRY,
        **params: Any,
    ) -> None:
        """Describe the model ``provider:name`` and the parameters of every call."""
        provider, _, name = spec.partition(":")
        if not name:
            provider, name = "openai", spec
        if provider != "openai":
            raise ValueError(f"model provider {provider!r} is not supported: use an OpenAI-compatible 'openai:NAME'")
        self.provider = provider
        self.name = name
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retry = retry
        self.params = dict(sorted(params.items()))

    def describe(self) -> dict[str, Any]:
        """The model as the manual records it."""
        return {"provider": self.provider, "name": self.name, "params": self.params}

    def base_url_resolved(self) -> str:
        """The OpenAI-compatible API's base URL (``.../v1``)."""
        base = self.base_url or next((os.environ[v] for v in BASE_URL_ENV if os.environ.get(v)), DEFAULT_BASE_URL)
        return base.rstrip("/")

    def url(self) -> str:
        """The chat-completions endpoint to call."""
        return self.base_url_resolved() + "/chat/completions"


class ModelUnavailableError(Exception):
    """The model's API answered 429 or 5xx, or could not be reached: the call is retried."""


@functools.cache
def _ssl_context() -> Any:
    """The SSL context the ``openai`` client would build (its HTTP library's default), built once
    per process: building it loads the CA bundle, tens of milliseconds of CPU, which a new client
    per model call would otherwise pay on every call (benchmark W6)."""
    import httpx2  # the openai client's HTTP library

    return httpx2.create_ssl_context()


async def complete(model: Model, request: dict[str, Any]) -> dict[str, Any]:
    """One chat-completions call through the official ``openai`` client; the response as JSON.

    The request body is sent as given (the client adds nothing to it) and the response is
    returned with exactly the fields the server sent. The client's own retries are off: the
    call is retried as a step, with ``model.retry``.

    Raises:
        ModelUnavailableError: retryable failure (rate limited, server error, network).
        TerminalError: the API refused the request (another 4xx).
    """
    import openai  # imported here: the client costs import time that workflows without agents never pay

    key = os.environ.get(model.api_key_env)
    client = openai.AsyncOpenAI(
        base_url=model.base_url_resolved(),
        api_key=key or "unset",
        timeout=model.timeout,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=_ssl_context()),
    )
    body = {k: v for k, v in request.items() if k not in ("model", "messages")}
    try:
        async with client:
            response = await client.chat.completions.create(
                model=request["model"],
                messages=request["messages"],
                extra_body=body,
                # Without a key no Authorization header is sent at all (local models need none).
                extra_headers=None if key else {"Authorization": openai.Omit()},
            )
    except openai.APIStatusError as exc:
        text = exc.response.text
        if exc.status_code == 429 or exc.status_code >= 500:
            raise ModelUnavailableError(f"the model answered {exc.status_code}: {text[:300]}") from None
        raise TerminalError(f"the model refused the request ({exc.status_code}): {text[:500]}") from None
    except openai.APIConnectionError as exc:
        raise ModelUnavailableError(f"cannot reach the model at {model.url()}: {exc}") from None
    answer: dict[str, Any] = response.model_dump(mode="json", exclude_unset=True)
    return answer


@dataclass(eq=False)
class AgentDefinition:
    """What ``app.agent(...)`` registers."""

    name: str
    """The registered name."""
    model: Model
    """The model it calls."""
    instructions: str
    """The system prompt."""
    tools: list[ComponentDefinition]
    """The tools it may call (registered with ``@app.tool``)."""
    output_type: Any
    """The type of the final answer (``str``, or anything pydantic validates from JSON)."""
    max_turns: int
    """Model calls allowed before the agent gives up."""
    description: str = ""
    """What the agent is for (for people; not sent to the model)."""
    kind: str = field(default="agent", init=False)

    def __post_init__(self) -> None:
        self.output = TypeAdapter(self.output_type)

    def tool_specs(self) -> list[dict[str, Any]]:
        """The tools as the model is shown them (OpenAI function specs)."""
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_model.model_json_schema(),
                },
            }
            for tool in self.tools
        ]

    def response_format(self) -> dict[str, Any] | None:
        """The ``response_format`` asking for the answer's JSON schema (None for plain text)."""
        if self.output_type is str:
            return None
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": self.output.json_schema()}}

    def manual(self) -> dict[str, Any]:
        """Everything the model is given besides the conversation."""
        return {
            "instructions": self.instructions,
            "model": self.model.describe(),
            "tools": self.tool_specs(),
            "output_schema": None if self.output_type is str else self.output.json_schema(),
        }

    def manual_digest(self) -> str:
        """Digest of :meth:`manual`."""
        return manifest_digest(self.manual())

    def describe(self) -> dict[str, Any]:
        """This agent's manifest entry."""
        manual = self.manual()
        return {
            "kind": "agent",
            "name": self.name,
            "description": self.description,
            "instructions": self.instructions,
            "model": manual["model"],
            "tools": [tool.name for tool in self.tools],
            "output_schema": manual["output_schema"],
            "max_turns": self.max_turns,
            "manual_digest": manifest_digest(manual),
        }
