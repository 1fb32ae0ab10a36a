"""The README's flow through the CLI, against a real server, with its exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from tests.e2e.conftest import ServerProcess
from tether.cli.main import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def tether(server: ServerProcess, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", server.url, *args], catch_exceptions=False)


def as_json(result: Result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_readme_flow(server: ServerProcess, tmp_path: Path) -> None:
    app = tmp_path / "hello"
    shutil.copytree(EXAMPLE, app)

    out = tether(server, "deploy", str(app), "--env", "prod")
    assert out.exit_code == 0 and "created v1" in out.stdout and "prod -> v1" in out.stdout
    out = tether(server, "run", "greet", "--env", "prod", "--input", '{"name": "ada"}', "--wait")
    assert out.exit_code == 0 and "completed on v1: hello ada" in out.stdout
    out = tether(server, "deploy", str(app), "--env", "prod")
    assert "unchanged, already deployed as v1" in out.stdout

    waiting = as_json(tether(server, "run", "onboard", "--env", "prod", "--input", '{"name": "ada"}', "--json"))
    assert isinstance(waiting, dict)
    server.wait_for(waiting["id"], {"suspended"})

    source = app / "hello.py"
    source.write_text(source.read_text().replace('f"hello {name}"', 'f"hi there, {name}"'))
    out = tether(server, "deploy", str(app), "--env", "prod")
    assert "created v2" in out.stdout and "prod -> v2" in out.stdout

    listed = as_json(tether(server, "deployments", "list", "--json"))
    assert isinstance(listed, list)
    by_label = {d["label"]: d for d in listed}
    assert by_label["v1"]["status"] == "draining" and by_label["v1"]["in_flight"] == 1
    assert by_label["v2"]["environments"] == ["prod"]
    table = tether(server, "deployments", "list").stdout
    assert "draining" in table and "active" in table

    out = tether(server, "env", "rollback", "prod")
    assert out.exit_code == 0 and "prod -> v1 (rolled back)" in out.stdout
    assert "rollback" in tether(server, "env", "history", "prod").stdout

    shown = tether(server, "runs", "show", waiting["id"])
    assert shown.exit_code == 0
    assert "on v1" in shown.stdout and "greeting" in shown.stdout and "waiting" in shown.stdout

    out = tether(server, "signal", waiting["id"], "approval", '{"ok": true}')
    assert out.exit_code == 0 and "delivered" in out.stdout
    done = server.call(lambda c: c.result(waiting["id"], wait=30))
    assert done["output"] == {"greeting": "hello ada", "approved": True, "version": "v1"}
    shown = tether(server, "runs", "show", waiting["id"])
    assert "signals" in shown.stdout and "approval" in shown.stdout and "entry 2" in shown.stdout
    detail = as_json(tether(server, "runs", "show", waiting["id"], "--json"))
    assert [(s["name"], s["payload"], s["consumed_by_entry"]) for s in detail["signals"]] == [
        ("approval", {"ok": True}, 2)
    ]
    audit = as_json(tether(server, "audit", "--target", "prod", "--json"))
    assert [a["action"] for a in audit] == ["env.rollback", "env.deploy", "env.deploy"]
    assert "completed" in tether(server, "runs", "list").stdout


def test_errors_exit_non_zero_with_a_message(server: ServerProcess, tmp_path: Path) -> None:
    out = tether(server, "run", "greet", "--env", "prod", "--input", "{}")
    assert out.exit_code == 3 and "no environment 'prod'" in out.stderr
    out = tether(server, "run", "greet", "--env", "prod", "--input", "{nope")
    assert out.exit_code == 2 and "--input must be JSON" in out.output
    out = tether(server, "signal", "run_missing", "approval", "{}")
    assert out.exit_code == 3 and "no run 'run_missing'" in out.stderr
    out = tether(server, "env", "rollback", "prod")
    assert out.exit_code == 3
    unreachable = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "deployments", "list"])
    assert unreachable.exit_code == 5 and "cannot reach the tether server" in unreachable.stderr
    shutil.copytree(EXAMPLE, tmp_path / "hello")
    tether(server, "deploy", str(tmp_path / "hello"), "--env", "prod")
    out = tether(server, "run", "greet", "--env", "prod", "--input", '{"name": 5}')
    assert out.exit_code == 2 and "name" in out.stderr
    out = tether(server, "runs", "cancel", "run_missing")
    assert out.exit_code == 3


def test_json_output_reports_errors_as_json_with_the_same_exit_codes(server: ServerProcess) -> None:
    missing = tether(server, "--json", "runs", "show", "run_missing")
    assert missing.exit_code == 3
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"
    bad = tether(server, "--json", "env", "rollback", "prod")
    assert bad.exit_code in (3, 4) and set(json.loads(bad.stdout)["error"]) == {"code", "message"}
    gone = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "--json", "deployments", "list"])
    assert gone.exit_code == 5 and json.loads(gone.stdout)["error"]["code"] == "unreachable"


def test_store_writers_is_refused_without_a_postgresql_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["server", "--data-dir", str(tmp_path / "data"), "--store-writers", "3"])
    assert result.exit_code == 2, result.output
    assert "--store-writers" in result.output and "PostgreSQL store only" in result.output
    assert not (tmp_path / "data").exists(), "nothing may start (or be created) for a refused option"
