"""Bundle workers: processes started on demand from stored artifacts, one per deployment.

A worker serves the runtime⇄deployment protocol on a loopback port. The pool starts one the
first time a deployment's run needs it (from the artifact in the store, extracted once into
the data directory), restarts it if it died, and stops it after an idle timeout.

Every load proves the snapshot (:class:`WorkerSpec`): artifact bytes are checked against the
bundle digest before they are unpacked, the unpacked folder is read-only, and each worker
start hands the worker the deployment's file list and environment fingerprint to check before
it imports anything. A failed proof raises :class:`tether.errors.SnapshotError`, which stops
the run ``stuck`` with the files or packages that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether import _bundle, _environment
from tether.errors import BundleError, SnapshotError, WorkerUnavailableError
from tether.server import _sandbox
from tether.server._envs import BuildLog, Environments, Lock
from tether.server._link import AppendHandler, WorkerLink
from tether.store.records import Deployment

log = logging.getLogger("tether.workers")
START_TIMEOUT = 60.0
"""Default seconds a worker may take to import its app and report ready (``--import-timeout``)."""
STDERR_TAIL = 2000
"""Characters of a failed worker's output quoted in the error."""
SPARE_RESPAWN_DELAY = 1.0
"""Seconds after a spare is taken before the next one starts."""
LATE_ENV_UNSAFE_PREFIXES = ("PYTHON", "LD_", "MALLOC", "GLIBC")
"""Declared variables a spare cannot take after its start (the interpreter or the C library
read them when the process starts): a bundle declaring one of them gets a cold start."""


@dataclass(eq=False)
class _Spare:
    """A warm worker process waiting, on an empty slot folder, to become some deployment's worker."""

    process: asyncio.subprocess.Process
    slot: Path
    python: str
    isolation: str
    env: dict[str, str]
    log_path: Path


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker must run, and the snapshot it must prove before it does."""

    key: str
    """The pool key (:func:`worker_key`): the tenant and the deployment id."""
    label: str
    """The deployment's label, for messages."""
    bundle_digest: str
    app_ref: str
    files: dict[str, str] | None = None
    """``{path: sha256}`` the unpacked folder must hold exactly (None: not recorded, unchecked)."""
    environment: dict[str, Any] | None = None
    """The fingerprint the worker's interpreter must have (None: not recorded, unchecked)."""
    lock: Lock | None = None
    """The deployment's own environment (None: the server's interpreter)."""
    isolation: str = "process"
    """``process`` or ``sandbox`` (see :mod:`tether.server._sandbox`)."""


ArtifactLoader = Callable[[], Awaitable[bytes | None]]


def worker_key(tenant_id: str, deployment_id: str) -> str:
    """A worker's pool key: one worker per deployment *of a tenant* (two tenants that deploy
    identical content get the same deployment id, never the same process)."""
    return f"{tenant_id}/{deployment_id}"


def worker_spec(deployment: Deployment) -> WorkerSpec:
    """The :class:`WorkerSpec` of a bundle deployment, from its stored record."""
    assert deployment.bundle_digest is not None and deployment.app_ref is not None
    environment = deployment.environment or {}
    lock = environment.get("lock")
    return WorkerSpec(
        key=worker_key(deployment.tenant_id, deployment.id),
        label=deployment.label,
        bundle_digest=deployment.bundle_digest,
        app_ref=deployment.app_ref,
        files=deployment.code,
        environment=environment.get("fingerprint"),
        lock=Lock.from_json(lock) if lock else None,
        isolation=deployment.isolation,
    )


def _writable(path: Path) -> None:
    """Make an extracted (read-only) folder deletable again."""
    for dirpath, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, stat.S_IRWXU)


def _read_only(path: Path) -> None:
    """Files 0444 and folders 0555: the unpacked code is not meant to be edited in place."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)
    os.chmod(path, 0o555)


@dataclass(eq=False)
class Worker:
    """One running worker process and the link the runtime holds to it."""

    key: str
    process: asyncio.subprocess.Process
    link: WorkerLink
    manifest_digest: str
    started_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    active: int = 0
    """Attempts in flight on this worker."""
    slot: Path | None = None
    """The folder a warm spare was started on and filled with the bundle's files (removed with
    the worker); None for a worker started on the bundle's own folder."""

    @property
    def alive(self) -> bool:
        """Whether the process is still running and reachable."""
        return self.process.returncode is None and not self.link.closed


