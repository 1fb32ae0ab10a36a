"""``tether serve``: host an app as an endpoint the runtime invokes over HTTP."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import uvicorn

from tether import _bundle, _environment
from tether._loader import load_app
from tether.errors import BundleError
from tether.sdk.endpoint import create_endpoint


@click.command()
@click.argument("app_ref", required=False)
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder holding the app (and its tether.toml).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on (0: any free port).")
@click.option(
    "--secret",
    envvar="TETHER_ENDPOINT_SECRET",
    required=True,
    help="Shared secret; the runtime signs every request with it (or TETHER_ENDPOINT_SECRET).",
)
def serve(app_ref: str | None, app_dir: Path, host: str, port: int, secret: str) -> None:
    """Serve APP_REF (module:attribute, default: tether.toml) for 'tether deployments register'."""
    try:
        ref = app_ref or _bundle.app_ref(app_dir)
        if ref is None:
            raise BundleError("name the app: tether serve module:attribute, or add tether.toml with app = ...")
        # Read the files before importing them: the digest names the code that is then loaded.
        code = _bundle.tree_digests(app_dir)
        environment = _environment.fingerprint(exclude=[str(app_dir)])
        endpoint = create_endpoint(load_app(app_dir, ref), secret=secret, code=code, environment=environment)
    except BundleError as exc:
        raise click.ClickException(exc.message) from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from None
    sock.listen(512)
    click.echo(f"tether endpoint listening on http://{host}:{sock.getsockname()[1]}", err=True)
    uvicorn.Server(uvicorn.Config(endpoint, log_level="warning", access_log=False, lifespan="on")).run(sockets=[sock])
