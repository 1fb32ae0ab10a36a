"""Deterministic bundles: pack an app directory, digest it, extract it safely.

The same directory content always packs to the same bytes (sorted entries, fixed mtimes,
owners and modes, gzip without a timestamp), so the bundle digest identifies the content.

A bundle's *code* is also described file by file (``{path: sha256}``, :func:`file_digests`):
the runtime records that list when it deploys, and a worker checks the folder it imports
from against it at every start (:func:`verify_tree`), so an edit of the unpacked copy is named
file by file instead of running silently.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tomllib
from pathlib import Path, PurePosixPath

from tether.core.journal import canonical_json
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


def file_digests(data: bytes) -> dict[str, str]:
    """``{path: sha256 of its bytes}`` of every regular file in bundle bytes.

    Raises:
        BundleError: the bytes are not a gzip-compressed tar archive.
    """
    found: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    found[PurePosixPath(member.name).as_posix()] = hashlib.sha256(handle.read()).hexdigest()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"the bundle is not a gzip-compressed tar archive ({exc})") from None
    return dict(sorted(found.items()))


def tree_digests(root: Path) -> dict[str, str]:
    """``{path: sha256}`` of the files :func:`pack` would take from ``root`` (an app folder)."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest() for path in _files(root)}


def code_digest(files: dict[str, str]) -> str:
    """One digest for a ``{path: sha256}`` list (order-independent)."""
    return hashlib.sha256(canonical_json(files)).hexdigest()


def verify_tree(root: Path, expected: dict[str, str]) -> list[str]:
    """What differs between the folder ``root`` and the file list it must hold exactly.

    Every file must be there with its digest, and nothing else may be: an added file (a
    planted ``.pyc``, a module that shadows one of the app's imports) changes what runs as
    surely as an edited one. Returns one line per difference, e.g.
    ``app.py: changed (sha256 ab12cd34ef56 → 0f1e2d3c4b5a)``; empty when the folder is exact.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if relative not in expected:
                problems.append(f"{relative}: added (not in the deployed bundle)")
                continue
            seen.add(relative)
            if path.is_symlink() or not path.is_file():
                problems.append(f"{relative}: replaced by something that is not a regular file")
                continue
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != expected[relative]:
                problems.append(f"{relative}: changed (sha256 {expected[relative][:12]} → {actual[:12]})")
    for relative in sorted(expected.keys() - seen):
        problems.append(f"{relative}: missing")
    return problems


def code_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """File by file, what differs from the ``before`` list to the ``after`` list."""
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if path not in after:
            lines.append(f"{path}: removed")
        elif path not in before:
            lines.append(f"{path}: added")
        elif before[path] != after[path]:
            lines.append(f"{path}: changed (sha256 {before[path][:12]} → {after[path][:12]})")
    return lines


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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def declared_env(root: Path) -> list[str]:
    """The environment variables the app in ``root`` declares in ``tether.toml``
    (``env = ["NAME", ...]``): the only ones of the server's its workers receive, beyond a
    fixed set. Malformed declarations are ignored here; :func:`check_env` refuses them at deploy."""
    config = root / CONFIG_FILE
    try:
        data = tomllib.loads(config.read_text()) if config.is_file() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        return []
    names = data.get("env", [])
    return [n for n in names if isinstance(n, str) and _ENV_NAME.match(n)] if isinstance(names, list) else []


def check_env(root: Path) -> None:
    """Refuse a malformed ``env`` declaration in ``root/tether.toml``.

    Raises:
        BundleError: ``env`` is not a list of environment variable names.
    """
    config = root / CONFIG_FILE
    if not config.is_file():
        return
    try:
        names = tomllib.loads(config.read_text()).get("env", [])
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{CONFIG_FILE} is not valid TOML: {exc}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and _ENV_NAME.match(n) for n in names):
        raise BundleError(f'{CONFIG_FILE}: env must be a list of environment variable names, e.g. env = ["API_KEY"]')


def check_ref(ref: object) -> str:
    """Validate an app reference of the form ``module:attribute``."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise BundleError(f"app reference {ref!r} must look like 'module:attribute'")
    return ref
