"""Per-deployment virtual environments, built with uv from a bundle's lock.

A bundle that carries ``requirements.txt``, or ``pyproject.toml`` with ``uv.lock``, gets its
own environment: at deploy time its requirements (plus what tether's worker side needs) are
resolved to exact pins with ``uv pip compile`` — the *lock* — and one virtual environment is
built per lock digest under ``DATA_DIR/envs/<digest>``, shared by every deployment with the
same lock and removed with the last of them. tether's own package is copied in beside the
libraries, so the environment is whole: a later upgrade of the server's libraries, or of
tether, does not reach a deployment that has its own environment.

The lock (not the loose requirements) is what is stored with the deployment, so a rebuild —
on a new node, after the folder was removed — installs exactly the same versions, and the
worker's fingerprint check proves that it did.
"""

from __future__ import annotations

import asyncio
import compileall
import hashlib
import json
import logging
import os
import py_compile
import shutil
import sys
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import tether
from tether import _bundle, _environment
from tether.errors import RequirementsError

log = logging.getLogger("tether.envs")
BUILD_TIMEOUT = 900.0
"""Seconds a resolve or an install may take (a first build downloads every wheel)."""
WORKER_REQUIREMENTS = ("pydantic", "orjson", "httpx")
"""The distributions tether's worker side imports; their version ranges come from tether's own
metadata, so ``pyproject.toml`` stays the one place they are pinned."""
LOG_LIMIT = 64 * 1024
FILES = ".tether-files.json"
"""The environment's own file list, written when it is built and checked before each worker start."""
_CHECKED = py_compile.PycInvalidationMode.CHECKED_HASH
"""tether's copied files get hash-checked bytecode: valid whatever their mtime after a copy."""

Progress = Callable[[str], None]


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def _tree(root: Path) -> dict[str, str]:
    """``{path: sha256}`` of every file under ``root`` (a link: its target), but the records."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if relative in (FILES, ".tether-complete"):
                continue
            if path.is_symlink():
                found[relative] = "link:" + os.readlink(path)
            else:
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(found.items()))


def lock_source(folder: Path) -> str | None:
    """Which lock the bundle in ``folder`` carries: ``requirements.txt``, ``uv.lock`` or None.

    Raises:
        RequirementsError: ``pyproject.toml`` declares dependencies but there is no
            ``uv.lock`` (unpinned dependencies are no snapshot).
    """
    if (folder / "requirements.txt").is_file():
        return "requirements.txt"
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return None
    if (folder / "uv.lock").is_file():
        return "uv.lock"
    try:
        declared = tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"pyproject.toml is not valid TOML: {exc}") from None
    if declared:
        raise RequirementsError(
            "pyproject.toml declares dependencies but the bundle has no uv.lock: run 'uv lock' in the app folder "
            "(or list exact versions in requirements.txt) and deploy again"
        )
    return None


def worker_requirements() -> list[str]:
    """tether's own requirements for the worker side, as ``name<specifier>`` lines."""
    wanted = {_environment.normalize(n) for n in WORKER_REQUIREMENTS}
    lines = []
    for requirement in metadata.requires("tether") or []:
        if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
            continue
        name = requirement.split(";")[0]
        for stop in "<>=!~[ (":
            name = name.split(stop)[0]
        if _environment.normalize(name) in wanted:
            lines.append(requirement.split(";")[0].strip())
    return sorted(lines)


