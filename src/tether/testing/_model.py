"""A scripted OpenAI-compatible model served from a thread of the test process."""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from collections import deque
from typing import Any

import uvicorn

from tether.sdk.agents import BASE_URL_ENV
from tether.testing.model_server import Script, create_model_app


class ScriptedModel:
    """A chat-completions server on loopback answering from replies you queue (or a script).

    Agents reach it through tether's real model client: while it runs (``with
    ScriptedModel() as model:``, or the ``scripted_model`` pytest fixture) ``TETHER_MODEL_BASE_URL``
    points at it, so a ``tether.Model("openai:any-name")`` without ``base_url`` calls it.

    Example::

        scripted_model.reply(
            ScriptedModel.tool_call("lookup", {"city": "Paris"}),
            ScriptedModel.answer({"summary": "sunny"}),
        )

    Each request takes the next queued reply; with none left, ``script`` (if set) answers,
    else the request fails with HTTP 400 saying that the script ran out (the agent sees a
    :class:`tether.TerminalError`). Every request body is kept in :attr:`requests`.
    """

    def __init__(self, script: Script | None = None) -> None:
        """Prepare the server; it starts with :meth:`start` or ``with``."""
        self.script = script
        """Answers requests once the queued replies are used up."""
        self.requests: list[dict[str, Any]] = []
        """Every request received, in order (what the model was shown)."""
        self.url = ""
        """The base URL (``http://127.0.0.1:PORT/v1``) once started."""
        self._replies: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._saved_env: str | None = None

    @staticmethod
    def tool_call(name: str, arguments: dict[str, Any], *, call_id: str | None = None) -> dict[str, Any]:
        """An assistant message asking to call tool ``name`` with ``arguments``."""
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id or f"call_{next(_ids)}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            ],
        }

    @staticmethod
    def answer(content: Any) -> dict[str, Any]:
        """A final answer: text as given, anything else as JSON (for a typed ``output_type``)."""
        return {"role": "assistant", "content": content if isinstance(content, str) else json.dumps(content)}

    def reply(self, *messages: dict[str, Any]) -> None:
        """Queue the assistant messages the next requests get, in order."""
        with self._lock:
            self._replies.extend(messages)

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            if self._replies:
                return self._replies.popleft()
        if self.script is not None:
            return self.script(body)
        return {
            "status": 400,
            "error": f"the scripted model has no reply left for request {len(self.requests)}: queue one with "
            "scripted_model.reply(...) or set scripted_model.script",
        }

    def start(self) -> ScriptedModel:
        """Serve on a free loopback port and point ``TETHER_MODEL_BASE_URL`` at it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        config = uvicorn.Config(create_model_app(self._answer), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="tether-scripted-model", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scripted model server did not start")
            time.sleep(0.01)
        self._saved_env = os.environ.get(BASE_URL_ENV[0])
        os.environ[BASE_URL_ENV[0]] = self.url
        return self

    def stop(self) -> None:
        """Stop serving and restore ``TETHER_MODEL_BASE_URL``."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None
        if self._saved_env is None:
            os.environ.pop(BASE_URL_ENV[0], None)
        else:
            os.environ[BASE_URL_ENV[0]] = self._saved_env

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_ids = itertools.count(1)
