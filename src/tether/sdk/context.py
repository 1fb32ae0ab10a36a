"""The user-facing :class:`Context`: every method that touches the outside world is journaled."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

if TYPE_CHECKING:
    from tether.sdk.agents import AgentDefinition

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a run knows about itself."""

    run_id: str
    """The run's id."""
    workflow: str
    """The workflow's registered name."""
    deployment_id: str
    """The deployment the run is pinned to."""
    deployment_label: str
    """Its label, e.g. ``v3``."""
    attempt: int
    """The attempt number, from 1."""


class Context(ABC):
    """The durable context a workflow receives as its first argument.

    Call its methods from the workflow's own task (or tasks it gathers): a command's journal
    index is assigned when the method is called, so ``asyncio.gather(ctx.step(a),
    ctx.step(b))`` replays identically. Await only context calls in workflow code; anything
    else that can differ between two replays belongs in a step or ``ctx.run``.
    """

    @property
    @abstractmethod
    def info(self) -> RunInfo:
        """The run id, deployment id and label, and attempt number."""

    @abstractmethod
    def step(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        """Call a registered function or tool, with its retry policy; journaled as ``step``.

        The function is resolved by its registered name inside the pinned deployment. Its
        result is durable before this returns, and is read back from the journal on replay.

        Raises:
            StepFailedError: the function failed and its retries are exhausted.
        """

    @abstractmethod
    def run(self, name: str, fn: Callable[[], Awaitable[T] | T], /) -> Awaitable[T]:
        """Run an inline side effect once and journal its JSON result under ``name``."""

    @abstractmethod
    def now(self) -> datetime:
        """The current time (UTC), recorded once and replayed."""

    @abstractmethod
    def uuid(self) -> uuid.UUID:
        """A random UUID, recorded once and replayed."""

    @abstractmethod
    def random(self) -> float:
        """A random float in [0, 1), recorded once and replayed."""

    @abstractmethod
    def sleep(self, duration: timedelta | float, /) -> Awaitable[None]:
        """A durable timer: the attempt may end and the run wakes when it fires."""

    @abstractmethod
    def signal(self, name: str, /, *, timeout: timedelta | float | None = None) -> Awaitable[Any]:
        """The next payload of the declared signal ``name`` (buffered if it arrived earlier).

        Raises:
            SignalTimeoutError: no signal arrived within ``timeout``.
        """

    @abstractmethod
    def set(self, key: str, value: Any, /) -> None:
        """Durable run state, readable by clients (``GET /v1/runs/{id}/state``)."""

    @abstractmethod
    async def agent(self, agent: AgentDefinition, prompt: str, /) -> Any:
        """Run ``agent`` on ``prompt`` durably and return its final answer.

        Every model call is an ``llm`` journal entry recording the digest of the manual the
        model was given; every tool call is a ``step`` entry (a tool that takes the context
        runs inline, and may wait for a signal). On replay, nothing is called again.

        Raises:
            AgentError: no valid final answer within the agent's ``max_turns``.
        """

    @abstractmethod
    def continue_as_new(self, input: dict[str, Any] | None = None, /, *, upgrade: bool = True) -> NoReturn:
        """End this run and start a linked one with ``input``: the safe point for a long run.

        With ``upgrade`` (the default) the new run is pinned to what the run's environment
        names now; without it, to this run's deployment. Journaled, and never returns.
        """

    @abstractmethod
    def child(
        self, workflow: Callable[..., Awaitable[T]] | str, input: dict[str, Any] | None = None, /
    ) -> Awaitable[T]:
        """Start a child run of ``workflow`` on this run's deployment and wait for its output.

        ``input`` maps the child workflow's parameters to values, like a run's input.

        Raises:
            ChildFailedError: the child run failed.
        """
