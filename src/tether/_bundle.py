"""Deterministic bundles: pack an app directory, digest it, extract it safely.

The same directory content always packs to the same bytes (sorted entries, fixed mtimes,
owners and modes, gzip without a timestamp), so the bundle digest identifies the content.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tomllib
from pathlib import Path, PurePosixPath

from tether.errors import BundleError

IGNORED_DIRS = frozenset(
    {"__pycache__", ".venv", "venv", ".git", ".tether", ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules"}
)
IGNORED_SUFFIXES = (".pyc", ".pyo")
MAX_FILES = 10_000
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
CONFIG_FILE = "tether.toml"


def _files(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith(IGNORED_SUFFIXES):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def pack(root: Path) -> bytes:
    """Pack the app directory ``root`` into deterministic ``.tar.gz`` bytes.

    Raises:
        BundleError: when ``root`` is not a directory.
    """
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory: pass the folder that holds your app")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(root):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def digest(data: bytes) -> str:
    """``sha256`` of the bundle bytes (64 hex digits)."""
    return hashlib.sha256(data).hexdigest()


def extract(data: bytes, dest: Path) -> None:
    """Extract bundle bytes into ``dest`` (which must not exist yet), refusing anything unsafe.

    Raises:
        BundleError: the bytes are not a bundle, or hold links, absolute or escaping paths,
            too many files or too much data.
    """
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(
            f"the bundle is not a gzip-compressed tar archive ({exc}): pack it with 'tether deploy'"
        ) from None
    if len(members) > MAX_FILES:
        raise BundleError(f"the bundle holds {len(members)} files, more than {MAX_FILES}")
    total = 0
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise BundleError(f"the bundle holds an unsafe path {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise BundleError(f"the bundle holds {member.name!r}, which is not a regular file")
        total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise BundleError(f"the bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    dest.mkdir(parents=True)
    with tar:
        tar.extractall(dest, filter="data")


def app_ref(root: Path) -> str | None:
    """The ``app = "module:attribute"`` named in ``root/tether.toml``, if any.

    Raises:
        BundleError: the file exists but is not valid TOML or names no proper reference.
    """
    config = root / CONFIG_FILE
    if not config.is_file():
        return None
    try:
        data = tomllib.loads(config.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{CONFIG_FILE} is not valid TOML: {exc}") from None
    ref = data.get("app")
    if ref is None:
        return None
    check_ref(ref)
    return str(ref)


def check_ref(ref: object) -> str:
    """Validate an app reference of the form ``module:attribute``."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise BundleError(f"app reference {ref!r} must look like 'module:attribute'")
    return ref
