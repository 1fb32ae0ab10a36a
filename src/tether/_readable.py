"""A journal entry in words, for ``tether runs show`` and the dashboard.

Raw entries are JSON made for replay: an ``llm`` entry holds a whole chat completion, a
``signal`` entry the payload but not who sent it. :func:`summarize` says what happened —
"asked to call compute_risk_score(amount=120)", "answered: approve", "signal approval from
token:alice@default arrived 12:03:04" — and :func:`clip` shortens it for a table cell (never
under ``--json``, which prints the entries whole).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tether.core.journal import MANUAL_KEY


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with ``…`` when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call(name: str, arguments: Any) -> str:
    """``name(a=1, b="x")`` from a tool call's arguments (a JSON object or its text)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return f"{name}({arguments})"
    if isinstance(arguments, Mapping):
        return f"{name}({', '.join(f'{k}={_json(v)}' for k, v in arguments.items())})"
    return f"{name}({'' if arguments is None else _json(arguments)})"


def _turn(calls: list[str], texts: list[str]) -> str:
    if calls:
        return "asked to call " + ", ".join(calls)
    if texts:
        return "answered: " + " ".join(texts)
    return "answered nothing"


def _model_turn(result: Any) -> str | None:
    """What a model answered — the tool calls it asked for, or its final answer — from a chat
    completion, an OpenAI Agents SDK response or a Pydantic AI response; None for another shape."""
    if not isinstance(result, Mapping):
        return None
    choices = result.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        message = choices[0].get("message")
        if not isinstance(message, Mapping):
            return None
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            calls.append(_call(str(function.get("name", "?")), function.get("arguments")))
        content = message.get("content")
        texts = [] if content is None else [content if isinstance(content, str) else _json(content)]
        return _turn(calls, texts)
    items = result.get("output")
    if isinstance(items, list):  # OpenAI Agents SDK: Responses API output items
        calls, texts = [], []
        for item in (i for i in items if isinstance(i, Mapping)):
            if item.get("type") == "function_call":
                calls.append(_call(str(item.get("name", "?")), item.get("arguments")))
            elif item.get("type") == "message":
                for part in item.get("content") or []:
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                        texts.append(part["text"])
        return _turn(calls, texts)
    parts = result.get("parts")
    if isinstance(parts, list):  # Pydantic AI: a ModelResponse's parts
        calls, texts = [], []
        for part in (p for p in parts if isinstance(p, Mapping)):
            if part.get("part_kind") == "tool-call":
                calls.append(_call(str(part.get("tool_name", "?")), part.get("args")))
            elif part.get("part_kind") == "text" and isinstance(part.get("content"), str):
                texts.append(part["content"])
        return _turn(calls, texts)
    return None


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


def summarize(entry: Mapping[str, Any], signal: Mapping[str, Any] | None = None) -> str:
    """What ``entry`` (the API form of a journal entry) records, in words.

    Args:
        entry: the entry.
        signal: for a ``signal`` entry, the signal it took (from ``GET /v1/runs/{id}/signals``):
            its arrival time and sender are the signal's own, not the entry's.
    """
    kind, name = entry.get("kind"), entry.get("name")
    completed, error, result = entry.get("completed"), entry.get("error"), entry.get("result")
    args = entry.get("args")
    if error:
        failure = f"{error.get('type')}: {error.get('message')}" if isinstance(error, Mapping) else _json(error)
    if kind == "signal":
        if not completed:
            timeout = args.get("timeout") if isinstance(args, Mapping) else None
            return f"waiting for signal {name}" + (f" (times out after {_seconds(timeout)})" if timeout else "")
        if error:
            return f"signal {name}: {failure}"
        if signal is None:
            return f"signal {name} taken: {_json(result)}"
        sender = signal.get("sent_by") or "an unrecorded sender"
        return f"signal {name} from {sender}, arrived {_time(signal.get('created_at'))}: {_json(result)}"
    if kind == "sleep":
        seconds = _seconds(args.get("seconds") if isinstance(args, Mapping) else None)
        if not completed:
            return f"sleeping {seconds}"
        return f"slept {seconds}" + (f" ({failure})" if error else f", woke {_time(entry.get('completed_at'))}")
    if kind == "child":
        child = (entry.get("extra") or {}).get("child_run_id") if isinstance(entry.get("extra"), Mapping) else None
        run = f" run {child}" if child else ""
        if not completed:
            return f"waiting for child {name}{run}"
        return f"child {name}{run} " + (f"failed: {failure}" if error else f"returned {_json(result)}")
    if error:
        what = {"llm": f"model call of agent {name}", "run": f"run {name}"}.get(str(kind), f"{kind} {name}")
        return f"{what} failed: {failure}"
    if kind == "llm":
        turn = _model_turn(result)
        if turn is None and isinstance(result, Mapping):
            turn = "answered: " + _json({k: v for k, v in result.items() if k != MANUAL_KEY})
        return f"agent {name} {turn or 'answered: ' + _json(result)}"
    if kind == "step":
        shown = _call(str(name), args) if args is not None else str(name)
        return f"called {shown} → {_json(result)}"
    if kind == "run":
        return f"ran {name} → {_json(result)}"
    if kind == "state":
        return f"set {name} = {_json(result)}"
    if kind in ("now", "uuid", "random"):
        return f"{kind} = {_json(result)}"
    if kind == "continue_as_new":
        return f"continued as a new run with input {_json(args if args is not None else result)}"
    return f"{kind} {name} → {_json(result)}"


def signals_by_entry(signals: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """The signals a wait took, by the index of the entry that took it."""
    return {s["consumed_by_entry"]: s for s in signals if isinstance(s.get("consumed_by_entry"), int)}
