"""The dispatcher and scheduler: fire timers, claim ready runs, invoke their pinned deployment.

One loop per server. It fires due timers, claims runs whose ``ready_at`` has come (new runs,
woken runs, retries, runs recovered after a crash), and runs each attempt as a task that
invokes the worker of the run's pinned deployment and records the outcome. It sleeps until the
next timer or until poked (a run was created, signalled, cancelled, or an attempt ended).
Attempts and the entries they append are traced where tracing is on (:mod:`tether.server.tracing`).

Store faults (a full disk, a lock held elsewhere) never leave a run behind: the end of an
attempt is recorded again until the store takes it, an append the store refused ends the
attempt (the next one replays what is durable), and a supervisor pass gives a new attempt to
any run left ``running`` with no attempt in flight here (:meth:`Dispatcher.supervise`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from tether import _bundle, _environment, _json
from tether.core.manifest import diff
from tether.errors import BundleError, FencedError, NotFoundError, SnapshotError, StoreUnavailableError
from tether.protocol import INVOKE_PATH, InvokeRequest, QueryCall, signed_headers
from tether.server._link import LinkClosedError
from tether.server.metrics import Metrics
from tether.server.tracing import ABANDONED, Tracing
from tether.server.workers import WorkerPool, worker_key, worker_spec
from tether.store.base import AppendResult, AttemptStart, Deployment, Run, Store

log = logging.getLogger("tether.dispatcher")
MAX_IDLE_SLEEP = 1.0
RETRY_CAP = 60.0
SUPERVISE_EVERY = 5.0
"""Seconds between supervisor passes (and idle-worker reaping)."""
STALL_GRACE = 5.0
"""A run ``running`` with no attempt in flight is given a new one once it has not changed for this long
(the grace covers a run claimed or created a moment before its attempt is tracked)."""
FINISH_RETRY_CAP = 5.0
"""Longest pause between tries to record an attempt's end while the store refuses writes."""


@functools.lru_cache(maxsize=4096)
def deployment_key(secret: bytes, owner: str) -> bytes:
    """The key a deployment's attempt tokens are signed with, derived from the server's secret
    (which no sandboxed worker can read) and ``owner``, the deployment's :func:`worker_key`.

    Cached: every append checks a token, and the key of a deployment never changes."""
    return hmac.new(secret, f"deployment:{owner}".encode(), hashlib.sha256).digest()


def attempt_token(secret: bytes, owner: str, run_id: str, attempt: int) -> str:
    """The HMAC that authorises one attempt of one run, on one deployment of one tenant
    (``owner``, a :func:`worker_key`), to append to its journal."""
    key = deployment_key(secret, owner)
    return hmac.new(key, f"{run_id}:{attempt}".encode(), hashlib.sha256).hexdigest()[:40]


def check_token(secret: bytes, owner: str, run_id: str, attempt: int, token: str) -> bool:
    """Whether ``token`` is the one issued for this run and attempt on the deployment ``owner``.

    An attempt appends many times with one token: the token issued for it is remembered
    (bounded), so only the first check computes the HMAC."""
    key = (secret, owner, run_id, attempt)
    expected = _issued.get(key)
    if expected is None:
        expected = attempt_token(secret, owner, run_id, attempt)
        if len(_issued) >= MAX_ISSUED:
            _issued.clear()
        _issued[key] = expected
    # compare_digest refuses non-ASCII str; a token from the body may hold anything.
    return token.isascii() and hmac.compare_digest(expected, token)


MAX_ISSUED = 65536
"""How many attempts' tokens :func:`check_token` remembers before it starts afresh."""
_issued: dict[tuple[bytes, str, str, int], str] = {}


