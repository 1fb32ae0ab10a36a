"""Who may do what: tenants, API tokens and the dashboard's sessions.

A token is shown once, when it is created: ``tether_<id>_<secret>``. The store keeps its id
(public, how ``tokens list`` and ``tokens revoke`` name it) and the SHA-256 of its secret,
never the secret itself; a presented token is checked with a constant-time comparison of
hashes. The secret is 32 random bytes, so a plain hash is enough (nothing to brute-force).

A dashboard session is a random id kept as a hash too; it belongs to the token it was signed
in with and ends with it (revoking a token ends its sessions).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from tether.errors import BadRequestError, ConflictError, NotFoundError
from tether.store._ops import Ops, _now
from tether.store.backend import Tx
from tether.store.records import Row

TOKEN_PREFIX = "tether_"
DEFAULT_TENANT = "default"
"""The tenant that always exists (and the one every request uses while no token exists)."""
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""Tenant names, matched whole (``$`` would let a trailing newline through)."""
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""Token names, matched whole."""
_TOKEN = re.compile(r"^tether_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# Compared against when a token id is unknown, so that answer takes as long as a wrong secret.
_NO_HASH = hashlib.sha256(b"no such token").hexdigest()


class Scope(enum.StrEnum):
    """What a token may do within its tenant (see docs/security.md)."""

    READ = "read"
    """GET the tenant's deployments, environments, runs and dashboard pages."""
    INGRESS = "ingress"
    """Start runs, signal them, read a run's result, state, journal and signals."""
    ADMIN = "admin"
    """Everything within the tenant: deployments, environments, escape hatches, audit, tokens."""
    OPERATOR = "operator"
    """Admin of its tenant, plus tenants, other tenants' tokens and the whole server's metrics."""

    @classmethod
    def parse(cls, text: str) -> Scope:
        """The scope named ``text``.

        Raises:
            BadRequestError: no such scope.
        """
        try:
            return cls(text)
        except ValueError:
            raise BadRequestError(f"unknown scope {text!r}: use one of {', '.join(s.value for s in cls)}") from None


