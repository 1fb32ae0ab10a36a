"""``tether query RUN NAME [JSON]``: ask a run's pinned deployment a read-only question."""

from __future__ import annotations

import json

import click

from tether.cli._common import Settings, call, console, emit_json, parse_json_arg, pass_settings


@click.command()
@click.argument("run_id")
@click.argument("name")
@click.argument("input_", metavar="JSON", default="{}")
@pass_settings
def query(settings: Settings, run_id: str, name: str, input_: str) -> None:
    """Answer query NAME of RUN_ID with input JSON (an object of its parameters).

    The run's pinned deployment answers, from the run's journal and state: never the latest
    code. The run is not changed.
    """
    payload = parse_json_arg(input_, "JSON")
    if not isinstance(payload, dict):
        raise click.BadParameter('the input is a JSON object of the query\'s parameters, e.g. {} or {"detail": true}')
    answer = call(settings, lambda c: c.query_answer(run_id, name, payload))
    if settings.as_json:
        emit_json(answer)
        return
    console.print(f"query {name} of run {run_id}, answered by {answer['deployment_label']}:")
    output = answer["output"]
    click.echo(output if isinstance(output, str) else json.dumps(output, indent=2, sort_keys=True))