@dataclass
class StartStats:
    """Cold starts of one pool key (a deployment) since the server started."""

    count: int = 0
    last_seconds: float | None = None
    """Duration of the latest start: process spawn to READY and the link open."""
    total_seconds: float = 0.0

    def record(self, seconds: float) -> None:
        """Count one successful start that took ``seconds``."""
        self.count += 1
        self.last_seconds = seconds
        self.total_seconds += seconds

    @property
    def mean_seconds(self) -> float | None:
        """Mean start duration, or None before the first start."""
        return self.total_seconds / self.count if self.count else None


_WAY_OUT = {
    "CodeChanged": "The changed folder was set aside (DATA_DIR/bundles/.changed-*) and the next load unpacks "
    "the verified artifact again: once you know who changed it, go on with 'tether runs move RUN --to "
    "<this deployment>'",
    "EnvironmentChanged": "Restore the libraries the deployment was made with, or deploy the app again (a new "
    "deployment records the new environment) and move the run to it after a dry run ('tether runs move RUN "
    "--to VERSION'); a bundle with requirements.txt or uv.lock gets its own environment",
}


PASSED_ENV = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "TETHER_MODEL_BASE_URL",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)
"""What a worker gets of the server's environment without declaring it: the interpreter's
settings (``PYTHONPATH`` is part of the fingerprint), proxies and certificates, and the model
settings agents read by default. Everything else (the server's own secrets, cloud credentials)
must be named in the app's ``tether.toml`` (``env = ["NAME", ...]``)."""