@dataclass(frozen=True, slots=True)
class Token:
    """An API token as stored: everything but its secret."""

    id: str
    tenant_id: str
    name: str
    scope: Scope
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None

    @classmethod
    def from_row(cls, row: Row) -> Token:
        """Build from a ``tokens`` row."""
        return cls(
            id=row["id"],
            tenant_id=row["tenant_id"],
            name=row["name"],
            scope=Scope(row["scope"]),
            created_at=row["created_at"],
            created_by=row["created_by"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
        )

    @property
    def actor(self) -> str:
        """Who the audit log names for what this token does."""
        return f"token:{self.name}@{self.tenant_id}"

    def refusal(self, now: float) -> str | None:
        """Why the token cannot be used at ``now``, or None when it can."""
        if self.revoked_at is not None:
            return f"token {self.name!r} was revoked: ask an admin of tenant {self.tenant_id!r} for a new one"
        if self.expires_at is not None and self.expires_at <= now:
            return f"token {self.name!r} has expired: ask an admin of tenant {self.tenant_id!r} for a new one"
        return None

    def to_json(self) -> dict[str, Any]:
        """The API form (there is no secret to leave out: the store never had it)."""
        return {
            "id": self.id,
            "tenant": self.tenant_id,
            "name": self.name,
            "scope": self.scope.value,
            "actor": self.actor,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created, with the text its holder sends: the only time it exists."""

    token: Token
    secret: str
    """``tether_<id>_<secret>``, for ``Authorization: Bearer``."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_token(text: str) -> tuple[str, str] | None:
    """A presented token as ``(id, secret)``, or None when it is not shaped like one."""
    match = _TOKEN.match(text.strip())
    return (match.group(1), match.group(2)) if match else None


def check_tenant_name(name: str) -> str:
    """Validate a tenant name.

    Raises:
        BadRequestError: with the rule it breaks.
    """
    if not _NAME.fullmatch(name):
        raise BadRequestError(f"tenant name {name!r} must be 1-63 lowercase letters, digits, '_' or '-'")
    return name


class TenantOps(Ops):
    """Tenants, tokens and dashboard sessions."""

    @staticmethod
    def _tenant_row(tx: Tx, tenant_id: str) -> Row:
        row = tx.one("SELECT * FROM tenants WHERE id = ?", (tenant_id,))
        if row is None:
            raise NotFoundError(f"no tenant {tenant_id!r}: see 'tether tenants list'")
        return row

    async def create_tenant(self, tenant_id: str, *, actor: str) -> dict[str, Any]:
        """Create a tenant.

        Raises:
            BadRequestError: the name is not a valid tenant name.
            ConflictError: the tenant exists.
        """
        check_tenant_name(tenant_id)

        def op(tx: Tx) -> dict[str, Any]:
            if tx.one("SELECT id FROM tenants WHERE id = ?", (tenant_id,)) is not None:
                raise ConflictError(f"tenant {tenant_id!r} exists already")
            now = _now()
            tx.execute("INSERT INTO tenants (id, created_at, created_by) VALUES (?, ?, ?)", (tenant_id, now, actor))
            self._audit(tx, tenant_id, actor, "tenant.create", tenant_id, {})
            return {"id": tenant_id, "created_at": now, "created_by": actor, "tokens": 0}

        return await self.backend.write(op)

    async def list_tenants(self, *, after: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The tenants by id (those after ``after``, at most ``limit``), with how many of their
        tokens are not revoked."""
        sql = (
            "SELECT t.id, t.created_at, t.created_by, "
            "(SELECT COUNT(*) FROM tokens k WHERE k.tenant_id = t.id AND k.revoked_at IS NULL) AS tokens "
            "FROM tenants t WHERE t.id > ? ORDER BY t.id"
        )
        params: tuple[Any, ...] = ("" if after is None else after,)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        rows = await self.backend.read(lambda tx: tx.all(sql, params))
        return [dict(r) for r in rows]

    async def tenant_exists(self, tenant_id: str) -> bool:
        """Whether the tenant exists."""
        row = await self.backend.read(lambda tx: tx.one("SELECT id FROM tenants WHERE id = ?", (tenant_id,)))
        return row is not None

    async def create_token(
        self,
        tenant_id: str,
        *,
        scope: Scope,
        name: str | None,
        expires_at: float | None,
        actor: str,
    ) -> IssuedToken:
        """Create a token; the returned secret is never stored and cannot be shown again.

        Raises:
            BadRequestError: the name is not a valid token name.
            NotFoundError: no such tenant.
            ConflictError: the tenant has a token of that name already.
        """
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        name = name if name is not None else f"{scope.value}-{token_id[:6]}"
        if not _TOKEN_NAME.fullmatch(name):
            raise BadRequestError(f"token name {name!r} must be 1-63 letters, digits, '.', '_' or '-'")

        def op(tx: Tx) -> Token:
            self._tenant_row(tx, tenant_id)
            if tx.one("SELECT id FROM tokens WHERE tenant_id = ? AND name = ?", (tenant_id, name)) is not None:
                raise ConflictError(f"tenant {tenant_id!r} has a token named {name!r} already: choose another --name")
            tx.execute(
                "INSERT INTO tokens (id, tenant_id, name, scope, hash, created_at, created_by, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token_id, tenant_id, name, scope.value, _digest(secret), _now(), actor, expires_at),
            )
            details = {"name": name, "scope": scope.value, "expires_at": expires_at}
            self._audit(tx, tenant_id, actor, "token.create", token_id, details)
            row = tx.one("SELECT * FROM tokens WHERE id = ?", (token_id,))
            assert row is not None
            return Token.from_row(row)

        token = await self.backend.write(op)
        return IssuedToken(token, f"{TOKEN_PREFIX}{token_id}_{secret}")

    async def list_tokens(
        self, tenant_id: str | None, *, after: tuple[float, str] | None = None, limit: int | None = None
    ) -> list[Token]:
        """The tokens of a tenant (every tenant's for None), oldest first, revoked ones included;
        those after ``after`` (``(created_at, id)`` of the last one seen), at most ``limit``."""
        clauses: list[str] = []
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            clauses.append("tenant_id = ?")
            params = (tenant_id,)
        if after is not None:
            clauses.append("(created_at > ? OR (created_at = ? AND id > ?))")
            params = (*params, after[0], after[0], after[1])
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        sql = f"SELECT * FROM tokens {where}ORDER BY created_at, id"
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        rows = await self.backend.read(lambda tx: tx.all(sql, params))
        return [Token.from_row(r) for r in rows]

    async def revoke_token(self, tenant_id: str | None, token_id: str, *, actor: str) -> Token:
        """Revoke a token of the tenant (of any tenant for None) and end its dashboard sessions.

        Raises:
            NotFoundError: no such token in the tenant.
        """

        def op(tx: Tx) -> Token:
            if tenant_id is None:
                row = tx.one("SELECT * FROM tokens WHERE id = ?", (token_id,))
            else:
                row = tx.one("SELECT * FROM tokens WHERE id = ? AND tenant_id = ?", (token_id, tenant_id))
            if row is None:
                raise NotFoundError(f"no token {token_id!r}: see 'tether tokens list'")
            token = Token.from_row(row)
            if token.revoked_at is None:
                tx.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (_now(), token_id))
                tx.execute("DELETE FROM sessions WHERE token_id = ?", (token_id,))
                self._audit(tx, token.tenant_id, actor, "token.revoke", token_id, {"name": token.name})
            found = tx.one("SELECT * FROM tokens WHERE id = ?", (token_id,))
            assert found is not None
            return Token.from_row(found)

        return await self.backend.write(op)

    async def any_tokens(self) -> bool:
        """Whether a token was ever created (revoked ones count: revoking the last token must
        not reopen the server to everyone)."""
        row = await self.backend.read(lambda tx: tx.one("SELECT 1 AS found FROM tokens LIMIT 1"))
        return row is not None

    async def authenticate(self, text: str, now: float) -> tuple[Token | None, str]:
        """The token a presented text is, and why it is refused ('' when it is usable)."""
        parsed = parse_token(text)
        if parsed is None:
            return None, "the bearer token is malformed: tokens look like tether_<12 hex>_<43 characters>"
        token_id, secret = parsed
        row = await self.backend.read(lambda tx: tx.one("SELECT * FROM tokens WHERE id = ?", (token_id,)))
        expected = row["hash"] if row is not None else _NO_HASH
        if not hmac.compare_digest(expected, _digest(secret)) or row is None:
            return None, "unknown token: check it, or ask an admin for a new one ('tether tokens create')"
        token = Token.from_row(row)
        refusal = token.refusal(now)
        return (None, refusal) if refusal else (token, "")

    async def create_session(self, token_id: str, *, ttl: float) -> str:
        """Start a dashboard session for a token; return its id (kept only as a hash)."""
        session_id = secrets.token_urlsafe(32)
        now = _now()

        def op(tx: Tx) -> None:
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            tx.execute(
                "INSERT INTO sessions (id_hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (_digest(session_id), token_id, now, now + ttl),
            )

        await self.backend.write(op)
        return session_id

    async def session_token(self, session_id: str, now: float) -> Token | None:
        """The usable token a live session belongs to, or None."""
        row = await self.backend.read(
            lambda tx: tx.one(
                "SELECT k.* FROM sessions s JOIN tokens k ON k.id = s.token_id "
                "WHERE s.id_hash = ? AND s.expires_at > ?",
                (_digest(session_id), now),
            )
        )
        if row is None:
            return None
        token = Token.from_row(row)
        return token if token.refusal(now) is None else None

    async def end_session(self, session_id: str) -> None:
        """End a dashboard session (signing out)."""
        await self.backend.write(
            lambda tx: tx.execute("DELETE FROM sessions WHERE id_hash = ?", (_digest(session_id),))
        )
