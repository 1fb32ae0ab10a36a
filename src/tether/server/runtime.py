"""The runtime's service functions: what the HTTP API (and later the dashboard) call.

Each function takes plain, already-parsed arguments and returns store records; HTTP concerns
stay in ``server/api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema

from tether import _bundle, _environment, _json
from tether.core.manifest import Change, deployment_id, diff, manifest_digest
from tether.core.routing import Target
from tether.core.status import TERMINAL, RunStatus
from tether.errors import (
    BadRequestError,
    BundleError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    SchemaError,
    WorkerUnavailableError,
)
from tether.protocol import MANIFEST_PATH, signed_headers
from tether.server import _sandbox
from tether.server._envs import BuildLog, Progress, lock_source
from tether.server.dispatcher import Dispatcher
from tether.server.workers import WorkerPool, WorkerSpec, worker_key
from tether.store.base import Deployment, Environment, Run, Store

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
"""Environment names (matched whole: ``$`` would let a trailing newline through)."""
MAX_BUNDLE_BYTES = 50 * 1024 * 1024


def check_name(kind: str, name: str) -> str:
    """Validate an environment or similar name.

    Raises:
        BadRequestError: with the rule it breaks.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise BadRequestError(f"{kind} name {name!r} must be 1-63 letters, digits, '.', '_' or '-'")
    return name


@functools.lru_cache(maxsize=1024)
def _validator(schema_text: bytes) -> jsonschema.Draft202012Validator:
    """One validator per distinct schema: building one costs more than most validations."""
    return jsonschema.Draft202012Validator(_json.loads(schema_text))


def _schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Up to five ``field: message`` violations of ``schema`` by ``value`` (none: it fits)."""
    validator = _validator(_json.dumps(schema))
    if validator.is_valid(value):
        return []
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.absolute_path)
        parts.append(f"{where}: {error.message}" if where else error.message)
    return parts


def _validate(schema: dict[str, Any], value: Any, what: str) -> None:
    errors = _schema_errors(schema, value)
    if errors:
        raise SchemaError(f"{what}: " + "; ".join(errors))


BUFFERED_SIGNAL_REJECTED = "BufferedSignalRejected"
"""The error type of a dry-run verdict whose journal replays but whose buffered signals do not fit."""


def buffered_signal_problems(run: Run, target: Deployment, buffered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's buffered signals that ``target`` would refuse, each ``{"id", "signal", "message"}``.

    A buffered signal (delivered, not yet taken by a ``ctx.signal`` wait) was validated
    against the schemas of the deployment the run was pinned to when it arrived. Moved to
    ``target``, the run's code there will take it: the target must declare the signal, and
    the payload must fit the schema it declares.
    """
    component = target.manifest.get("components", {}).get(run.workflow) or {}
    declared: dict[str, Any] = component.get("signals") or {}
    problems = []
    for signal in buffered:
        name, payload = signal["name"], signal["payload"]
        where = f"buffered signal {name} (#{signal['id']})"
        if name not in declared:
            message = (
                f"{where}: workflow {run.workflow} on {target.label} declares no signal {name!r} "
                f"(it declares: {', '.join(sorted(declared)) or 'none'})"
            )
        else:
            errors = _schema_errors(declared[name], payload)
            if not errors:
                continue
            message = f"{where} does not fit its schema on {target.label}: " + "; ".join(errors)
        problems.append({"id": signal["id"], "signal": name, "message": message})
    return problems


def _refusal(run_id: str, target: Deployment, check: dict[str, Any]) -> str:
    """Why a move of ``run_id`` to ``target`` is refused, from its dry-run verdict, and what to do."""
    signals = [p["message"] for p in check.get("signals", [])]
    problem = check.get("mismatch") or check.get("error") or {}
    if problem.get("type") == BUFFERED_SIGNAL_REJECTED:
        return (
            f"run {run_id} cannot move to {target.label}: {'; '.join(signals)}. Deploy code that declares "
            "and accepts these signals, or move it anyway with --force --reason TEXT (the run then stops "
            "stuck when its code takes such a signal)"
        )
    detail = "; ".join([str(problem.get("message", "")), *signals])
    return (
        f"run {run_id} does not replay on {target.label}: {detail}. "
        "Deploy code that replays it, or move it anyway with --force --reason TEXT"
    )


