"""Queries in the SDK: declared on a workflow, described in the manifest and its diff, answered
from a journal by a read-only context that refuses every journaled command."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import tether
from tether.core.manifest import diff
from tether.protocol import InvokeRequest, InvokeResponse
from tether.sdk._query import answer_query


class Progress(BaseModel):
    stage: str | None
    entries: int


def make_app(extra_param: bool = False) -> tether.App:
    app = tether.App("queries")

    @app.workflow
    async def review(ctx: tether.Context, name: str) -> str:
        ctx.set("stage", "started")
        await ctx.sleep(60)
        return name

    if extra_param:

        @app.query(review)
        async def progress(ctx: tether.QueryContext, verbose: bool) -> Progress:
            """How far it got."""
            return Progress(stage=ctx.state.get("stage"), entries=len(ctx.journal))

    else:

        @app.query("review")
        def progress(ctx: tether.QueryContext) -> Progress:  # type: ignore[misc]
            """How far it got."""
            return Progress(stage=ctx.state.get("stage"), entries=len(ctx.journal))

    @app.query(review, name="when")
    async def clock(ctx: tether.QueryContext) -> str:
        return ctx.now().isoformat()

    return app


def ask(app: tether.App, name: str, input: dict[str, Any] | None = None) -> InvokeResponse:
    journal = [
        {"index": 0, "kind": "state", "name": "stage", "args_digest": "x", "completed": True, "result": "started"},
        {"index": 1, "kind": "sleep", "name": "sleep", "args_digest": "y", "completed": False},
    ]
    request: InvokeRequest = {
        "run_id": "run_1",
        "attempt": 1,
        "token": "",
        "deployment_id": "dep_1",
        "deployment_label": "v1",
        "manifest_digest": app.manifest_digest(),
        "component": "review",
        "input": {"name": "ada"},
        "journal": journal,
        "runtime_url": "http://127.0.0.1:1",
        "dry_run": True,
        "query": {"name": name, "input": input or {}},
    }
    return asyncio.run(answer_query(app, request))


def test_a_query_reads_the_state_the_journal_left() -> None:
    assert ask(make_app(), "progress") == {"outcome": "answered", "output": {"stage": "started", "entries": 2}}


def test_a_journaled_command_in_a_query_is_refused_naming_it() -> None:
    answer = ask(make_app(), "when")
    assert answer["outcome"] == "failed"
    assert answer["error"]["type"] == "QueryRefusedError"
    assert "called ctx.now()" in answer["error"]["message"] and "read-only" in answer["error"]["message"]


def test_unknown_queries_and_bad_input_fail_with_reasons() -> None:
    missing = ask(make_app(), "nosuch")
    assert missing["error"]["type"] == "UnknownQuery" and "progress, when" in missing["error"]["message"]
    bad = ask(make_app(extra_param=True), "progress", {"verbose": "very"})
    assert bad["error"]["type"] == "SchemaError" and "verbose" in bad["error"]["message"]


def test_queries_are_in_the_manifest_and_their_changes_in_the_diff() -> None:
    old, new = make_app().manifest(), make_app(extra_param=True).manifest()
    queries = old["components"]["review"]["queries"]
    assert sorted(queries) == ["progress", "when"]
    assert queries["progress"]["description"] == "How far it got."
    assert queries["progress"]["output_schema"]["title"] == "Progress"
    changes = [(c.component, c.change, c.detail) for c in diff(old, new)]
    assert changes == [
        ("review", "query progress signature changed", "input_schema: added verbose; now required: verbose")
    ]
    # A workflow without queries keeps the manifest it had (and so its deployment id).
    plain = tether.App("plain")

    @plain.workflow
    async def wf(ctx: tether.Context) -> None:
        return None

    assert "queries" not in plain.manifest()["components"]["wf"]


def test_declaring_a_query_wrongly_is_refused_where_it_is_written() -> None:
    app = make_app()
    with pytest.raises(TypeError, match="not a workflow of app queries"):
        app.query("nosuch")
    with pytest.raises(TypeError, match=r"def stage\(ctx: tether.QueryContext\) -> \.\.\."):

        @app.query("review")
        def stage() -> str:
            return ""

    with pytest.raises(ValueError, match="already declares a query named 'progress'"):

        @app.query("review")
        def progress(ctx: tether.QueryContext) -> str:
            return ""


def test_the_harness_answers_queries_from_the_journal_so_far() -> None:
    from tether.errors import QueryRefusedError
    from tether.testing import WorkflowHarness

    async def go() -> None:
        harness = WorkflowHarness(make_app())
        assert (await harness.run("review", {"name": "ada"})).outcome == "completed"  # sleeps pass at once
        assert await harness.query("progress") == {"stage": "started", "entries": 2}
        with pytest.raises(QueryRefusedError, match="ctx.now"):
            await harness.query("when")

    asyncio.run(go())
