"""Bundle workers: processes started on demand from stored artifacts, one per deployment.

A worker serves the runtime⇄deployment protocol on a loopback port. The pool starts one the
first time a deployment's run needs it (from the artifact in the store, extracted once into
the data directory), restarts it if it died, and stops it after an idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether import _bundle
from tether.errors import BundleError, WorkerUnavailableError
from tether.server._link import AppendHandler, WorkerLink

log = logging.getLogger("tether.workers")
START_TIMEOUT = 60.0


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

    @property
    def alive(self) -> bool:
        """Whether the process is still running and reachable."""
        return self.process.returncode is None and not self.link.closed


@dataclass
class StartStats:
    """Cold starts of one pool key (bundle digest + app ref) since the server started."""

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


class WorkerPool:
    """Starts, finds and stops bundle workers."""

    def __init__(self, data_dir: Path, *, on_append: AppendHandler, idle_timeout: float = 300.0) -> None:
        """Keep extracted bundles and worker logs under ``data_dir``; commit appends with ``on_append``."""
        self._on_append = on_append
        self._bundles = data_dir / "bundles"
        self._logs = data_dir / "logs"
        self._bundles.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        self.idle_timeout = idle_timeout
        self._workers: dict[str, Worker] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.cold_starts = 0
        """Workers started since the server started (all keys)."""
        self._starts: dict[str, StartStats] = {}

    @staticmethod
    def key(bundle_digest: str, app_ref: str) -> str:
        """The identity of a worker: what it runs."""
        return f"{bundle_digest}:{app_ref}"

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
        """Extract a bundle once into ``bundles/<digest>`` (atomically) and return the folder.

        Raises:
            BundleError: the bytes are not a safe bundle.
        """
        target = self._bundles / bundle_digest
        if target.is_dir():
            return target
        scratch = self._bundles / f".tmp-{uuid.uuid4().hex}"
        try:
            _bundle.extract(data, scratch)
            try:
                scratch.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    async def retire(self, bundle_digest: str) -> None:
        """Stop the workers of a bundle whose artifact is gone, and delete its extracted copy."""
        for worker in [w for w in self._workers.values() if w.key.startswith(f"{bundle_digest}:")]:
            self._workers.pop(worker.key, None)
            await self._stop(worker)
        self.discard(bundle_digest)

    def discard(self, bundle_digest: str) -> None:
        """Remove an extracted bundle folder (after a failed deploy)."""
        shutil.rmtree(self._bundles / bundle_digest, ignore_errors=True)

    async def get(self, bundle_digest: str, app_ref: str, load: object) -> Worker:
        """A live worker for the bundle, started if needed.

        Args:
            bundle_digest: which artifact.
            app_ref: ``module:attribute`` of the app inside it.
            load: an async callable returning the artifact bytes (used when the bundle is not
                extracted locally yet).

        Raises:
            BundleError: the artifact is gone or the app cannot be loaded.
        """
        key = self.key(bundle_digest, app_ref)
        worker = self._workers.get(key)
        if worker is not None and worker.alive:
            worker.last_used = time.monotonic()
            return worker
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            worker = self._workers.get(key)
            if worker is not None and worker.alive:
                return worker
            folder = self._bundles / bundle_digest
            if not folder.is_dir():
                data = await load()  # type: ignore[operator]
                if data is None:
                    raise BundleError(f"the artifact {bundle_digest[:12]} is no longer stored: deploy the app again")
                folder = self.unpack(data, bundle_digest)
            worker = await self._start(key, folder, app_ref)
            self._workers[key] = worker
            return worker

    async def _start(self, key: str, folder: Path, app_ref: str) -> Worker:
        log_path = self._logs / f"worker-{key.split(':')[0][:12]}.log"
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        spawned = time.monotonic()
        with open(log_path, "ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tether._worker",
                "--app-dir",
                str(folder),
                "--app",
                app_ref,
                "--parent-pid",
                str(os.getpid()),
                cwd=folder,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise WorkerUnavailableError(
                f"the worker for {app_ref} did not start within {START_TIMEOUT:.0f}s; the run is retried"
            ) from None
        text = line.decode().strip()
        if text.startswith("TETHER_WORKER_READY "):
            _, port, digest = text.split(" ")
            try:
                link = await WorkerLink.open("127.0.0.1", int(port), self._on_append)
            except OSError as exc:
                process.kill()
                await process.wait()
                raise WorkerUnavailableError(f"cannot connect to the worker for {app_ref}: {exc}") from None
            seconds = time.monotonic() - spawned
            self.cold_starts += 1
            self._starts.setdefault(key, StartStats()).record(seconds)
            log.info("started worker %s for %s on port %s in %.3fs", process.pid, app_ref, port, seconds)
            return Worker(key, process, link, digest)
        await process.wait()
        if text.startswith("TETHER_WORKER_ERROR "):
            raise BundleError(json.loads(text.removeprefix("TETHER_WORKER_ERROR ")))
        tail = log_path.read_text(errors="replace")[-2000:]
        raise WorkerUnavailableError(f"the worker for {app_ref} exited with code {process.returncode}:\n{tail}")

    def forget(self, worker: Worker) -> None:
        """Drop a worker that stopped answering (it is killed if still running)."""
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()

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

    @staticmethod
    async def _stop(worker: Worker) -> None:
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
        """Stop every worker."""
        workers = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(self._stop(w) for w in workers))