@dataclass(frozen=True, slots=True)
class Lock:
    """The resolved dependencies of a bundle."""

    source: str
    """``requirements.txt`` or ``uv.lock``: what the bundle carried."""
    requirements: str
    """Every distribution pinned to one version (``uv pip compile`` output)."""
    python: str
    """The full Python version the environment is built for."""
    tether: str
    """tether's build copied into it."""

    @property
    def digest(self) -> str:
        """Names the environment folder: the same pins on the same Python and tether share one."""
        text = json.dumps(
            {"requirements": self.requirements, "python": self.python, "tether": self.tether}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "source": self.source,
            "requirements": self.requirements,
            "python": self.python,
            "tether": self.tether,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lock:
        """Read the stored form."""
        return cls(data["source"], data["requirements"], data["python"], data["tether"])


class BuildLog:
    """The output of one deploy's environment work: kept with the deployment, and passed on
    line by line to whoever watches (the CLI's progress)."""

    def __init__(self, progress: Progress | None = None) -> None:
        """Start an empty log."""
        self.lines: list[str] = []
        self._progress = progress

    def add(self, line: str) -> None:
        """Record one line."""
        line = line.rstrip()
        if not line:
            return
        self.lines.append(line)
        if self._progress is not None:
            self._progress(line)

    def text(self) -> str:
        """The whole log, cut to its last 64 KiB."""
        text = "\n".join(self.lines)
        return text[-LOG_LIMIT:]


class Environments:
    """Builds, finds and removes the per-lock virtual environments under ``root``."""

    def __init__(self, root: Path) -> None:
        """Keep environments under ``root`` (``DATA_DIR/envs``)."""
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0
        """Environments built since the server started (a reused one is not counted)."""

    def python(self, digest: str) -> Path:
        """The interpreter of the environment ``digest`` (which may not exist yet)."""
        return self.root / digest / "bin" / "python"

    def exists(self, digest: str) -> bool:
        """Whether the environment ``digest`` is built."""
        return (self.root / digest / ".tether-complete").is_file()

    async def resolve(self, folder: Path, source: str, log: BuildLog) -> Lock:
        """Pin the bundle's requirements (and the worker's) to exact versions.

        Raises:
            RequirementsError: uv cannot resolve them; the message carries uv's output.
        """
        scratch = self.root / f".resolve-{uuid.uuid4().hex}"
        scratch.mkdir()
        try:
            inputs = []
            if source == "uv.lock":
                exported = scratch / "exported.txt"
                log.add("exporting uv.lock")
                await self._uv(
                    ["export", "--frozen", "--no-hashes", "--no-dev", "--no-emit-project", "--no-header"]
                    + ["--format", "requirements-txt", "--directory", str(folder), "-o", str(exported)],
                    log,
                    cwd=folder,
                    what="uv.lock cannot be exported",
                )
                inputs.append(str(exported))
            else:
                inputs.append(str(folder / "requirements.txt"))
            worker = scratch / "tether-worker.in"
            worker.write_text("\n".join(worker_requirements()) + "\n")
            inputs.append(str(worker))
            log.add(f"resolving {source} with uv")
            output = await self._uv(
                ["pip", "compile", "--python", sys.executable, "--no-header", "--no-annotate", "--quiet", *inputs],
                log,
                cwd=folder,
                what=f"the requirements in {source} cannot be resolved",
                keep_stdout=True,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        pins = "\n".join(line for line in output.splitlines() if line.strip() and not line.startswith("#")) + "\n"
        lock = Lock(source, pins, _environment.fingerprint()["python"], _environment.tether_build())
        log.add(f"resolved {len(pins.splitlines())} distributions: lock {lock.digest}")
        return lock

    async def ensure(self, lock: Lock, log: BuildLog) -> tuple[Path, bool]:
        """The environment of ``lock``, built now if it does not exist (once, however many
        deploys ask at the same time). Returns its interpreter and whether it was built now.

        Raises:
            RequirementsError: uv cannot install the pins; nothing is left behind.
        """
        digest = lock.digest
        async with self._locks.setdefault(digest, asyncio.Lock()):
            if self.exists(digest):
                log.add(f"environment {digest} exists: reused")
                return self.python(digest), False
            scratch = self.root / f".build-{digest}-{uuid.uuid4().hex[:8]}"
            try:
                log.add(f"building environment {digest} (Python {lock.python})")
                await self._uv(
                    ["venv", "--quiet", "--relocatable", "--python", sys.executable, str(scratch)],
                    log,
                    what="the virtual environment cannot be created",
                )
                pins = scratch / "tether-lock.txt"
                pins.write_text(lock.requirements)
                # Workers never write bytecode (the bundle stays as deployed), so compile it
                # here once: otherwise every cold start compiles pydantic from source.
                await self._uv(
                    ["pip", "sync", "--compile-bytecode", "--python", str(scratch / "bin" / "python"), str(pins)],
                    log,
                    what="the locked requirements cannot be installed",
                )
                await asyncio.to_thread(self._copy_tether, scratch)
                files = await asyncio.to_thread(_tree, scratch)
                (scratch / FILES).write_text(json.dumps(files, sort_keys=True))
                (scratch / ".tether-complete").write_text(json.dumps(lock.to_json(), sort_keys=True))
                target = self.root / digest
                shutil.rmtree(target, ignore_errors=True)
                scratch.rename(target)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            self.builds += 1
            log.add(f"environment {digest} built")
            return self.python(digest), True

    def remove(self, digest: str) -> None:
        """Delete the environment ``digest`` (its last deployment was removed)."""
        shutil.rmtree(self.root / digest, ignore_errors=True)

    def verify(self, digest: str) -> list[str]:
        """What changed in the environment's files since it was built (empty: nothing).

        Every file counts — libraries, their compiled bytecode, tether's copy — so a library
        edited in place is caught before a worker imports it, not only a changed version.
        """
        folder = self.root / digest
        try:
            recorded = json.loads((folder / FILES).read_text())
        except (OSError, ValueError):
            return [f"{FILES}: missing or unreadable"]
        return _bundle.code_changes(recorded, _tree(folder))

    def set_aside(self, digest: str) -> Path:
        """Move a changed environment out of the way (kept for inspection); the next load
        rebuilds it from the deployment's lock."""
        aside = self.root / f".changed-{digest}-{uuid.uuid4().hex[:6]}"
        (self.root / digest).rename(aside)
        return aside

    @staticmethod
    def _site_packages(venv: Path) -> Path:
        found = sorted((venv / "lib").glob("python*/site-packages"))
        if not found:
            raise RequirementsError(f"the environment at {venv} has no site-packages folder")
        return found[0]

    def _copy_tether(self, venv: Path) -> None:
        """Put this tether's package (exactly the files its build digest covers) into ``venv``."""
        source = Path(tether.__file__).parent
        site = self._site_packages(venv)
        for path in _environment.tether_source_files(source):
            target = site / "tether" / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        version = _environment.tether_build().split("+")[0]
        info = site / f"tether-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tether\nVersion: {version}\n")
        (info / "INSTALLER").write_text("tether\n")
        compileall.compile_dir(site / "tether", quiet=1, workers=1, invalidation_mode=_CHECKED)

    async def _uv(
        self,
        args: list[str],
        log: BuildLog,
        *,
        what: str,
        cwd: Path | None = None,
        keep_stdout: bool = False,
    ) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
        env["NO_COLOR"] = "1"
        process = await asyncio.create_subprocess_exec(
            _uv(),
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        stderr_lines: list[str] = []

        async def pump_stderr() -> None:
            assert process.stderr is not None
            while line := await process.stderr.readline():
                text = line.decode(errors="replace")
                stderr_lines.append(text)
                log.add(text)

        try:
            stdout, _ = await asyncio.wait_for(asyncio.gather(process.stdout.read(), pump_stderr()), BUILD_TIMEOUT)
            await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RequirementsError(f"{what}: uv did not finish within {BUILD_TIMEOUT:.0f}s") from None
        output = stdout.decode(errors="replace")
        if not keep_stdout:
            for line in output.splitlines():
                log.add(line)
        if process.returncode != 0:
            detail = "".join(stderr_lines).strip()[-3000:] or output.strip()[-3000:]
            raise RequirementsError(f"{what} (uv exited with {process.returncode}):\n{detail}")
        return output
