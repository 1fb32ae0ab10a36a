"""``tether backup`` and ``tether restore``: the embedded store's supported way back."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli._common import console
from tether.errors import TetherError
from tether.store import _backup

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".tether"),
    show_default=True,
    help="The server's data directory.",
)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@DATA_DIR
def backup(path: Path, data_dir: Path) -> None:
    """Copy the store to PATH (a new file), consistently, even while the server runs."""
    try:
        size = _backup.backup(data_dir, path)
    except TetherError as exc:
        raise click.ClickException(exc.message) from None
    console.print(f"backed up {data_dir / _backup.DATABASE} to {path} ({size} bytes)")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@DATA_DIR
def restore(path: Path, data_dir: Path) -> None:
    """Make the backup at PATH the store of the data directory (the server must be stopped).

    The replaced store is kept beside it; bundles and environments are rebuilt from the backup.
    """
    try:
        kept = _backup.restore(path, data_dir)
    except TetherError as exc:
        raise click.ClickException(exc.message) from None
    console.print(f"restored {path} into {data_dir}" + (f"; the previous store is kept in {kept}" if kept else ""))
