"""tether: durable execution for long-running Python agents and workflows, with versioning
built into the infrastructure.

This module is the SDK facade; see DESIGN.md for the words used here.
"""

from __future__ import annotations

from tether._version import __version__
from tether.errors import (
    AgentError,
    ChildFailedError,
    JournalMismatchError,
    RunCancelledError,
    SignalTimeoutError,
    StepFailedError,
    TerminalError,
    TetherError,
)
from tether.sdk._query import QueryContext
from tether.sdk.agents import Model
from tether.sdk.app import App, RetryPolicy
from tether.sdk.context import Context, RunInfo

__all__ = [
    "AgentError",
    "App",
    "ChildFailedError",
    "Context",
    "JournalMismatchError",
    "Model",
    "QueryContext",
    "RetryPolicy",
    "RunCancelledError",
    "RunInfo",
    "SignalTimeoutError",
    "StepFailedError",
    "TerminalError",
    "TetherError",
    "__version__",
]
