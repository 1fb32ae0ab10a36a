"""A small OpenAI-compatible chat-completions server that answers from a script.

Examples and tests use it so that agents run offline, through tether's real HTTP model
client. Run it with ``python -m tether.testing.model_server [--port P] [--log FILE]
[--delay SECONDS] [--timings FILE]``; it prints ``model server listening on
http://127.0.0.1:P/v1`` and serves ``POST /v1/chat/completions``. Every request it receives is
appended to ``--log`` as one JSON line, so a test can check exactly what a model was shown.

``--delay SECONDS`` makes every answer wait that long first (``asyncio.sleep``, so concurrent
requests overlap, like a real model's latency); the benchmark's agent workload uses 0.02.
Every answer says how long the model server took for it, from the request received to the
answer ready, in the ``x-model-seconds`` header; with ``--timings FILE`` each request also
appends ``{"received": UNIX_TIME, "seconds": S}`` as one line to that file, so a benchmark can
subtract the model's own time from what it measured.

Scripts: ``researcher`` calls every tool it is offered once and reports (see
:func:`researcher`); ``fraud-judge`` (the default) plays a careful reviewer: given a transaction it calls the first
tool it is offered with the transaction's matching fields; given the tool's result it reads
the scale from that tool's *description* ("... from 0 to N ...") and blocks when the score is
above the scale's midpoint. So what it decides depends on the manual it is shown.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import itertools
import json
import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Script = Callable[[dict[str, Any]], dict[str, Any]]
"""A script maps a chat-completions request to the assistant message to answer, or to
``{"status": 429}`` (any status, with an optional ``"error"`` text) to answer an HTTP failure
instead."""

_SCALE = re.compile(r"from 0 to (\d+)")
_OBJECT = re.compile(r"\{.*\}", re.S)


def fraud_judge(request: dict[str, Any]) -> dict[str, Any]:
    """Call the offered tool on the transaction, then judge its score on the described scale."""
    messages: list[dict[str, Any]] = request["messages"]
    tools: list[dict[str, Any]] = request.get("tools") or []
    last = messages[-1]
    if last["role"] == "user" and tools:
        tool = tools[0]["function"]
        found = _OBJECT.search(str(last.get("content") or ""))
        facts = json.loads(found.group(0)) if found else {}
        wanted = tool.get("parameters", {}).get("properties", {})
        arguments = {key: value for key, value in facts.items() if key in wanted}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{len(messages)}",
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": json.dumps(arguments)},
                }
            ],
        }
    if last["role"] == "tool":
        called = next(
            (
                call["function"]["name"]
                for message in reversed(messages)
                for call in message.get("tool_calls") or []
                if call.get("id") == last.get("tool_call_id")
            ),
            None,
        )
        description = next((t["function"]["description"] for t in tools if t["function"]["name"] == called), "")
        match = _SCALE.search(description)
        scale = int(match.group(1)) if match else 10
        try:
            score = float(json.loads(last["content"]))
        except (TypeError, ValueError):
            # Not a score (a refused call, a tool's error): nothing to block on.
            reason = f"no risk score: {last['content']}"
            return {"role": "assistant", "content": json.dumps({"decision": "allow", "reason": reason})}
        decision = "block" if score > scale / 2 else "allow"
        reason = f"risk score {score:g} on a 0 to {scale} scale"
        return {"role": "assistant", "content": json.dumps({"decision": decision, "reason": reason})}
    return {"role": "assistant", "content": json.dumps({"decision": "allow", "reason": "nothing to review"})}


def _tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        ],
    }


def researcher(request: dict[str, Any]) -> dict[str, Any]:
    """Call each offered tool once, in order, then report what they returned.

        A tool's arguments come from the JSON object in the user's message (same keys), else the
        text of the latest tool result. The answer has ``topic``, ``findings`` (the first tool's
        result) and ``published`` (whether the last tool's result starts with "published", which a
    refused call's message does not); it is a
        call of the ``final_result`` tool when one is offered (Pydantic AI's tool output), else the
        message's content.
    """
    messages: list[dict[str, Any]] = request["messages"]
    offered = [t["function"] for t in request.get("tools") or []]
    functions = [f for f in offered if f["name"] != "final_result"]
    user = next((m for m in messages if m["role"] == "user"), {})
    found = _OBJECT.search(str(user.get("content") or ""))
    facts = json.loads(found.group(0)) if found else {}
    called = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or []]
    results = [str(m.get("content") or "") for m in messages if m["role"] == "tool"]
    for function in functions:
        if function["name"] not in called:
            wanted = function.get("parameters", {}).get("properties", {})
            arguments = {key: facts.get(key, results[-1] if results else "") for key in wanted}
            return _tool_call(f"call_{len(messages)}", function["name"], arguments)
    try:
        findings = json.loads(results[0]) if results else []
    except ValueError:
        try:  # the OpenAI Agents SDK shows a tool's list result as its Python repr
            findings = ast.literal_eval(results[0])
        except (ValueError, SyntaxError):
            findings = [results[0]]
    last = results[-1].strip('"').lower() if results else ""
    answer = {
        "topic": facts.get("topic", ""),
        "findings": findings if isinstance(findings, list) else [findings],
        "published": last.startswith("published"),
    }
    if any(f["name"] == "final_result" for f in offered):
        return _tool_call(f"call_{len(messages)}", "final_result", answer)
    return {"role": "assistant", "content": json.dumps(answer)}


SCRIPTS: dict[str, Script] = {"fraud-judge": fraud_judge, "researcher": researcher}


def create_model_app(
    script: Script, *, log: Path | None = None, delay: float = 0.0, timings: Path | None = None
) -> Starlette:
    """The ASGI app answering chat completions with ``script``, each answer ``delay`` seconds
    late; the time each request took is in its ``x-model-seconds`` header and, with
    ``timings``, appended to that file."""
    if delay < 0:
        raise ValueError(f"delay must be 0 or more seconds, not {delay}")
    ids = itertools.count(1)

    async def completions(request: Request) -> JSONResponse:
        received, started = time.time(), time.perf_counter()
        response = await answer(request)
        seconds = time.perf_counter() - started
        response.headers["x-model-seconds"] = f"{seconds:.6f}"
        if timings is not None:
            with timings.open("a") as out:
                out.write(json.dumps({"received": received, "seconds": round(seconds, 6)}) + "\n")
        return response

    async def answer(request: Request) -> JSONResponse:
        body = await request.json()
        if delay:
            await asyncio.sleep(delay)
        if log is not None:
            with log.open("a") as out:
                out.write(json.dumps(body, sort_keys=True) + "\n")
        message = script(body)
        if "status" in message:
            # A script may answer an HTTP failure instead (e.g. 429, to exercise retries).
            text = str(message.get("error", "scripted failure"))
            return JSONResponse({"error": {"message": text}}, status_code=int(message["status"]))
        words = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
        answer = len(str(message.get("content") or message.get("tool_calls")).split())
        return JSONResponse(
            {
                "id": f"chatcmpl-{next(ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                    }
                ],
                "usage": {"prompt_tokens": words, "completion_tokens": answer, "total_tokens": words + answer},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    """Serve a script on loopback until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m tether.testing.model_server")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--script",
        default="fraud-judge",
        choices=sorted(SCRIPTS),
        help="the script answering every request (one script per server; a request whose model is a script's name "
        "gets that script)",
    )
    parser.add_argument("--log", type=Path, default=None, help="append every request to this JSONL file")
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before every answer (concurrent requests overlap; default 0)",
    )
    parser.add_argument(
        "--timings",
        type=Path,
        default=None,
        metavar="FILE",
        help='append {"received": UNIX_TIME, "seconds": S} per request to this JSONL file',
    )
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error(f"--delay must be 0 or more seconds, not {args.delay}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    print(f"model server listening on http://127.0.0.1:{sock.getsockname()[1]}/v1", file=sys.stderr, flush=True)
    default = SCRIPTS[args.script]
    app = create_model_app(
        lambda body: SCRIPTS.get(str(body.get("model")), default)(body),
        log=args.log,
        delay=args.delay,
        timings=args.timings,
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
