"""Non-deterministic calls in workflow code, caught at the line that makes them.

A workflow's body is replayed from its journal, so anything it reads that can differ between two
replays (the clock, a random number, a new uuid) or that waits outside the journal (a plain
``asyncio.sleep``) breaks replay later, far from the mistake. Temporal's sandbox fails the task;
Restate warns. tether stops the run ``stuck`` with the file and line and what to use instead:
the run keeps its journal and resumes once fixed code is deployed and the run moved to it
(``tether runs move``), while a mere warning would let a run go on writing a journal that may
not replay (see ``docs/concepts.md``).

How: :func:`install` replaces ``time.time``, ``time.monotonic``, ``asyncio.sleep``, the
``random`` functions, ``uuid.uuid4`` and a few siblings, once per process, by wrappers that
read one context variable. It is set only in the workflow's own task (and tasks it creates);
steps, ``ctx.run`` and model calls run in tasks where it is unset, so they may do anything.
Outside a workflow a wrapper costs one ``ContextVar.get``. Only calls made *directly* by the
app's code count: the standard library and installed packages (a logger stamping its record
with ``time.time()``, an agent framework making trace ids) are not the app's mistake.

``datetime.now()`` cannot be wrapped (it is a C method of an immutable type) and is refused
where the workflow is registered instead (:func:`clock_calls_in`).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import random
import sys
import sysconfig
import textwrap
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from types import ModuleType
from typing import Any, NoReturn, Protocol


class Reporter(Protocol):
    """What the guarded calls report to: the attempt whose workflow task made them."""

    def nondeterministic(self, call: str, instead: str, where: str) -> NoReturn:
        """End the attempt: ``call`` at ``where`` (``file:line``) should be ``instead``."""
        ...


ACTIVE: ContextVar[Reporter | None] = ContextVar("tether_workflow_guard", default=None)
"""The attempt whose workflow code runs in this task, or None (steps, the runtime, tests)."""

_CLOCK = "ctx.now() (the time, recorded once and replayed)"
_WAIT = "await ctx.sleep(...) (a durable timer)"
_RANDOM = "ctx.random() (recorded once and replayed), or a step"
_UUID = "ctx.uuid() (recorded once and replayed)"

GUARDED: tuple[tuple[ModuleType, str, str], ...] = (
    (time, "time", _CLOCK),
    (time, "time_ns", _CLOCK),
    (time, "monotonic", _CLOCK),
    (time, "monotonic_ns", _CLOCK),
    (time, "perf_counter", _CLOCK),
    (asyncio, "sleep", _WAIT),
    (uuid, "uuid1", _UUID),
    (uuid, "uuid4", _UUID),
    *(
        (random, name, _RANDOM)
        for name in (
            "random",
            "randint",
            "randrange",
            "choice",
            "choices",
            "shuffle",
            "sample",
            "uniform",
            "gauss",
            "getrandbits",
            "randbytes",
        )
    ),
)
"""(module, function, what to use instead) for every call caught at run time."""

REAL: dict[str, Callable[..., Any]] = {f"{m.__name__}.{n}": getattr(m, n) for m, n, _ in GUARDED}
"""The original functions, for tether's own code that runs in a workflow's task."""

_installed = False
_LIBRARIES: tuple[str, ...] = ()


def _library_paths() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    found.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tether itself
    return tuple(sorted(p.rstrip(os.sep) + os.sep for p in found))


def app_frame(depth: int) -> str | None:
    """``file:line`` of the frame ``depth`` levels up when it is the app's code, else None."""
    frame = sys._getframe(depth + 1)
    filename = frame.f_code.co_filename
    if filename.startswith("<") or filename.startswith(_LIBRARIES):
        return None
    return f"{filename}:{frame.f_lineno}"


_NO_ARGUMENTS = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "uuid4", "random"}
"""Functions called without arguments: their wrapper skips packing ``*args`` (the event loop
reads ``time.monotonic`` on every turn)."""


def _wrap(module: ModuleType, name: str, instead: str) -> Callable[..., Any]:
    real = getattr(module, name)
    shown = f"{module.__name__}.{name}()"
    active = ACTIVE.get

    def report() -> None:
        where = app_frame(2)
        if where is not None:
            reporter = active()
            assert reporter is not None
            reporter.nondeterministic(shown, instead, where)

    def guarded_plain() -> Any:
        if active() is not None:
            report()
        return real()

    def guarded_any(*args: Any, **kwargs: Any) -> Any:
        if active() is not None:
            report()
        return real(*args, **kwargs)

    guarded = guarded_plain if name in _NO_ARGUMENTS else guarded_any

    guarded.__name__ = real.__name__
    guarded.__qualname__ = getattr(real, "__qualname__", real.__name__)
    guarded.__doc__ = real.__doc__
    guarded.__wrapped__ = real  # type: ignore[attr-defined]
    return guarded


def install() -> None:
    """Put the guards in place (once per process; later calls do nothing)."""
    global _installed, _LIBRARIES
    if _installed:
        return
    _LIBRARIES = _library_paths()
    for module, name, instead in GUARDED:
        setattr(module, name, _wrap(module, name, instead))
    _installed = True


_CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


def clock_calls_in(fn: Callable[..., Any]) -> list[tuple[str, int]]:
    """Calls of ``datetime.now()``, ``datetime.utcnow()`` or ``date.today()`` in ``fn``'s own
    body (not in lambdas or nested functions, which are typically handed to ``ctx.run``):
    ``(call, line)`` pairs, empty when the source cannot be read."""
    try:
        lines, first = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return []
    try:
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except SyntaxError:
        return []
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not top:
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                base = child.func.value
                owner = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
                if (owner, child.func.attr) in _CLOCK_CALLS:
                    found.append((f"{owner}.{child.func.attr}()", first + child.lineno - 1))
            visit(child, False)

    visit(tree, True)
    return found
