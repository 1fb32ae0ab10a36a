"""Drive a workflow through attempts in memory, the way the runtime would, without a server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tether.core.journal import EntryKind, JournalEntry
from tether.errors import NotFoundError, QueryFailedError, QueryRefusedError, SchemaError
from tether.protocol import ErrorInfo, InvokeRequest, InvokeResponse
from tether.sdk._attempt import Attempt, describe_validation
from tether.sdk._query import answer_query
from tether.sdk.app import App, definition_of
from tether.testing._sink import MemorySink

DEPLOYMENT_ID = "dep_test"
DEPLOYMENT_LABEL = "v1"
TOKEN = "t"
EXPORT_FORMAT = "tether.run/1"
"""The ``format`` of ``tether runs export``'s JSON."""


def _name(workflow: str | Callable[..., Any]) -> str:
    if isinstance(workflow, str):
        return workflow
    definition = definition_of(workflow)
    if definition is None:
        raise TypeError(f"{workflow!r} is not a registered workflow: decorate it with @app.workflow")
    return definition.name


def _request(
    app: App, run_id: str, attempt: int, workflow: str, input: Mapping[str, Any], journal: Iterable[JournalEntry]
) -> InvokeRequest:
    return {
        "run_id": run_id,
        "attempt": attempt,
        "token": TOKEN,
        "deployment_id": DEPLOYMENT_ID,
        "deployment_label": DEPLOYMENT_LABEL,
        "manifest_digest": app.manifest_digest(),
        "component": workflow,
        "input": dict(input),
        "journal": [entry.to_json() for entry in journal],
        "runtime_url": "",
    }


@dataclass
class RunResult:
    """Where a run driven by :class:`WorkflowHarness` stopped."""

    outcome: str
    """``completed``, ``failed``, ``mismatch``, ``stuck`` (the code rejects a signal payload it
    was given), ``fenced``, ``continue_as_new`` (the output is then ``{"input", "upgrade"}`` of
    the next run), or ``suspended`` when the run waits on something only the test can provide
    (a signal, or a child that waits on one)."""
    output: Any = None
    """The workflow's JSON output when ``completed``."""
    error: ErrorInfo | None = None
    """The failure when ``failed`` or ``fenced``; why, when ``stuck``."""
    mismatch: dict[str, Any] | None = None
    """The diff when ``mismatch`` (see :meth:`tether.core.journal.Mismatch.to_json`)."""
    waiting_on: list[int] = field(default_factory=list)
    """The open journal indexes when ``suspended``."""
    attempts: int = 0
    """Attempts made so far for this run."""