def _checked_manifest(body: Any, source: str, error: type[BadRequestError]) -> tuple[dict[str, Any], str]:
    """The manifest a deployment reported and its digest, recomputed here and checked."""
    manifest: dict[str, Any] = body["manifest"]
    digest = manifest_digest(manifest)
    if digest != body.get("digest"):
        raise error(f"{source} reported a manifest whose digest does not match its content")
    return manifest, digest


def snapshot_changes(old: Deployment, new: Deployment) -> list[Change]:
    """What differs beyond the manifest: the app reference, the code file by file (or the
    bundle, for deployments recorded before files were), and the environment package by package."""
    changes = []
    if old.app_ref != new.app_ref:
        changes.append(Change("*", "app changed", f"{old.app_ref} → {new.app_ref}"))
    if old.code is not None and new.code is not None:
        changes += [Change("*", "code changed", line) for line in _bundle.code_changes(old.code, new.code)]
    elif old.bundle_digest != new.bundle_digest:
        changes.append(
            Change("*", "code changed", f"bundle {str(old.bundle_digest)[:12]} → {str(new.bundle_digest)[:12]}")
        )
    if old.environment is not None and new.environment is not None:
        before, after = old.environment["fingerprint"], new.environment["fingerprint"]
        changes += [Change("*", "environment changed", line) for line in _environment.changes(before, after)]
    return changes


class Watch:
    """What a result waiter sees: an event, and the run as the change left it (if known)."""

    __slots__ = ("event", "run")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.run: Run | None = None


class Notifier:
    """Wakes whoever waits for a run's result when the run changes."""

    def __init__(self) -> None:
        self._watches: dict[str, set[Watch]] = {}

    def notify(self, run_id: str, run: Run | None = None) -> None:
        """The run changed (to ``run``, when the caller has it): wake every waiter."""
        for watch in self._watches.get(run_id, ()):
            watch.run = run
            watch.event.set()

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[Watch]:
        """Changes of the run from now on.

        Register before reading the run: a change between the read and the wait would
        otherwise go unnoticed until the next poll.
        """
        watch = Watch()
        watches = self._watches.setdefault(run_id, set())
        watches.add(watch)
        try:
            yield watch
        finally:
            watches.discard(watch)
            if not watches:
                self._watches.pop(run_id, None)