def worker_env(folder: Path, *, sandboxed: bool) -> dict[str, str]:
    """The environment a worker of the bundle in ``folder`` starts with."""
    names = set(PASSED_ENV) | set(_bundle.declared_env(folder))
    env = {name: os.environ[name] for name in sorted(names) if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    env["HOME"] = "/tmp" if sandboxed else os.environ.get("HOME", "/tmp")
    return env


def _fill_slot(folder: Path, slot: Path) -> None:
    """Copy an unpacked bundle into a spare's (empty) slot, read-only like the bundle itself.

    The spare proves the copy against the deployment's recorded files before importing it,
    exactly as a cold worker proves the bundle's own folder."""
    shutil.copytree(folder, slot, dirs_exist_ok=True, symlinks=True)
    _read_only(slot)


def _remove_slot(slot: Path) -> None:
    if slot.exists():
        _writable(slot)
        shutil.rmtree(slot, ignore_errors=True)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def _tail(log_path: Path, offset: int) -> str:
    """The end of what a worker wrote to its log since ``offset``, to quote in an error."""
    with open(log_path, "rb") as log_file:
        log_file.seek(offset)
        text = log_file.read().decode(errors="replace").strip()
    if not text:
        return " It wrote nothing to stderr."
    if len(text) > STDERR_TAIL:
        text = "…" + text[-STDERR_TAIL:]
    return f" Its stderr ended with:\n{text}"


class WorkerPool:
    """Starts, finds and stops bundle workers."""

    def __init__(
        self,
        data_dir: Path,
        *,
        on_append: AppendHandler,
        idle_timeout: float = 300.0,
        start_timeout: float = START_TIMEOUT,
        warm_spares: bool = True,
    ) -> None:
        """Keep extracted bundles, environments and worker logs under ``data_dir``; commit
        appends with ``on_append``; give a worker ``start_timeout`` seconds to import its app.
        With ``warm_spares``, keep one started interpreter per isolation tier in use (on the
        server's own environment) ready to become the next worker a deployment needs: a cold
        wake then skips the interpreter's start and tether's imports."""
        self._on_append = on_append
        self._data_dir = data_dir.resolve()
        self.envs = Environments(data_dir / "envs")
        self._bundles = data_dir / "bundles"
        self._logs = data_dir / "logs"
        self._bundles.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self._workers: dict[str, Worker] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.cold_starts = 0
        """Workers started since the server started (all keys)."""
        self._starts: dict[str, StartStats] = {}
        self.warm_spares = warm_spares
        self._spares: dict[tuple[str, str], _Spare] = {}
        self._spawning: set[tuple[str, str]] = set()
        self._spare_tasks: set[asyncio.Task[None]] = set()
        self._slots = self._data_dir / "slots"
        if self._slots.exists():  # left by a server that stopped without cleaning up
            _writable(self._slots)
            shutil.rmtree(self._slots, ignore_errors=True)

    def alive(self) -> dict[str, Worker]:
        """Running workers by key."""
        return {k: w for k, w in self._workers.items() if w.alive}

    def stats(self, key: str) -> dict[str, Any]:
        """Worker statistics of one key, since the server started.

        ``workers`` (live processes), ``worker_started_at`` (epoch seconds of the current
        worker, or None), ``cold_starts`` and ``cold_start_seconds`` (``last`` and ``mean``,
        from process spawn to READY and the link open; None before the first start).
        """
        worker = self._workers.get(key)
        if worker is not None and not worker.alive:
            worker = None
        starts = self._starts.get(key) or StartStats()
        return {
            "workers": int(worker is not None),
            "worker_started_at": worker.started_at if worker is not None else None,
            "cold_starts": starts.count,
            "cold_start_seconds": {"last": starts.last_seconds, "mean": starts.mean_seconds},
        }

    def folder(self, bundle_digest: str) -> Path:
        """Where the bundle with this digest is (or would be) extracted."""
        return self._bundles / bundle_digest

    def unpack(self, data: bytes, bundle_digest: str) -> Path:
        """Extract a bundle once into ``bundles/<digest>`` (atomically, read-only) and return the folder.

        Raises:
            SnapshotError: the bytes are not the ones the digest names (``ArtifactChanged``).
            BundleError: the bytes are not a safe bundle.
        """
        target = self._bundles / bundle_digest
        if target.is_dir():
            return target
        actual = _bundle.digest(data)
        if actual != bundle_digest:
            raise SnapshotError(
                "ArtifactChanged",
                f"the stored artifact of bundle {bundle_digest[:12]} does not match its digest (its bytes hash to "
                f"{actual[:12]}): it was changed after it was deployed, and nothing from it was run. Deploy the "
                "app again and move the run to the new deployment ('tether runs move RUN --to VERSION')",
                [f"artifact: sha256 {bundle_digest[:12]} → {actual[:12]}"],
            )
        scratch = self._bundles / f".tmp-{uuid.uuid4().hex}"
        try:
            _bundle.extract(data, scratch)
            _read_only(scratch)
            try:
                scratch.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            if scratch.exists():
                _writable(scratch)
                shutil.rmtree(scratch, ignore_errors=True)
        return target

    def quarantine(self, bundle_digest: str) -> Path | None:
        """Set aside an unpacked folder that failed its proof, keeping it for inspection.

        The next load unpacks the (verified) artifact afresh; the folder moves to
        ``bundles/.changed-<digest>-<time>``. Returns where it went, or None if it was gone.
        """
        folder = self._bundles / bundle_digest
        if not folder.is_dir():
            return None
        aside = self._bundles / f".changed-{bundle_digest[:12]}-{int(time.time())}-{uuid.uuid4().hex[:6]}"
        folder.rename(aside)
        log.warning("unpacked bundle %s differs from its artifact; kept aside at %s", bundle_digest[:12], aside)
        return aside

    async def retire(self, key: str, bundle_digest: str | None) -> None:
        """Stop the worker of a removed deployment; delete its bundle's folder when the artifact is gone."""
        worker = self._workers.pop(key, None)
        if worker is not None:
            await self._stop(worker)
        if bundle_digest is not None:
            self.discard(bundle_digest)

    def discard(self, bundle_digest: str) -> None:
        """Remove an extracted bundle folder (after a failed deploy, or with its artifact)."""
        folder = self._bundles / bundle_digest
        if folder.exists():
            _writable(folder)
            shutil.rmtree(folder, ignore_errors=True)

    async def adopt(self, worker: Worker, key: str) -> None:
        """File a worker started for a deploy under the deployment it turned out to serve
        (or stop it, when that deployment already has a live worker)."""
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]
        stats = self._starts.pop(worker.key, None)
        if stats is not None:
            merged = self._starts.setdefault(key, StartStats())
            merged.count += stats.count
            merged.total_seconds += stats.total_seconds
            merged.last_seconds = stats.last_seconds
        previous = self._workers.get(key)
        if previous is not None and previous.alive:
            await self._stop(worker)
            return
        worker.key = key
        worker.link.owner = key
        self._workers[key] = worker

    async def get(self, spec: WorkerSpec, load: ArtifactLoader) -> Worker:
        """A live worker for the deployment ``spec`` describes, started (and proven) if needed.

        Args:
            spec: the deployment's code, app reference and recorded snapshot.
            load: returns the artifact bytes (used when the bundle is not extracted locally yet).

        Raises:
            SnapshotError: the artifact, the unpacked files or the environment are not the
                deployment's (the run must stop, not retry).
            BundleError: the artifact is gone or the app cannot be loaded.
        """
        worker = self._workers.get(spec.key)
        if worker is not None and worker.alive:
            worker.last_used = time.monotonic()
            return worker
        lock = self._locks.setdefault(spec.key, asyncio.Lock())
        async with lock:
            worker = self._workers.get(spec.key)
            if worker is not None and worker.alive:
                return worker
            folder = self._bundles / spec.bundle_digest
            if not folder.is_dir():
                data = await load()
                if data is None:
                    raise BundleError(
                        f"the artifact of {spec.label} ({spec.bundle_digest[:12]}) is no longer stored: "
                        "deploy the app again and move the run to it"
                    )
                folder = self.unpack(data, spec.bundle_digest)
            python = await self._python(spec)
            try:
                worker = await self._start(spec, folder, python)
            except SnapshotError as exc:
                if exc.kind == "CodeChanged":
                    self.quarantine(spec.bundle_digest)
                raise
            self._workers[spec.key] = worker
            return worker

    async def _python(self, spec: WorkerSpec) -> str:
        """The interpreter the deployment's workers run on: its own environment (rebuilt from
        the stored lock if this node has none yet), else the server's."""
        if spec.lock is None:
            return sys.executable
        digest = spec.lock.digest
        if self.envs.exists(digest):
            changed = await asyncio.to_thread(self.envs.verify, digest)
            if changed:
                aside = self.envs.set_aside(digest)
                raise SnapshotError(
                    "EnvironmentChanged",
                    f"{spec.label}: the files of its environment {digest} changed since it was built: "
                    f"{_environment.summary(changed)}. Nothing ran. The changed environment was set aside "
                    f"({aside.name}) and the next load rebuilds it from the deployment's lock: go on with "
                    "'tether runs move RUN --to <this deployment>'",
                    changed,
                )
        else:
            log.info("environment %s of %s is missing here: rebuilding it from its lock", digest, spec.label)
            await self.envs.ensure(spec.lock, BuildLog(lambda line: log.info("env %s: %s", digest, line)))
        return str(self.envs.python(digest))

    async def _start(self, spec: WorkerSpec, folder: Path, python: str) -> Worker:
        key, app_ref = spec.key, spec.app_ref
        log_path = self._logs / f"worker-{key.rsplit('/', 1)[-1].removeprefix('dep_')[:12]}.log"
        env = worker_env(folder, sandboxed=spec.isolation == "sandbox")
        link_secret = secrets.token_hex(32)
        expected = _json_bytes({"files": spec.files, "environment": spec.environment, "link_secret": link_secret})
        spare = self._take_spare(python, spec.isolation, env)
        if spare is not None:
            late = {name: value for name, value in env.items() if spare.env.get(name) != value}
            try:
                await asyncio.to_thread(_fill_slot, folder, spare.slot)
            except OSError:
                await self._drop_spare(spare)
            else:
                handed = _json_bytes(
                    {
                        "files": spec.files,
                        "environment": spec.environment,
                        "link_secret": link_secret,
                        "app": app_ref,
                        "env": late,
                    }
                )
                log.info("worker for %s: a warm spare (pid %s) takes it over", app_ref, spare.process.pid)
                # The spare's output file becomes the deployment's worker log; the previous
                # worker's log is kept beside it.
                offset = spare.log_path.stat().st_size if spare.log_path.exists() else 0
                with contextlib.suppress(OSError):
                    if log_path.exists():
                        log_path.replace(log_path.with_name(log_path.name + ".previous"))
                    spare.log_path.replace(log_path)
                return await self._handshake(
                    spec, spare.process, handed, link_secret, time.monotonic(), log_path, offset, slot=spare.slot
                )
        self._want_spare(python, spec.isolation)
        # -P: the bundle's folder (the cwd) must not be importable before its files are proven,
        # or a planted module could shadow one tether imports first.
        argv = [python, "-P", "-m", "tether._worker", "--app-dir", str(folder), "--app", app_ref, "--expect-stdin"]
        if spec.isolation == "sandbox":
            why = _sandbox.available()
            if why is not None:
                raise WorkerUnavailableError(f"{spec.label} runs in a sandbox, but {why}")
            own = [folder] + ([self.envs.root / spec.lock.digest] if spec.lock is not None else [])
            argv = _sandbox.command(
                argv,
                folder=folder,
                read_only=await asyncio.to_thread(_sandbox.python_paths, python),
                private=self._data_dir,
                own=own,
                env=env,
                switch_user=os.geteuid() == 0,
            )
        else:
            # A sandboxed worker dies with its jail; a plain one watches the server itself.
            argv += ["--parent-pid", str(os.getpid())]
        spawned = time.monotonic()
        with open(log_path, "ab") as log_file:
            offset = log_file.tell()  # this start's output begins here (the log is appended to)
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=folder,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        return await self._handshake(spec, process, expected, link_secret, spawned, log_path, offset)

    async def _handshake(
        self,
        spec: WorkerSpec,
        process: asyncio.subprocess.Process,
        expected: bytes,
        link_secret: str,
        spawned: float,
        log_path: Path,
        offset: int,
        *,
        slot: Path | None = None,
    ) -> Worker:
        """Hand the worker its spec on stdin and wait for its first line (ready, refused, error)."""
        key, app_ref = spec.key, spec.app_ref
        assert process.stdout is not None and process.stdin is not None
        with contextlib.suppress(ConnectionError):
            process.stdin.write(expected)
            await process.stdin.drain()
        process.stdin.close()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), self.start_timeout)
        except TimeoutError:
            # The whole session: a sandboxed worker is bubblewrap's child.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise WorkerUnavailableError(
                f"the worker for {app_ref} did not import the app and start within {self.start_timeout:g}s "
                f"(--import-timeout); does a module of the app block at import?{_tail(log_path, offset)}"
            ) from None
        text = line.decode(errors="replace").strip()
        if text.startswith("TETHER_WORKER_READY "):
            _, port, digest = text.split(" ")
            try:
                link = await WorkerLink.open("127.0.0.1", int(port), self._on_append, secret=link_secret)
            except OSError as exc:
                process.kill()
                await process.wait()
                raise WorkerUnavailableError(f"cannot connect to the worker for {app_ref}: {exc}") from None
            link.owner = key
            seconds = time.monotonic() - spawned
            self.cold_starts += 1
            self._starts.setdefault(key, StartStats()).record(seconds)
            log.info("started worker %s for %s on port %s in %.3fs", process.pid, app_ref, port, seconds)
            return Worker(key, process, link, digest, slot=slot)
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except TimeoutError:
            # Not a protocol line, and the process goes on: it cannot be a worker of ours.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        if slot is not None:
            _remove_slot(slot)
        if text.startswith("TETHER_WORKER_REFUSED "):
            refusal = json.loads(text.removeprefix("TETHER_WORKER_REFUSED "))
            raise SnapshotError(
                refusal["type"],
                f"{spec.label}: {refusal['message']}. Nothing ran. {_WAY_OUT.get(refusal['type'], '')}",
                refusal.get("changes"),
            )
        if text.startswith("TETHER_WORKER_ERROR "):
            message = json.loads(text.removeprefix("TETHER_WORKER_ERROR "))
            tail = _tail(log_path, offset)
            raise BundleError(message if "nothing to stderr" in tail else f"{message}\n{tail.strip()}")
        raise WorkerUnavailableError(
            f"the worker for {app_ref} exited with code {process.returncode}.{_tail(log_path, offset)}"
        )

    def forget(self, worker: Worker) -> None:
        """Drop a worker that stopped answering (it is killed if still running)."""
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
        if worker.slot is not None:
            _remove_slot(worker.slot)

    async def reap_idle(self) -> int:
        """Stop workers with no attempt in flight for longer than the idle timeout."""
        now = time.monotonic()
        stopped = 0
        for worker in list(self._workers.values()):
            if not worker.alive:
                self._workers.pop(worker.key, None)
            elif worker.active == 0 and now - worker.last_used > self.idle_timeout:
                self._workers.pop(worker.key, None)
                await self._stop(worker)
                stopped += 1
        return stopped

    async def _stop(self, worker: Worker) -> None:
        try:
            await self._stop_process(worker)
        finally:
            if worker.slot is not None:
                _remove_slot(worker.slot)

    @staticmethod
    async def _stop_process(worker: Worker) -> None:
        await worker.link.close()
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.terminate()
            try:
                await asyncio.wait_for(worker.process.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()

    async def close(self) -> None:
        """Stop every worker and every spare."""
        self.warm_spares = False
        for task in list(self._spare_tasks):
            task.cancel()
        await asyncio.gather(*self._spare_tasks, return_exceptions=True)
        workers = list(self._workers.values())
        self._workers.clear()
        spares = list(self._spares.values())
        self._spares.clear()
        await asyncio.gather(*(self._stop(w) for w in workers), *(self._drop_spare(s) for s in spares))

    # --- warm spares ------------------------------------------------------------------

    def spares(self) -> int:
        """Warm spares alive now."""
        return sum(1 for s in self._spares.values() if s.process.returncode is None)

    def _take_spare(self, python: str, isolation: str, env: dict[str, str]) -> _Spare | None:
        """The waiting spare for this interpreter and tier, if it can take this environment."""
        spare = self._spares.get((python, isolation))
        if spare is None or spare.process.returncode is not None:
            return None
        late = [name for name, value in env.items() if spare.env.get(name) != value]
        if any(name.startswith(LATE_ENV_UNSAFE_PREFIXES) for name in late):
            return None
        del self._spares[(python, isolation)]
        # The next spare starts a little later: its start would compete for the CPU with the
        # hand-over it replaces.
        asyncio.get_running_loop().call_later(SPARE_RESPAWN_DELAY, self._want_spare, python, isolation)
        return spare

    def _want_spare(self, python: str, isolation: str) -> None:
        """Start a spare for this interpreter and tier in the background, unless one exists."""
        key = (python, isolation)
        if not self.warm_spares or python != sys.executable or key in self._spawning:
            return
        spare = self._spares.get(key)
        if spare is not None and spare.process.returncode is None:
            return
        self._spawning.add(key)
        task = asyncio.get_running_loop().create_task(self._spawn_spare(python, isolation))
        self._spare_tasks.add(task)
        task.add_done_callback(self._spare_tasks.discard)

    async def _spawn_spare(self, python: str, isolation: str) -> None:
        key = (python, isolation)
        try:
            slot = self._slots / uuid.uuid4().hex
            slot.mkdir(parents=True, mode=0o755)
            env = worker_env(slot, sandboxed=isolation == "sandbox")
            argv = [python, "-P", "-m", "tether._worker", "--app-dir", str(slot), "--expect-stdin", "--spare"]
            if isolation == "sandbox":
                if _sandbox.available() is not None:
                    _remove_slot(slot)
                    return
                argv = _sandbox.command(
                    argv,
                    folder=slot,
                    read_only=await asyncio.to_thread(_sandbox.python_paths, python),
                    private=self._data_dir,
                    own=[slot],
                    env=env,
                    switch_user=os.geteuid() == 0,
                )
            else:
                argv += ["--parent-pid", str(os.getpid())]
            log_path = self._logs / f"spare-{slot.name[:12]}.log"
            with open(log_path, "ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=slot,
                    env=env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log_file,
                    start_new_session=True,
                )
            self._spares[key] = _Spare(process, slot, python, isolation, env, log_path)
        except Exception:
            log.exception("could not start a warm spare worker (%s tier); workers start cold", isolation)
        finally:
            self._spawning.discard(key)

    async def _drop_spare(self, spare: _Spare) -> None:
        if spare.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                spare.process.kill()
            await spare.process.wait()
        _remove_slot(spare.slot)