class WorkflowHarness:
    """Runs one workflow run of ``app`` in memory, attempt after attempt, like the runtime.

    The journal lives in a :class:`MemorySink`. Between attempts the harness does what the
    runtime would: sleeps complete at once (time does not pass in the harness), signals sent
    with :meth:`signal` complete the oldest open wait of that name or are buffered, and child
    runs are driven by a nested harness whose output (or ``{"type", "message"}`` error)
    completes the parent's entry.

    With ``always_replay=True`` every attempt ends as soon as it has made a new entry durable,
    so the next attempt replays the whole body from the start. A workflow of N steps then runs
    its body N + 1 times while each step executes once, which shows that the code is
    deterministic. Steps awaited together with ``asyncio.gather`` may execute more than once in
    that mode, as steps are at-least-once.

    Example::

        harness = WorkflowHarness(app, always_replay=True)
        result = await harness.run("greet", {"name": "ada"})
        assert result.outcome == "completed"
    """

    def __init__(
        self, app: App, *, always_replay: bool = False, run_id: str = "run-1", max_attempts: int = 1000
    ) -> None:
        """Prepare a run of ``app``; nothing runs until :meth:`run`.

        Args:
            app: the app that registers the workflow and its functions.
            always_replay: end every attempt after each new entry (see the class docstring).
            run_id: the run id the workflow sees in ``ctx.info``.
            max_attempts: give up (``RuntimeError``) after this many attempts.
        """
        self.app = app
        self.always_replay = always_replay
        self.run_id = run_id
        self.max_attempts = max_attempts
        self.sink = MemorySink()
        """The run's journal and signal buffer."""
        self.children: dict[int, WorkflowHarness] = {}
        """The harness of each child run, by the parent's journal index."""
        self.responses: list[InvokeResponse] = []
        """Every attempt's response, in order."""
        self._workflow: str | None = None
        self._input: dict[str, Any] = {}
        self._last: RunResult | None = None

    @property
    def journal(self) -> list[JournalEntry]:
        """The run's entries in index order."""
        return self.sink.journal

    async def run(self, workflow: str | Callable[..., Any], input: Mapping[str, Any] | None = None) -> RunResult:
        """Start the run and drive it until it ends or waits on the test.

        Args:
            workflow: the workflow's registered name or the decorated function.
            input: the workflow's input object (keyword arguments by name).

        Raises:
            RuntimeError: the harness already ran, or the run did not settle.
        """
        if self._workflow is not None:
            raise RuntimeError("a WorkflowHarness drives one run: create another for the next one")
        self._workflow = _name(workflow)
        self._input = dict(input or {})
        return await self._drive()

    async def resume(self) -> RunResult:
        """Drive a suspended run again, e.g. after :meth:`signal`."""
        if self._workflow is None:
            raise RuntimeError("call run() before resume()")
        return await self._drive()

    def signal(self, name: str, payload: Any = None) -> None:
        """Send a signal to the run (before or after :meth:`run`); call :meth:`resume` next.

        Raises:
            NotFoundError: the started workflow declares no signal ``name``.
            SchemaError: the payload does not fit the declared type.
        """
        definition = self.app.get(self._workflow, "workflow") if self._workflow else None
        if definition is not None:
            adapter = definition.signals.get(name)
            if adapter is None:
                raise NotFoundError(f"workflow {definition.name} declares no signal {name!r}")
            try:
                adapter.validate_python(payload)
            except ValidationError as exc:
                raise SchemaError(f"signal {name}: {describe_validation(exc)}") from None
        self.sink.signal(name, payload)

    async def query(self, name: str, input: Mapping[str, Any] | None = None) -> Any:
        """Answer query ``name`` of the run from its journal so far, as its deployment would.

        Raises:
            RuntimeError: call :meth:`run` first.
            QueryRefusedError: the handler issued a journaled command.
            QueryFailedError: no such query, input that does not fit, or the handler raised.
        """
        if self._workflow is None:
            raise RuntimeError("call run() before query()")
        request = _request(self.app, self.run_id, len(self.responses), self._workflow, self._input, self.journal)
        request["query"] = {"name": name, "input": dict(input or {})}
        answer = await answer_query(self.app, request)
        if answer["outcome"] == "answered":
            return answer.get("output")
        error = answer.get("error") or {"type": "QueryFailed", "message": str(answer)}
        if error["type"] == QueryRefusedError.__name__:
            raise QueryRefusedError(error["message"])
        raise QueryFailedError(f"query {name}: {error['type']}: {error['message']}")

    def time_out(self, name: str) -> None:
        """Fire the timeout of the oldest open wait for signal ``name`` (the code sees
        :class:`tether.SignalTimeoutError`); call :meth:`resume` next."""
        for entry in self.sink.open_entries(EntryKind.SIGNAL):
            if entry.name == name:
                self.sink.complete(entry.index, None, {"type": "SignalTimeout", "message": f"no signal {name!r}"})
                return
        raise LookupError(f"the run does not wait on signal {name!r}")

    async def _drive(self) -> RunResult:
        assert self._workflow is not None
        while len(self.responses) < self.max_attempts:
            before = self.sink.appended
            attempt = len(self.responses) + 1
            self.sink.attempt = attempt
            self.sink.fence_after_append = self.always_replay
            request = _request(self.app, self.run_id, attempt, self._workflow, self._input, self.journal)
            response = await Attempt(self.app, request, self.sink).execute()
            self.responses.append(response)
            outcome = response["outcome"]
            if outcome == "fenced" and self.always_replay and self.sink.appended > before:
                continue
            if outcome == "suspended" and (self._woken(response) or await self._run_children()):
                continue
            continued = {"input": response.get("input"), "upgrade": response.get("upgrade")}
            self._last = RunResult(
                outcome=outcome,
                output=continued if outcome == "continue_as_new" else response.get("output"),
                error=response.get("error"),
                mismatch=response.get("mismatch"),
                waiting_on=list(response.get("waiting_on", [])),
                attempts=len(self.responses),
            )
            return self._last
        raise RuntimeError(f"run {self.run_id} did not settle in {self.max_attempts} attempts")

    def _woken(self, response: InvokeResponse) -> bool:
        """Whether a wait the attempt suspended on is already completed (the runtime reruns then)."""
        waiting = response.get("waiting_on", [])
        return not waiting or any(i in self.sink.entries and self.sink.entries[i].completed for i in waiting)

    async def _run_children(self) -> bool:
        """Drive every open child run; complete the entries of those that ended."""
        progressed = False
        for entry in self.sink.open_entries(EntryKind.CHILD):
            child = self.children.get(entry.index)
            if child is None:
                child = WorkflowHarness(
                    self.app,
                    always_replay=self.always_replay,
                    run_id=f"{self.run_id}.{entry.index}",
                    max_attempts=self.max_attempts,
                )
                self.children[entry.index] = child
                args = entry.args or {}
                result = await child.run(str(args.get("workflow", entry.name)), args.get("input") or {})
            else:
                result = await child.resume()
            if result.outcome == "completed":
                self.sink.complete(entry.index, result.output)
            elif result.outcome == "mismatch":
                message = (result.mismatch or {}).get("message", "")
                self.sink.complete(entry.index, None, {"type": "JournalMismatch", "message": message})
            elif result.outcome != "suspended":
                error = result.error or {"type": result.outcome, "message": ""}
                self.sink.complete(entry.index, None, {"type": error["type"], "message": error["message"]})
            progressed = progressed or result.outcome != "suspended"
        return progressed


