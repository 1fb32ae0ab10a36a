"""``tether dev``: a server, and a new immutable deployment on every saved change.

Each save goes through the same path as ``tether deploy PATH --env dev``: the folder is packed,
deployed (content-addressed: saving identical content deploys nothing new) and the ``dev``
environment moved to it. Runs already in flight stay pinned to the deployment they started
on; the loop says so after every deployment, with the manifest diff from the previous one
(the same diff as ``tether deployments diff``). A file that does not compile, or an app that
does not load, is reported and the loop waits for the next save.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import httpx
import watchfiles

from tether import _bundle
from tether.cli._common import Settings, console, err_console, pass_settings
from tether.cli.deployments import print_diff
from tether.client import Client
from tether.core.status import IN_FLIGHT
from tether.errors import ApiError, TetherError

LISTENING = re.compile(r"listening on (http://\S+)")
START_TIMEOUT = 60.0


class DevServer:
    """A ``tether server`` subprocess on a data directory, its log echoed to stderr."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = ""
        self._ready = threading.Event()
        self._stopping = False
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start it and wait until it answers; return its URL.

        Raises:
            click.ClickException: it exited or did not become healthy.
        """
        command = [sys.executable, "-m", "tether", "server", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        # Its own session: Ctrl-C reaches the dev loop only, which stops the server in order.
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._pump, name="tether-dev-server-log", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise click.ClickException("the dev server did not start (its log is above)")
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self.url
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise click.ClickException(f"the dev server at {self.url} never became healthy")

    def _pump(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            found = LISTENING.search(line)
            if found and not self._ready.is_set():
                self.url = found.group(1)
                self._ready.set()
                continue
            if line.strip() and not self._stopping:
                err_console.print(f"server: {line.rstrip()}", markup=False, highlight=False, style="dim")

    def stop(self) -> None:
        """Stop the server (SIGINT, then SIGKILL if it lingers)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._stopping = True
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def syntax_problems(root: Path) -> list[str]:
    """Every Python file the bundle would carry that does not compile, as readable text."""
    problems = []
    for path in _bundle._files(root):
        if path.suffix != ".py":
            continue
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except SyntaxError as exc:
            where = f"{path.relative_to(root)}:{exc.lineno or '?'}"
            text = (exc.text or "").rstrip("\n")
            caret = f"\n    {text}\n    {' ' * max((exc.offset or 1) - 1, 0)}^" if text else ""
            problems.append(f"{where}: {exc.msg}{caret}")
    return problems