def served_elsewhere(pinned: Deployment, served: dict[str, Any], where: str) -> SnapshotError:
    """What ``where`` serves instead of the ``pinned`` deployment, field by field: the
    manifest (component by component), the code (file by file), the environment (package by
    package). ``served`` is ``{"manifest", "digest", "code"?, "environment"?}``."""
    changes = []
    manifest = served.get("manifest")
    if served.get("digest") != pinned.manifest_digest and isinstance(manifest, dict):
        changes += [f"manifest: {c.component}: {c.detail}" for c in diff(pinned.manifest, manifest)]
        if not changes:
            changes.append(f"manifest: {pinned.manifest_digest[:12]} → {str(served.get('digest'))[:12]}")
    code = served.get("code")
    if pinned.code is not None and isinstance(code, dict):
        changes += [f"code: {line}" for line in _bundle.code_changes(pinned.code, code)]
    environment = served.get("environment")
    if pinned.environment is not None and isinstance(environment, dict):
        changes += [
            f"environment: {line}" for line in _environment.changes(pinned.environment["fingerprint"], environment)
        ]
    summary = _environment.summary(changes) if changes else "it serves another snapshot"
    return SnapshotError(
        "EndpointChanged" if pinned.kind == "endpoint" else "ManifestMismatch",
        f"{where} no longer serves {pinned.label} ({summary}). Nothing ran. Serve {pinned.label}'s code there "
        "again, or register the new code as a deployment and move the run to it after a dry run "
        "('tether runs move RUN --to VERSION')",
        changes,
    )


def retry_delay(attempt: int) -> float:
    """Backoff before the next attempt after an infrastructure failure."""
    return float(min(RETRY_CAP, 0.25 * 2 ** max(0, attempt - 1)))