async def replay(
    app: App,
    workflow: str | Callable[..., Any],
    input: Mapping[str, Any] | None,
    journal: Iterable[JournalEntry | Mapping[str, Any]],
) -> InvokeResponse:
    """Run one attempt of ``workflow`` against a recorded journal and return its response.

    Use it to check that changed code still replays a run recorded earlier (for instance the
    entries of ``GET /v1/runs/{id}/journal``): ``completed`` with the same output means it
    does, ``mismatch`` carries the diff. Commands beyond the recorded journal really execute
    and are appended to a throwaway in-memory copy, so pass the journal of a finished run to
    check without side effects.

    Args:
        app: the app holding the (possibly changed) code.
        workflow: the workflow's registered name or the decorated function.
        input: the run's input object.
        journal: the recorded entries, as :class:`JournalEntry` or their JSON form.
    """
    entries = [e if isinstance(e, JournalEntry) else JournalEntry.from_json(dict(e)) for e in journal]
    request = _request(app, "replay", 1, _name(workflow), input or {}, entries)
    return await Attempt(app, request, MemorySink(entries)).execute()


@dataclass
class ReplayVerdict:
    """Whether the local code replays a recorded run (see :func:`replay_export`)."""

    compatible: bool
    """The code re-issues every journaled command, in order, as recorded."""
    run_id: str
    """The recorded run."""
    workflow: str
    """Its workflow."""
    deployment: str
    """The label of the deployment it was recorded on."""
    replayed: int | None = None
    """Entries replayed when compatible."""
    mismatch: dict[str, Any] | None = None
    """The first difference, as ``tether deployments check`` reports it."""
    error: ErrorInfo | None = None
    """Why the replay could not finish otherwise (e.g. a non-deterministic call)."""

    @property
    def message(self) -> str:
        """One line for people."""
        if self.compatible:
            return f"run {self.run_id} ({self.workflow}, recorded on {self.deployment}) replays on this code"
        if self.mismatch is not None:
            problem = str(self.mismatch.get("message"))
        else:
            problem = self.error["message"] if self.error is not None else "unknown"
        return f"run {self.run_id} ({self.workflow}, recorded on {self.deployment}) does not replay: {problem}"

    def assert_compatible(self) -> None:
        """Raise ``AssertionError`` with :attr:`message` unless compatible."""
        if not self.compatible:
            raise AssertionError(self.message)


def load_export(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A run exported by ``tether runs export RUN`` (a path to its JSON, or the parsed object).

    Raises:
        ValueError: it is not such an export.
    """
    data = json.loads(Path(source).read_text()) if isinstance(source, str | Path) else dict(source)
    if data.get("format") != EXPORT_FORMAT or not isinstance(data.get("run"), dict):
        raise ValueError(
            f"not a run export (format {data.get('format')!r}, expected {EXPORT_FORMAT!r}): "
            "make one with 'tether runs export RUN > run.json'"
        )
    return data


async def replay_export(app: App, source: str | Path | Mapping[str, Any]) -> ReplayVerdict:
    """Replay a recorded run's journal against ``app`` (the local code), executing nothing.

    The offline sibling of ``tether deployments check``: the same dry run, the same verdict.
    Record a run with ``tether runs export RUN > run.json`` (from production, say), then in a
    test: ``(await replay_export(app, "run.json")).assert_compatible()``. A journal that the
    code would continue past (a run still waiting) is compatible when everything recorded
    replays; nothing beyond the recording runs.

    Raises:
        ValueError: ``source`` is not a run export.
    """
    data = load_export(source)
    run = data["run"]
    entries = [JournalEntry.from_json(dict(e)) for e in data.get("journal") or []]
    request = _request(app, str(run["id"]), 1, str(run["workflow"]), run.get("input") or {}, entries)
    request["dry_run"] = True
    answer = await Attempt(app, request, MemorySink(entries)).execute()
    outcome = answer["outcome"]
    deployment = str((data.get("deployment") or {}).get("label") or run.get("deployment_id"))
    verdict = ReplayVerdict(
        compatible=outcome == "compatible", run_id=str(run["id"]), workflow=str(run["workflow"]), deployment=deployment
    )
    if outcome == "compatible":
        verdict.replayed = answer.get("replayed")
    elif outcome == "mismatch":
        verdict.mismatch = answer.get("mismatch")
    else:
        verdict.error = answer.get("error") or {"type": outcome, "message": f"the replay ended {outcome}"}
    return verdict