class DevLoop:
    """Deploy PATH now and after every change; say what moved and what stays pinned."""

    def __init__(
        self,
        settings: Settings,
        root: Path,
        *,
        url: str,
        env: str,
        app_ref: str | None,
        isolation: str | None,
    ) -> None:
        self.settings = settings
        self.root = root
        self.url = url
        self.env = env
        self.app_ref = app_ref
        self.isolation = isolation
        self.current: str | None = None
        """The id of the deployment this loop last moved the environment to."""

    async def _deploy(self, client: Client) -> None:
        previous = self.current
        if previous is None:
            for item in await client.envs():
                if item["name"] == self.env and len(item["targets"]) == 1:
                    previous = str(item["targets"][0]["deployment_id"])
        result = await client.deploy(self.root, env=self.env, app=self.app_ref, isolation=self.isolation)
        self.current = str(result["id"])
        if previous == result["id"]:
            console.print(f"[yellow]no change[/yellow]: {self.env} still runs {result['label']} ({result['id']})")
            return
        verb = "new deployment" if result["created"] else "already deployed as"
        console.print(
            f"[green]✓[/green] {verb} [bold]{result['label']}[/bold] ({result['id']}): {self.env} -> {result['label']}"
        )
        if previous is not None:
            print_diff(await client.diff(previous, result["id"]), indent="  ")
        labels = {d["id"]: d["label"] for d in await client.deployments()}
        runs = [r for r in await client.runs(limit=500) if r["status"] in IN_FLIGHT]
        if not runs:
            console.print(f"  no runs in flight; new runs of {self.env} start on {result['label']}")
            return
        console.print(
            f"  runs in flight stay pinned where they started; new runs of {self.env} start on {result['label']}:"
        )
        for run in sorted(runs, key=lambda r: (labels.get(r["deployment_id"], ""), r["id"])):
            label = labels.get(run["deployment_id"], run["deployment_id"])
            console.print(f"    {run['id']} ({run['workflow']}, {run['status']}) stays on {label}")

    def once(self) -> None:
        """One deployment attempt; problems are printed, never raised."""
        problems = syntax_problems(self.root)
        if problems:
            for problem in problems:
                console.print(f"[red]✗ syntax error[/red] {problem}", highlight=False)
            console.print("  not deployed; waiting for the next save")
            return

        async def go() -> None:
            async with Client(self.url, token=self.settings.token) as client:
                await self._deploy(client)

        try:
            asyncio.run(go())
        except TetherError as exc:
            code = exc.error_code if isinstance(exc, ApiError) else exc.code
            console.print(f"[red]✗ not deployed[/red] ({code}): {exc.message}", highlight=False)
            console.print("  waiting for the next save")
        except httpx.TransportError as exc:
            console.print(f"[red]✗ cannot reach the server at {self.url}[/red]: {exc}")

    def watch(self, ignore: list[Path]) -> None:
        """Deploy on every change under the root until interrupted."""
        ignored = {p.resolve() for p in ignore}

        class Filter(watchfiles.DefaultFilter):
            def __call__(self, change: watchfiles.Change, path: str) -> bool:
                resolved = Path(path).resolve()
                if any(resolved == p or p in resolved.parents for p in ignored):
                    return False
                return super().__call__(change, path)

        ignore_dirs = (*watchfiles.DefaultFilter.ignore_dirs, *sorted(_bundle.IGNORED_DIRS))
        for changes in watchfiles.watch(self.root, watch_filter=Filter(ignore_dirs=ignore_dirs), debounce=400):
            # Editors and sed write temporary files that are gone by now: name what is there.
            names = sorted({str(Path(p).relative_to(self.root)) for _, p in changes if Path(p).is_file()})
            console.print(f"\n[bold]changed[/bold]: {', '.join(names) or '(files)'}")
            self.once()


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the loop like Ctrl-C does (the server is stopped too)."""

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command()
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--url",
    "attach",
    default=None,
    help="Attach to the server at this URL instead of starting one (also when --url is given before 'dev').",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the dev server keeps its store (default: a temporary directory, removed when dev stops).",
)
@click.option("--port", default=0, show_default=True, help="Port of the dev server (0: any free port).")
@click.option("--env", "env", default="dev", show_default=True, help="The environment moved on every deployment.")
@click.option("--app", "app_ref", default=None, help="module:attribute of the App (default: tether.toml).")
@click.option(
    "--isolation",
    type=click.Choice(["process", "sandbox"]),
    default=None,
    help="How the workers are isolated (default: the server's; see 'tether deploy').",
)
@pass_settings
def dev(
    settings: Settings,
    path: Path,
    attach: str | None,
    data_dir: Path | None,
    port: int,
    env: str,
    app_ref: str | None,
    isolation: str | None,
) -> None:
    """Serve the app in PATH and redeploy it on every saved change (Ctrl-C stops).

    Starts a tether server on the embedded SQLite store (or attaches to --url), deploys PATH
    and moves ENV (dev) to it; then every save becomes a new immutable deployment, ENV moves to
    it, and runs already in flight stay pinned to theirs. Syntax and import errors are shown
    and the loop waits for the next save.
    """
    root = path.resolve()
    if settings.as_json:
        raise click.UsageError("tether dev prints for people: drop --json (use 'tether deploy --json' in scripts)")
    url = attach or (settings.url if settings.url_source == "flag" else None)
    server: DevServer | None = None
    made_dir: Path | None = None
    with _terminate_as_interrupt():
        try:
            if url is None:
                if data_dir is None:
                    made_dir = data_dir = Path(tempfile.mkdtemp(prefix="tether-dev-"))
                server = DevServer(data_dir, port)
                url = server.start()
                console.print(f"tether dev: server at [bold]{url}[/bold] (data in {data_dir.resolve()})")
                console.print(f"  dashboard {url}/   runs: tether --url {url} run WORKFLOW --env {env}")
            else:
                console.print(f"tether dev: attached to the server at [bold]{url}[/bold]")
            loop = DevLoop(settings, root, url=url, env=env, app_ref=app_ref, isolation=isolation)
            loop.once()
            console.print(f"watching {root} for changes (Ctrl-C stops)")
            loop.watch(ignore=[data_dir] if data_dir is not None else [])
        except KeyboardInterrupt:
            console.print("\nstopping")
        finally:
            if server is not None:
                server.stop()
            if made_dir is not None:
                shutil.rmtree(made_dir, ignore_errors=True)
    console.print("tether dev stopped")