class Dispatcher:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        pool: WorkerPool,
        *,
        secret: bytes,
        runtime_url: str,
        max_in_flight: int = 256,
        on_change: Callable[[str, Run | None], None] | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """Wire the dispatcher to the store and the worker pool."""
        self._store = store
        self._pool = pool
        self._secret = secret
        self.runtime_url = runtime_url
        self._max = max_in_flight
        self._reserved = 0
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._on_change = on_change
        self._metrics = metrics
        self._tracing = tracing if tracing is not None else Tracing()
        self._step_timers: dict[str, Any] = {}
        self._poked = asyncio.Event()
        self._attempts: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5.0), limits=httpx.Limits(max_connections=None)
        )
        self.attempts_started = 0
        self.timers_fired = 0
        self.stalled_redispatched = 0

    def poke(self) -> None:
        """Something may be ready: look now."""
        self._poked.set()

    def start(self) -> None:
        """Start the loop (after recovery)."""
        self._loop_task = asyncio.create_task(self._loop(), name="tether-dispatcher")

    async def close(self) -> None:
        """Stop the loop and abandon attempts in flight (they are recovered on restart)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._attempts):
            task.cancel()
        await asyncio.gather(*self._attempts, return_exceptions=True)
        await self._http.aclose()

    async def _loop(self) -> None:
        last_reap = time.monotonic()
        while True:
            try:
                wake = await self._tick()
            except StoreUnavailableError as exc:
                log.warning("dispatcher waits for the store: %s", exc.message)
                wake = time.time() + 1.0
            except Exception:
                log.exception("dispatcher tick failed; retrying")
                wake = time.time() + 0.5
            if time.monotonic() - last_reap > SUPERVISE_EVERY:
                last_reap = time.monotonic()
                await self._pool.reap_idle()
                try:
                    await self.supervise()
                except StoreUnavailableError as exc:
                    log.warning("supervisor waits for the store: %s", exc.message)
                except Exception:
                    log.exception("supervisor pass failed; trying again later")
            timeout = MAX_IDLE_SLEEP if wake is None else max(0.0, min(MAX_IDLE_SLEEP, wake - time.time()))
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poked.wait(), timeout)
            self._poked.clear()

    @property
    def free(self) -> int:
        """Attempts that may still start now."""
        return self._max - len(self._attempts) - self._reserved

    async def _tick(self) -> float | None:
        """Fire due timers and claim ready runs; return when to look again (None: when poked)."""
        ready_at, timer_at = await self._store.next_due()
        now = time.time()
        if timer_at is not None and timer_at <= now:
            self.timers_fired += await self._store.fire_timers(now)
            return now
        if ready_at is not None and ready_at <= now:
            if self.free <= 0:
                return timer_at
            for start in await self._store.claim_ready(now, self.free):
                self._launch(start)
            return now
        times = [t for t in (ready_at, timer_at) if t is not None]
        return min(times) if times else None

    async def supervise(self) -> int:
        """Give a new attempt to every run ``running`` with no attempt in flight here; how many.

        Such a run has nobody working on it and nothing would ever wake it (an attempt whose end
        could not be recorded, a task that died): left alone it would stay ``running`` until the
        server restarts. The new attempt replays what is durable and goes on.
        """
        stalled = await self._store.stalled_attempts(time.time() - STALL_GRACE)
        count = 0
        for run_id, attempt in stalled:
            if self._in_flight.get(run_id) == attempt:
                continue
            if await self._store.redispatch_stalled(run_id, attempt):
                log.warning(
                    "run %s was running attempt %s with no attempt in flight: dispatching it again", run_id, attempt
                )
                count += 1
        if count:
            self.stalled_redispatched += count
            self.poke()
        return count

    def _launch(self, start: AttemptStart) -> None:
        self._track(start.run, self._attempt(start))

    def _track(self, run: Run, attempt: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(attempt)
        self._attempts.add(task)
        self._in_flight[run.id] = run.attempt

        def done(task: asyncio.Task[None]) -> None:
            self._attempts.discard(task)
            if self._in_flight.get(run.id) == run.attempt:
                del self._in_flight[run.id]
            if not task.cancelled() and (exc := task.exception()) is not None:
                # Retrieved here, never lost: the supervisor gives the run a new attempt.
                log.error("attempt %s of run %s ended abruptly", run.attempt, run.id, exc_info=exc)

        task.add_done_callback(done)
        self.attempts_started += 1

    def reserve(self) -> bool:
        """Hold a slot for a run about to be created already running (see :meth:`launch_new`)."""
        if self.free <= 0:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """Give back a slot held by :meth:`reserve` that was not used."""
        self._reserved -= 1

    def launch_new(self, run: Run) -> None:
        """Dispatch the first attempt of a run created running, in the slot :meth:`reserve` held."""
        self._reserved -= 1
        self._track(run, self._first_attempt(run))

    async def _first_attempt(self, run: Run) -> None:
        key = (run.tenant_id, run.deployment_id)
        deployment = self._deployments.get(key)
        if deployment is None:
            # Deployments are immutable: what an attempt needs of one never changes.
            try:
                deployment = await self._store.deployment_by_id(*key)
            except NotFoundError:
                after = await self._store.stuck_without_deployment(run.id, run.attempt, run.deployment_id)
                if self._on_change is not None:
                    self._on_change(run.id, after)
                return
            self._deployments[key] = deployment
        await self._attempt(AttemptStart(run, deployment, []))

    async def _attempt(self, start: AttemptStart) -> None:
        run = start.run
        self._tracing.start_attempt(start)
        try:
            outcome = await self._invoke(start)
        except Exception as exc:
            log.exception("attempt %s of run %s failed to invoke", run.attempt, run.id)
            outcome = {
                "outcome": "retry",
                "delay": retry_delay(run.attempt),
                "error": {"type": type(exc).__name__, "message": str(exc)},
            }
        except BaseException:
            # Cancelled by close(): the run is recovered on restart, by a new attempt.
            self._tracing.end_attempt(run, ABANDONED)
            raise
        if outcome.get("outcome") == "fenced":
            # The attempt could not go on (refused or failed append). If it is still the run's
            # current attempt, a new one replays what is durable; a stale one is ignored.
            outcome = {"outcome": "retry", "delay": retry_delay(run.attempt), "error": outcome.get("error")}
        self._tracing.end_attempt(run, outcome)
        if self._metrics is not None:
            self._metrics.attempts.labels(outcome=str(outcome.get("outcome"))).inc()
        after: Run | None = None
        try:
            after = await self._finish(run, outcome)
        finally:
            self.poke()
            if self._on_change is not None:
                self._on_change(run.id, after)

    async def _finish(self, run: Run, outcome: dict[str, Any]) -> Run | None:
        """Record how an attempt ended, trying again while the store refuses writes (a run whose
        end is not recorded would stay ``running`` with nobody working on it).

        An outcome the store cannot record for another reason is recorded as a retry instead;
        if even that fails, the supervisor gives the run a new attempt later.
        """
        pause = 0.1
        failures = 0
        while True:
            try:
                return await self._store.finish_attempt(run.id, run.attempt, outcome)
            except StoreUnavailableError as exc:
                if pause == 0.1:
                    log.warning("the end of attempt %s of run %s waits for the store: %s", run.attempt, run.id, exc)
            except Exception as exc:
                failures += 1
                log.exception("recording the end of attempt %s of run %s failed", run.attempt, run.id)
                if failures >= 3:
                    raise
                error = {"type": type(exc).__name__, "message": f"the attempt's end could not be recorded: {exc}"}
                outcome = {"outcome": "retry", "delay": retry_delay(run.attempt), "error": error}
            await asyncio.sleep(pause)
            pause = min(FINISH_RETRY_CAP, pause * 2)

    async def append_batch(self, items: list[dict[str, Any]], *, owner: str | None = None) -> list[dict[str, Any]]:
        """Commit appends of many attempts at once (from a link or the HTTP endpoint).

        Each item is ``{run_id, attempt, token, entries}``; each answer is
        ``{"completions": [...]}`` or ``{"error": {"code", "message"}}``. Tokens are checked
        against ``owner``'s key — the deployment (:func:`worker_key`) whose worker link the batch came over,
        so a worker can append only to its own deployment's runs, whatever tokens it holds —
        or, for a registered endpoint's HTTP append, against the key of the deployment each
        run is pinned to now.
        """
        if self._metrics is not None:
            self._observe(items)
        results: list[dict[str, Any] | None] = [None] * len(items)
        accepted: list[tuple[str, int, list[Any]]] = []
        where: list[int] = []
        pinned = {} if owner is not None else await self._store.pinned_deployments([i["run_id"] for i in items])
        for position, item in enumerate(items):
            run_id, attempt = item["run_id"], item["attempt"]
            found = pinned.get(run_id)
            signer = owner if owner is not None else worker_key(*found) if found else ""
            if not check_token(self._secret, signer, run_id, attempt, item["token"]):
                results[position] = {
                    "error": {"code": "fenced", "message": f"the token is not valid for attempt {attempt} of {run_id}"}
                }
                continue
            accepted.append((run_id, attempt, item["entries"]))
            where.append(position)
        if accepted:
            made_ready = False
            outcomes: list[AppendResult | FencedError | StoreUnavailableError]
            try:
                committed = await self._store.append_many(accepted)
            except StoreUnavailableError as exc:
                # Each attempt ends (its worker sees an error, not an ack) and is retried.
                outcomes = [exc] * len(accepted)
            else:
                self._tracing.appended(accepted, committed)
                outcomes = list(committed)
            for position, outcome in zip(where, outcomes, strict=True):
                if isinstance(outcome, FencedError | StoreUnavailableError):
                    results[position] = {"error": {"code": outcome.code, "message": outcome.message}}
                else:
                    results[position] = {"completions": outcome.completions}
                    made_ready = made_ready or outcome.runs_made_ready > 0
            if made_ready:
                self.poke()
        return [r for r in results if r is not None]

    def _observe(self, items: list[dict[str, Any]]) -> None:
        assert self._metrics is not None
        count = 0
        for item in items:
            for entry in item["entries"]:
                count += 1
                duration = entry.get("duration")
                if isinstance(duration, int | float):
                    kind = entry["kind"]
                    timer = self._step_timers.get(kind)
                    if timer is None:
                        timer = self._step_timers[kind] = self._metrics.steps.labels(kind=kind)
                    timer.observe(duration)
                tries = entry.get("tries")
                if isinstance(tries, int) and tries > 1:
                    self._metrics.step_retries.labels(kind=entry["kind"]).inc(tries - 1)
        self._metrics.append_entries.observe(count)

    async def _invoke(self, start: AttemptStart) -> dict[str, Any]:
        owner = worker_key(start.run.tenant_id, start.deployment.id)
        token = attempt_token(self._secret, owner, start.run.id, start.run.attempt)
        return await self.send(start, token=token)

    async def dry_run(self, start: AttemptStart) -> dict[str, Any]:
        """Replay a run's journal on ``start.deployment`` without executing or appending anything.

        Returns:
            The attempt's answer: ``compatible`` (with how far it replayed) or ``mismatch``,
            or ``stuck`` when the deployment cannot be invoked.
        """
        return await self.send(start, token="", dry_run=True)

    async def query(self, start: AttemptStart, name: str, input: dict[str, Any]) -> dict[str, Any]:
        """Ask ``start.deployment`` to answer query ``name`` of ``start.run`` from its journal.

        Sent like a dry run (no attempt token), so the deployment can append nothing.

        Returns:
            The answer: ``answered`` with the output, ``failed`` with why, or ``stuck`` when the
            deployment cannot be invoked.
        """
        return await self.send(start, token="", dry_run=True, query={"name": name, "input": input})

    async def send(
        self, start: AttemptStart, *, token: str, dry_run: bool = False, query: QueryCall | None = None
    ) -> dict[str, Any]:
        """Invoke ``start.deployment`` with ``start.run`` and its journal; the answer's outcome."""
        run, deployment = start.run, start.deployment
        request: InvokeRequest = {
            "run_id": run.id,
            "attempt": run.attempt,
            "token": token,
            "deployment_id": deployment.id,
            "deployment_label": deployment.label,
            "manifest_digest": deployment.manifest_digest,
            "component": run.workflow,
            "input": run.input,
            "journal": start.wire_journal(),
            "runtime_url": self.runtime_url,
        }
        if dry_run:
            request["dry_run"] = True
        if query is not None:
            request["query"] = query
        if deployment.kind == "endpoint":
            assert deployment.url is not None
            request["journal"] = [e.to_json() for e in start.journal]
            if deployment.code is not None and deployment.environment is not None:
                request["code_digest"] = deployment.code_digest or ""
                request["environment_digest"] = _environment.digest(deployment.environment["fingerprint"])
            return await self._invoke_http(deployment, request)
        assert deployment.bundle_digest is not None
        digest = deployment.bundle_digest
        try:
            worker = await self._pool.get(worker_spec(deployment), lambda: self._store.get_artifact(digest))
        except SnapshotError as exc:
            return {"outcome": "stuck", "error": exc.to_reason()}
        except BundleError as exc:
            return {"outcome": "stuck", "error": {"type": "DeploymentUnavailable", "message": exc.message}}
        worker.active += 1
        try:
            try:
                answer = await worker.link.invoke(request)
            except TypeError:
                # Integers beyond 64 bits elsewhere in the request: the exact encoder cannot
                # embed stored JSON verbatim, so send the journal parsed.
                request["journal"] = [e.to_json() for e in start.journal]
                answer = await worker.link.invoke(request)
        except LinkClosedError:
            self._pool.forget(worker)
            raise
        finally:
            worker.active -= 1
            worker.last_used = time.monotonic()
        if "refused" in answer:
            served = await worker.link.manifest()
            return {"outcome": "stuck", "error": served_elsewhere(deployment, served, "its worker").to_reason()}
        response: dict[str, Any] = answer["response"]
        return response

    async def _invoke_http(self, deployment: Deployment, request: InvokeRequest) -> dict[str, Any]:
        assert deployment.url is not None
        url, secret = deployment.url, deployment.secret or ""
        body = _json.dumps(request)
        response = await self._http.post(
            url.rstrip("/") + INVOKE_PATH,
            content=body,
            headers={"content-type": "application/json", **signed_headers(secret, body, now=time.time())},
        )
        if response.status_code == 409:
            # Code swapped under the URL: stop loudly, saying what changed.
            served = response.json().get("serves")
            if isinstance(served, dict):
                return {
                    "outcome": "stuck",
                    "error": served_elsewhere(deployment, served, f"the endpoint at {url}").to_reason(),
                }
            message = response.json()["error"]["message"]
            return {"outcome": "stuck", "error": {"type": "EndpointChanged", "message": message}}
        if response.status_code == 401:
            # A secret that no longer matches: stop loudly.
            return {
                "outcome": "stuck",
                "error": {"type": "EndpointRefused", "message": response.json()["error"]["message"]},
            }
        response.raise_for_status()
        outcome: dict[str, Any] = _json.loads(response.content)
        return outcome
