"""docs/testing.md stays true: its files are written out and run by pytest, against a run really
exported from a real server; the ``tether.testing`` docstring example runs with them."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tether.testing
from tether.testing import TestServer, replay_export

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
BLOCK = re.compile(r"^```(?:python|toml)\n# (\S+)\n(.*?)^```$", re.S | re.M)


def doc_files() -> dict[str, str]:
    """Every fenced block of the page whose first line names a file: {path: content}."""
    return {name: body for name, body in BLOCK.findall(DOC.read_text())}


def cli(url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tether", "--url", url, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_testing_page_runs_as_written(tmp_path: Path) -> None:
    files = doc_files()
    assert {"pyproject.toml", "tests/test_hello.py", "support/support.py", "tests/test_replay.py"} <= set(files)
    shutil.copytree(ROOT / "examples" / "hello", tmp_path / "hello")
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    example = tether.testing.__doc__.split("Example (``hello.py`` is ``examples/hello/hello.py``)::\n")[1]
    (tmp_path / "tests" / "test_docstring.py").write_text(
        "\n".join(line.removeprefix("    ") for line in example.splitlines()) + "\n"
    )

    with TestServer(tmp_path / "data") as server:
        cli(server.url, "deploy", str(tmp_path / "hello"), "--env", "prod")
        run = json.loads(
            cli(server.url, "--json", "run", "greet", "--env", "prod", "--input", '{"name": "ada"}', "--wait")
        )
        exported = json.loads(cli(server.url, "runs", "export", run["id"]))
    assert exported["format"] == "tether.run/1" and exported["run"]["status"] == "completed"
    (tmp_path / "tests" / "run.json").write_text(json.dumps(exported))

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout, done.stdout

    # The replay tier catches a change that would break the recorded run.
    source = tmp_path / "hello" / "hello.py"
    source.write_text(source.read_text().replace("greeting", "salutation"))
    sys.path.insert(0, str(tmp_path / "hello"))
    try:
        import hello  # type: ignore[import-not-found]

        verdict = asyncio.run(replay_export(hello.app, tmp_path / "tests" / "run.json"))
    finally:
        sys.path.remove(str(tmp_path / "hello"))
        sys.modules.pop("hello", None)
    assert not verdict.compatible
    assert verdict.message.startswith(f"run {run['id']} (greet, recorded on v1) does not replay: entry 0")
    assert "salutation" in verdict.message
