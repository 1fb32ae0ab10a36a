"""The environment a deployment runs in: its fingerprint, and how two fingerprints differ.

A deployment's behaviour is decided by its code *and* by what that code runs on: the Python
interpreter, tether's own worker side, every library it can import, and the start-up files
(``*.pth``, ``sitecustomize``) that run code in every interpreter. The fingerprint names them::

    {"python": "3.11.7", "tether": "0.1.0+3f2a9c1d0b4e",
     "packages": {"annotated-types": "0.7.0", "pydantic": "2.12.4", ...},
     "startup": {"distutils-precedence.pth": "1c2b…", ...}}

A worker computes it for the interpreter it runs in (so it sees the same ``sys.path`` the
app's imports will see) and refuses to serve a deployment recorded under another one; the
runtime shows the difference package by package (``pydantic 2.12.4 → 2.11.7``).

Reading it must be cheap, because every cold start pays for it: distributions are read from
their ``*.dist-info`` folder names (``name-version.dist-info``, fixed by the wheel spec)
rather than by parsing each METADATA file, and tether's build digest is computed once per
process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import tether
from tether.core.journal import canonical_json

SOURCE_SUFFIXES = (".py", ".pyi", ".sql", ".html", ".css", ".js", ".typed")
"""The files of tether's own package that make up its build (what a worker imports or serves)."""

_DIST_INFO = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+?)(?:-py\d[\d.]*)?\.(?:dist-info|egg-info)$")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Pydantic_Core`` → ``pydantic-core``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def tether_source_files(package_dir: Path) -> list[Path]:
    """The files of tether's package that its build digest covers, in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(SOURCE_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(package_dir).as_posix())


@functools.cache
def tether_build() -> str:
    """tether's version from its package metadata, plus a digest of its source files.

    Two installs of the same release with different code (an edited checkout, a patched
    wheel) get different builds, so a deployment never silently runs on changed runtime code.
    """
    try:
        version = metadata.version("tether")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    package_dir = Path(tether.__file__).parent
    digest = hashlib.sha256()
    for path in tether_source_files(package_dir):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{version}+{digest.hexdigest()[:12]}"


def _listings(paths: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """Each readable directory of ``paths`` with its sorted entries, in path order."""
    for entry in paths:
        try:
            yield entry or ".", sorted(os.listdir(entry or "."))
        except OSError:
            continue


def distributions(paths: Iterable[str]) -> dict[str, str]:
    """``{normalized name: version}`` of every distribution installed on ``paths``.

    The first one found wins, in path order, as for imports. tether itself is left out: the
    fingerprint names its build separately.
    """
    found: dict[str, str] = {}
    for _, names in _listings(paths):
        for name in names:
            match = _DIST_INFO.match(name)
            if match is not None and (key := normalize(match["name"])) != "tether" and key not in found:
                found[key] = match["version"]
    return dict(sorted(found.items()))


STARTUP_FILES = ("sitecustomize.py", "usercustomize.py")


def startup_files(paths: Iterable[str]) -> dict[str, str]:
    """``{name: sha256[:16]}`` of what the interpreter runs at start-up from ``paths``: every
    ``*.pth`` file (its import lines run code) and ``sitecustomize``/``usercustomize``.

    They are code that no distribution's version names, so a changed one would otherwise run
    unannounced under every deployment.
    """
    found: dict[str, str] = {}
    for entry, names in _listings(paths):
        for name in names:
            if (name.endswith(".pth") or name in STARTUP_FILES) and name not in found:
                try:
                    found[name] = hashlib.sha256(Path(entry, name).read_bytes()).hexdigest()[:16]
                except OSError:
                    continue
    return dict(sorted(found.items()))


def fingerprint(*, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fingerprint of this interpreter (see the module docstring).

    Args:
        exclude: ``sys.path`` entries to ignore (the app's own folder: its files are code,
            checked file by file, not environment).
    """
    skip = {os.path.realpath(p) for p in exclude}
    paths = [p for p in sys.path if os.path.realpath(p or ".") not in skip]
    return {
        "python": platform.python_version(),
        "tether": tether_build(),
        "packages": distributions(paths),
        "startup": startup_files(paths),
    }


def digest(environment: Mapping[str, Any]) -> str:
    """``sha256`` of the canonical JSON of a fingerprint."""
    return hashlib.sha256(canonical_json(dict(environment))).hexdigest()


def changes(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """What differs from ``expected`` to ``actual``, one line each.

    ``python 3.11.7 → 3.11.9``, ``tether 0.1.0+ab… → 0.1.0+cd…``, ``pydantic 2.12.4 →
    2.11.7``, ``+ rich 14.0.0`` (added), ``- six 1.16.0`` (gone).
    """
    lines = []
    for key in ("python", "tether"):
        if expected.get(key) != actual.get(key):
            lines.append(f"{key} {expected.get(key)} → {actual.get(key)}")
    old: Mapping[str, str] = expected.get("packages") or {}
    new: Mapping[str, str] = actual.get("packages") or {}
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            lines.append(f"- {name} {old[name]}")
        elif name not in old:
            lines.append(f"+ {name} {new[name]}")
        elif old[name] != new[name]:
            lines.append(f"{name} {old[name]} → {new[name]}")
    before: Mapping[str, str] = expected.get("startup") or {}
    after: Mapping[str, str] = actual.get("startup") or {}
    for name in sorted(before.keys() | after.keys()):
        if before.get(name) != after.get(name):
            state = "added" if name not in before else "removed" if name not in after else "changed"
            lines.append(f"start-up file {name} {state}")
    return lines


def summary(lines: list[str], limit: int = 12) -> str:
    """The first ``limit`` change lines joined for a message, with a count of the rest."""
    shown = "; ".join(lines[:limit])
    return shown + (f"; and {len(lines) - limit} more" if len(lines) > limit else "")