class Runtime:
    """The runtime's operations over one store, worker pool and dispatcher."""

    def __init__(self, store: Store, pool: WorkerPool, dispatcher: Dispatcher, notifier: Notifier) -> None:
        """Assemble the runtime."""
        self.store = store
        self.pool = pool
        self.dispatcher = dispatcher
        self.notifier = notifier

    # --- deployments ------------------------------------------------------------------

    async def deploy(
        self,
        tenant_id: str,
        data: bytes,
        *,
        app_ref: str | None,
        env: str | None,
        actor: str,
        progress: Progress | None = None,
        isolation: str | None = None,
    ) -> tuple[Deployment, bool]:
        """Store a bundle, build its environment, read its manifest from a worker, record the
        deployment, route ``env``.

        ``isolation`` is the tier its workers run at (``process`` or ``sandbox``; default:
        ``sandbox`` where bubblewrap works), part of the deployment's identity.

        The deployment records everything a later load must prove: the code file by file, the
        app reference, the manifest, and the environment (its own, built with uv from the
        bundle's ``requirements.txt`` or ``uv.lock``; else the server's, fingerprinted). The
        id derives from all of them. ``progress`` receives the environment build's log lines.

        Raises:
            PayloadTooLargeError: the bundle is over the bound.
            RequirementsError: the bundle's dependencies cannot be resolved or installed.
            BundleError: the bundle cannot be read or its app cannot be loaded.
        """
        if len(data) > MAX_BUNDLE_BYTES:
            raise PayloadTooLargeError(f"the bundle is {len(data)} bytes; the limit is {MAX_BUNDLE_BYTES}")
        if not data:
            raise BundleError("the request has no bundle: send the app as a .tar.gz body ('tether deploy PATH')")
        if env is not None:
            check_name("environment", env)
        tier = isolation or _sandbox.default_tier()
        if tier not in _sandbox.TIERS:
            raise BadRequestError(
                f"isolation {tier!r} is not a tier: use process (trusted code) or sandbox (a bubblewrap jail "
                "as an unprivileged user: no store, no secrets, no other deployment)"
            )
        if tier == "sandbox" and (why := _sandbox.available()) is not None:
            raise BadRequestError(f"cannot deploy with --isolation sandbox: {why}")
        digest = _bundle.digest(data)
        files = _bundle.file_digests(data)
        folder = self.pool.folder(digest)
        if folder.is_dir() and _bundle.verify_tree(folder, files):
            self.pool.quarantine(digest)
        existed = folder.is_dir()
        folder = self.pool.unpack(data, digest)
        log = BuildLog(progress)
        built: str | None = None
        spec = None
        try:
            ref = _bundle.check_ref(app_ref) if app_ref else _bundle.app_ref(folder)
            if ref is None:
                raise BundleError(
                    'the bundle names no app: add tether.toml with app = "module:attribute", or pass --app'
                )
            _bundle.check_env(folder)
            source = lock_source(folder)
            lock = None
            if source is not None:
                lock = await self.pool.envs.resolve(folder, source, log)
                _, fresh = await self.pool.envs.ensure(lock, log)
                built = lock.digest if fresh else None

            async def load() -> bytes:
                return data

            spec = WorkerSpec(
                key=f"deploy-{uuid.uuid4().hex}", label="the new deployment", bundle_digest=digest, app_ref=ref,
                files=files, lock=lock, isolation=tier,
            )  # fmt: skip
            try:
                worker = await self.pool.get(spec, load)
            except WorkerUnavailableError as exc:
                # At deploy time the bundle is the only suspect: retrying the same bytes cannot help.
                raise BundleError(f"the app could not be loaded: {exc.message}") from None
            body = await worker.link.manifest()
            manifest, digest_of_manifest = _checked_manifest(body, "the worker", BundleError)
            fingerprint = body.get("environment")
            if not isinstance(fingerprint, dict):
                raise BundleError("the worker reported no environment fingerprint")
            environment = {
                "mode": "locked" if lock else "fingerprint",
                "fingerprint": fingerprint,
                "lock": lock.to_json() if lock else None,
                "isolation": tier,
            }
            identity = (digest, ref, digest_of_manifest, _environment.digest(fingerprint), tier)
            deployment, created = await self.store.create_deployment(
                tenant_id,
                deployment_id=deployment_id(*identity),
                kind="bundle",
                manifest=manifest,
                manifest_digest=digest_of_manifest,
                actor=actor,
                app_ref=ref,
                bundle=data,
                bundle_digest=digest,
                env=env,
                code=files,
                environment=environment,
                venv=lock.digest if lock else None,
                build_log=log.text() or None,
            )
        except BaseException:
            if spec is not None:
                await self.pool.retire(spec.key, None if existed else digest)
            elif not existed:
                self.pool.discard(digest)
            if built is not None and not await self.store.venv_in_use(built):
                self.pool.envs.remove(built)
            raise
        await self.pool.adopt(worker, worker_key(tenant_id, deployment.id))
        return deployment, created

    async def register(
        self, tenant_id: str, url: str, *, secret: str, env: str | None, actor: str
    ) -> tuple[Deployment, bool]:
        """Record a user-hosted endpoint as an immutable deployment: the manifest, code digest
        and environment it reports now, all checked again at every invoke.

        Raises:
            BadRequestError: the URL or secret is unusable, or the endpoint cannot be read.
        """
        if not url.startswith(("http://", "https://")):
            raise BadRequestError(f"{url!r} is not an http(s) URL of a tether endpoint ('tether serve')")
        if not secret:
            raise BadRequestError("registering an endpoint needs the secret it was started with (--secret)")
        if env is not None:
            check_name("environment", env)
        url = url.rstrip("/")
        try:
            async with httpx.AsyncClient(timeout=30.0) as client:
                response = await client.get(
                    url + MANIFEST_PATH, headers=signed_headers(secret, MANIFEST_PATH.encode(), now=time.time())
                )
        except httpx.TransportError as exc:
            raise BadRequestError(f"cannot reach the endpoint at {url}: {exc}") from None
        if response.status_code != 200:
            raise BadRequestError(f"the endpoint at {url} answered {response.status_code}: {response.text[:300]}")
        body = _json.loads(response.content)
        manifest, digest_of_manifest = _checked_manifest(body, "the endpoint", BadRequestError)
        code, fingerprint = body.get("code"), body.get("environment")
        if not isinstance(code, dict) or not isinstance(fingerprint, dict):
            raise BadRequestError(
                f"the endpoint at {url} reports no code digest or environment: serve it with this tether's "
                "'tether serve'"
            )
        return await self.store.create_deployment(
            tenant_id,
            deployment_id=deployment_id(
                f"url:{url}", _bundle.code_digest(code), digest_of_manifest, _environment.digest(fingerprint)
            ),
            kind="endpoint",
            manifest=manifest,
            manifest_digest=digest_of_manifest,
            actor=actor,
            url=url,
            secret=secret,
            env=env,
            code=code,
            environment={"mode": "fingerprint", "fingerprint": fingerprint, "lock": None},
        )

    async def deployments(
        self, tenant_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The deployments (oldest first; after sequence number ``after``, at most ``limit``) with
        their lifecycle status, live workers and cold starts."""
        items = await self.store.list_deployments(tenant_id, after=after, limit=limit)
        for item in items:
            item.update(self.pool.stats(worker_key(tenant_id, str(item["id"]))))
        return items

    async def deployment(self, tenant_id: str, ref: str) -> dict[str, Any]:
        """One deployment, with its manifest, live workers and cold starts."""
        item = await self.store.describe_deployment(tenant_id, ref)
        item.update(self.pool.stats(worker_key(tenant_id, str(item["id"]))))
        return item

    async def diff(self, tenant_id: str, a: str, b: str) -> dict[str, Any]:
        """What changed from deployment ``a`` to ``b``, and the runs on ``a`` it would affect."""
        old = await self.store.get_deployment(tenant_id, a)
        new = await self.store.get_deployment(tenant_id, b)
        changes = snapshot_changes(old, new) + diff(old.manifest, new.manifest)
        changed = {c.component for c in changes}
        code_changed = any(c.component == "*" for c in changes)
        affected = []
        for run in await self.store.list_runs(tenant_id, deployment_id=old.id, limit=10_000):
            if run.status in TERMINAL:
                continue
            called = {e.name for e in await self.store.journal(tenant_id, run.id) if e.kind in ("step", "child", "llm")}
            reasons = sorted(({run.workflow} | called) & changed)
            if reasons or code_changed:
                affected.append({"run_id": run.id, "workflow": run.workflow, "changed": reasons or ["code"]})
        return {
            "from": old.to_json(),
            "to": new.to_json(),
            "changes": [c.to_json() for c in changes],
            "runs_affected_if_unpinned": affected,
        }

    async def remove(self, tenant_id: str, ref: str, actor: str) -> Deployment:
        """Remove a drained deployment: its worker stops and its extracted bundle goes too."""
        removed = await self.store.remove_deployment(tenant_id, ref, actor)
        digest = removed.bundle_digest
        gone = digest is not None and await self.store.get_artifact(digest) is None
        await self.pool.retire(worker_key(tenant_id, removed.id), digest if gone else None)
        lock = (removed.environment or {}).get("lock")
        if lock and not await self.store.venv_in_use(lock["digest"]):
            self.pool.envs.remove(lock["digest"])
        return removed

    # --- environments -----------------------------------------------------------------

    async def set_env(
        self, tenant_id: str, name: str, targets: list[tuple[str, int]], *, actor: str, reason: str | None
    ) -> Environment:
        """Point an environment at deployments given by id or label (weights for a split)."""
        check_name("environment", name)
        if not targets:
            raise BadRequestError("an environment needs at least one deployment")
        resolved = []
        for ref, weight in targets:
            if weight <= 0:
                raise BadRequestError(f"weight of {ref} must be a positive integer")
            resolved.append(Target((await self.store.get_deployment(tenant_id, ref)).id, weight))
        return await self.store.set_env(tenant_id, name, resolved, actor=actor, reason=reason)

    async def promote_env(
        self, tenant_id: str, name: str, source: str, *, actor: str, reason: str | None
    ) -> Environment:
        """Point ``name`` where environment ``source`` points now (e.g. prod from staging)."""
        check_name("environment", name)
        return await self.store.promote_env(tenant_id, name, source, actor=actor, reason=reason)

    # --- runs ---------------------------------------------------------------------------

    async def start_run(
        self,
        tenant_id: str,
        workflow: str,
        input: Any,
        *,
        env: str | None = None,
        deployment: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Run, bool]:
        """Create a run, pinned now, after validating its input against the pinned schema."""
        if not isinstance(input, dict):
            raise BadRequestError("the run input must be a JSON object of the workflow's parameters")

        def validate(dep: Deployment) -> None:
            schema = dep.manifest["components"][workflow]["input_schema"]
            _validate(schema, input, f"input of {workflow} on {dep.label}")

        start_now = self.dispatcher.reserve()
        try:
            run, created = await self.store.create_run(
                tenant_id,
                workflow=workflow,
                input=input,
                env=env,
                deployment_ref=deployment,
                idempotency_key=idempotency_key,
                validate=validate,
                start_attempt=start_now,
            )
        except BaseException:
            if start_now:
                self.dispatcher.release()
            raise
        if start_now and created:
            self.dispatcher.launch_new(run)
        elif start_now:
            self.dispatcher.release()
        elif created:
            self.dispatcher.poke()
        return run, created

    async def result(self, tenant_id: str, run_id: str, wait: float, *, known: Run | None = None) -> Run:
        """The run, waiting up to ``wait`` seconds for it to end.

        ``known`` is the run as the caller just saw it (saves reading it again).
        """
        deadline = time.monotonic() + max(0.0, wait)
        with self.notifier.watch(run_id) as watch:
            run = known if known is not None else await self.store.get_run(tenant_id, run_id)
            while True:
                left = deadline - time.monotonic()
                if run.status in TERMINAL or run.status is RunStatus.STUCK or left <= 0:
                    return run
                # The poll bounds the wait when the change happened elsewhere (another node).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.event.wait(), min(left, 0.5))
                watch.event.clear()
                changed, watch.run = watch.run, None
                run = changed if changed is not None else await self.store.get_run(tenant_id, run_id)

    async def signal(
        self,
        tenant_id: str,
        run_id: str,
        name: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        sent_by: str | None = None,
    ) -> dict[str, Any]:
        """Deliver a signal after validating it against the pinned deployment's schema.

        With ``idempotency_key``, a retry of a delivered signal is answered ``duplicate`` and
        delivers nothing (see :meth:`tether.store.base.Store.signal`).
        """

        def validate(run: Run, dep: Deployment) -> None:
            signals = dep.manifest["components"][run.workflow].get("signals", {})
            if name not in signals:
                raise NotFoundError(
                    f"workflow {run.workflow} on {dep.label} declares no signal {name!r}; it declares: "
                    + (", ".join(sorted(signals)) or "none")
                )
            _validate(signals[name], payload, f"signal {name} of {run.workflow} on {dep.label}")

        answer = await self.store.signal(
            tenant_id, run_id, name, payload, validate=validate, idempotency_key=idempotency_key, sent_by=sent_by
        )
        if not answer["duplicate"]:
            self.dispatcher.poke()
        return answer

    async def cancel(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None) -> Run:
        """Cancel a run (and its children); audited."""
        run = await self.store.cancel_run(tenant_id, run_id, actor=actor, reason=reason)
        self.notifier.notify(run_id, run)
        self.dispatcher.poke()
        return run

    # --- escape hatches ---------------------------------------------------------------------

    async def _changed(self, run: Run) -> Run:
        self.notifier.notify(run.id, run)
        self.dispatcher.poke()
        return run

    async def pause(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None) -> Run:
        """Stop giving the run attempts until it is resumed; audited."""
        return await self._changed(await self.store.pause_run(tenant_id, run_id, actor=actor, reason=reason))

    async def resume(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None) -> Run:
        """Resume a paused run; audited."""
        return await self._changed(await self.store.resume_run(tenant_id, run_id, actor=actor, reason=reason))

    async def kill(self, tenant_id: str, run_id: str, *, actor: str, reason: str | None) -> Run:
        """End a run (and its children) at once; audited."""
        return await self._changed(await self.store.kill_run(tenant_id, run_id, actor=actor, reason=reason))

    async def restart(
        self, tenant_id: str, run_id: str, *, env: str | None, deployment: str | None, actor: str, reason: str | None
    ) -> Run:
        """A new run with the same input, linked to the old one; audited."""
        run = await self.store.start_linked_run(
            tenant_id, run_id, kind="restart", actor=actor, reason=reason, env=env, deployment_ref=deployment
        )
        return await self._changed(run)

    async def fork(
        self, tenant_id: str, run_id: str, *, from_entry: int, deployment: str | None, actor: str, reason: str | None
    ) -> Run:
        """A new run whose journal is the old one's first ``from_entry`` entries; audited."""
        if from_entry < 0:
            raise BadRequestError("from_entry must be 0 or more")
        run = await self.store.start_linked_run(
            tenant_id,
            run_id,
            kind="fork",
            actor=actor,
            reason=reason,
            deployment_ref=deployment or (await self.store.get_run(tenant_id, run_id)).deployment_id,
            from_entry=from_entry,
        )
        return await self._changed(run)

    async def dry_run(self, run: Run, deployment: Deployment) -> dict[str, Any]:
        """Whether ``run`` can go on on ``deployment``: ``{"compatible": bool, ...}``.

        Its journal must replay there, and its buffered signals must be ones the deployment
        declares, with payloads that fit their schemas (``"signals"`` lists those that do not).
        """
        answer = await self.dispatcher.dry_run(await self.store.replay_start(run, deployment))
        outcome = answer.get("outcome")
        verdict: dict[str, Any] = {"run_id": run.id, "workflow": run.workflow, "status": run.status.value}
        if outcome == "compatible":
            verdict.update(compatible=True, replayed=answer.get("replayed"))
        elif outcome == "mismatch":
            verdict.update(compatible=False, mismatch=answer["mismatch"])
        else:
            error = answer.get("error") or {"type": str(outcome), "message": f"the dry run ended {outcome}"}
            verdict.update(compatible=False, error=error)
        buffered = [s for s in await self.store.signals(run.tenant_id, run.id) if s["consumed_by_entry"] is None]
        problems = buffered_signal_problems(run, deployment, buffered)
        if problems:
            verdict["signals"] = problems
            if verdict["compatible"]:
                message = "; ".join(p["message"] for p in problems)
                verdict.update(compatible=False, error={"type": BUFFERED_SIGNAL_REJECTED, "message": message})
        return verdict

    async def check(
        self, tenant_id: str, deployment_ref: str, *, workflow: str | None = None, run_ids: list[str] | None = None
    ) -> dict[str, Any]:
        """Dry-run the journal of every in-flight run (or those asked for) on a deployment."""
        target = await self.store.get_deployment(tenant_id, deployment_ref)
        if run_ids:
            runs = [await self.store.get_run(tenant_id, r) for r in run_ids]
        else:
            runs = [
                r
                for r in await self.store.list_runs(tenant_id, workflow=workflow, limit=10_000)
                if r.status not in TERMINAL
            ]
        runs = [r for r in runs if r.workflow in target.manifest.get("components", {})]
        gate = asyncio.Semaphore(8)

        async def one(run: Run) -> dict[str, Any]:
            async with gate:
                verdict = await self.dry_run(run, target)
                verdict["deployment_id"] = run.deployment_id
                return verdict

        verdicts = await asyncio.gather(*(one(r) for r in runs))
        return {
            "deployment": target.to_json(),
            "runs": verdicts,
            "compatible": sum(1 for v in verdicts if v["compatible"]),
            "incompatible": sum(1 for v in verdicts if not v["compatible"]),
        }

    async def move(self, tenant_id: str, run_id: str, to: str, *, force: bool, actor: str, reason: str | None) -> Run:
        """Re-pin a run to deployment ``to`` once a dry run proves it replays there; audited.

        The dry run covers the journal and the run's buffered signals; the signals are checked
        again in the transaction that moves the run, so one arriving meanwhile is not missed.

        Raises:
            ConflictError: the dry run found a mismatch (its diff is the message) or a buffered
                signal the target would refuse; ``force`` with a ``reason`` overrides it.
        """
        if force and not reason:
            raise BadRequestError("a forced move needs a reason: add --reason TEXT")
        run = await self.store.get_run(tenant_id, run_id)
        target = await self.store.get_deployment(tenant_id, to)
        if run.status in TERMINAL:
            raise ConflictError(f"run {run_id} is {run.status.value}: an ended run cannot move (restart it)")
        check = None
        if not force:
            check = await self.dry_run(run, target)
            if not check["compatible"]:
                raise ConflictError(_refusal(run_id, target, check))

        def fits(moving: Run, dep: Deployment, buffered: list[dict[str, Any]]) -> None:
            problems = buffered_signal_problems(moving, dep, buffered)
            if problems:
                verdict = {"signals": problems, "error": {"type": BUFFERED_SIGNAL_REJECTED}}
                raise ConflictError(_refusal(run_id, dep, verdict))

        moved = await self.store.move_run(
            tenant_id,
            run_id,
            target.id,
            actor=actor,
            reason=reason,
            forced=force,
            check=check,
            validate=None if force else fits,
        )
        return await self._changed(moved)
