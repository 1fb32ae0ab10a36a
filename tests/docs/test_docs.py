"""The documentation stays true: every command, endpoint, error and server option is documented."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
from starlette.routing import Route

import tether.errors
from tether.cli.server import server
from tether.server.app import ServerOptions, create_app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GENERATOR = ROOT / "scripts" / "gen-cli-docs"


def _generator() -> ModuleType:
    """``scripts/gen-cli-docs`` imported as a module (it has no ``.py`` suffix)."""
    loader = importlib.machinery.SourceFileLoader("gen_cli_docs", str(GENERATOR))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _section(page: str, title: str) -> str:
    """The fenced help text under the heading ``## `title` ``."""
    match = re.search(rf"^## `{re.escape(title)}`\n\n```text\n(.*?)```\n", page, re.S | re.M)
    assert match is not None, f"docs/cli.md has no section for {title}: run scripts/gen-cli-docs"
    return match.group(1)


def test_cli_reference_is_generated_from_the_current_help() -> None:
    expected = _generator().render()
    actual = (DOCS / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is out of date: run scripts/gen-cli-docs"


def test_cli_reference_covers_every_command() -> None:
    page = (DOCS / "cli.md").read_text()
    for path in _generator().command_paths():
        _section(page, " ".join(("tether", *path)))


def test_cli_reference_matches_the_real_console_script() -> None:
    # The generator calls the entry point in-process; the installed command must print the same.
    beside = Path(sys.executable).parent / "tether"
    tether_bin = str(beside) if beside.exists() else shutil.which("tether")
    assert tether_bin is not None, "the tether console script is not installed"
    page = (DOCS / "cli.md").read_text()
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1")
    for args in ([], ["server"]):
        real = subprocess.run(
            [tether_bin, *args, "--help"], env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout
        assert _section(page, " ".join(("tether", *args))) == real, "run scripts/gen-cli-docs"


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = create_app(ServerOptions(data_dir=tmp_path, runtime_url="http://x"))
    page = (DOCS / "http-api.md").read_text()
    served = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        for method in sorted((route.methods or set()) - {"HEAD"}):
            served.add(f"{method} {route.path}")
            documented = re.search(re.escape(f"{method} {route.path}") + r"(?![\w/{}])", page)
            assert documented, f"docs/http-api.md does not document {method} {route.path}"
    # And the reverse: no heading documents a runtime route that does not exist.
    headings = set(re.findall(r"^### `([A-Z]+ /(?:v1/|healthz|metrics)\S*)`$", page, re.M))
    assert headings, "docs/http-api.md has no route headings"
    assert headings <= served, f"documented but not served: {sorted(headings - served)}"


def test_every_error_is_documented() -> None:
    page = (DOCS / "errors.md").read_text()
    classes = [
        cls
        for _, cls in inspect.getmembers(tether.errors, inspect.isclass)
        if issubclass(cls, tether.errors.TetherError) and cls.__module__ == tether.errors.__name__
    ]
    assert len(classes) > 10
    tree_match = re.search(r"^## The tree\n\n```text\n(.*?)```", page, re.S | re.M)
    assert tree_match is not None, "docs/errors.md lost its tree"
    tree = tree_match.group(1)
    for cls in classes:
        rows = [line for line in page.splitlines() if line.startswith(f"| `{cls.__name__}` |")]
        assert rows, f"docs/errors.md has no table row for {cls.__name__}"
        row = rows[0]
        own_code = cls.__dict__.get("code")
        if own_code is not None:
            assert f"`{own_code}`" in row, f"docs/errors.md: {cls.__name__} row lacks its code {own_code}"
        if cls.status != 500:
            assert f"| {cls.status} |" in row, f"docs/errors.md: {cls.__name__} row lacks HTTP {cls.status}"
        tree_line = next((line for line in tree.splitlines() if re.search(rf"\b{cls.__name__}\b", line)), "")
        assert tree_line, f"docs/errors.md: the tree lacks {cls.__name__}"
        if own_code not in (None, "internal"):
            assert f" {own_code} " in tree_line, f"docs/errors.md: the tree lacks the code of {cls.__name__}"


def test_server_options_and_scripts_are_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    reference = readme + (DOCS / "cli.md").read_text()
    options = [opt for param in server.params if isinstance(param, click.Option) for opt in param.opts]
    assert "--data-dir" in options
    for option in options:
        assert option in reference, f"tether server {option} is in neither README.md nor docs/cli.md"
    for script in ("scripts/demo", "scripts/test"):
        assert script in readme, f"README.md no longer mentions {script}"
        assert (ROOT / script).is_file(), f"README.md mentions {script}, which does not exist"


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)\)", readme):
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def _code_lines(text: str) -> list[str]:
    """Code lines without trailing comments, blank lines or comment-only lines."""
    lines = []
    for line in text.splitlines():
        code = line.split("  #", 1)[0].rstrip()
        if code.strip() and not code.lstrip().startswith("#"):
            lines.append(code)
    return lines


def test_the_readme_quickstart_is_the_example_it_names() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n# (examples/\S+)[^\n]*\n(.*?)```", readme, re.S)
    assert blocks, "the README lost its quickstart block naming an example file"
    for path, block in blocks:
        source = _code_lines((ROOT / path).read_text())
        position = 0
        for line in _code_lines(block):
            assert line in source[position:], f"README's {path} shows {line!r}, which the file does not have (in order)"
            position = source.index(line, position) + 1


def test_http_api_page_and_openapi_document_describe_the_same_operations(tmp_path: Path) -> None:
    app = create_app(ServerOptions(data_dir=tmp_path, runtime_url="http://x"))
    document = app.state.openapi
    operations = {f"{method.upper()} {path}" for path, methods in document["paths"].items() for method in methods}
    page = (DOCS / "http-api.md").read_text()
    headings = set(re.findall(r"^### `([A-Z]+ /(?:v1/|healthz|metrics|openapi\.json)\S*)`$", page, re.M))
    assert operations - headings == set(), "in /openapi.json, without a '### `METHOD PATH`' section in http-api.md"
    assert headings - operations == set(), "a section of http-api.md for an operation /openapi.json lacks"
    # Each section names every error status the document lists for its operation.
    for heading in sorted(operations):
        method, path = heading.split(" ", 1)
        section = page.split(f"### `{heading}`\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        shared = {"400", "401", "403", "413", "421"}
        for status in document["paths"][path][method.lower()]["responses"]:
            if status.startswith("4") and status not in shared:
                assert f"`{status}" in section or f"{status} " in section, f"http-api.md: {heading} lacks {status}"
