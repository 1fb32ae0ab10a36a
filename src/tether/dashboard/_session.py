"""The dashboard's session cookie and CSRF tokens.

Signing in with a token starts a session in the store (kept as a hash, tied to the token); the
browser holds ``tether_session=<session id>.<signature>``, HTTP-only and ``SameSite=Strict``.
The signature is an HMAC under a key derived from the server's secret, so a cookie that was not
issued by this server is refused before the store is asked. The API token itself never reaches
the cookie. Each form of a signed-in page carries a CSRF token derived from the session (an HMAC
under another derived key), checked on every POST.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

COOKIE = "tether_session"
LOGIN_COOKIE = "tether_login"
"""Holds the sign-in form's CSRF value (double submit) until the form is posted."""
TTL = 12 * 3600.0
"""Seconds a session lasts."""


def _key(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"tether dashboard " + purpose, hashlib.sha256).digest()


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def cookie_value(secret: bytes, session_id: str) -> str:
    """The signed cookie value for a session."""
    return f"{session_id}.{_mac(_key(secret, b'session'), session_id)}"


def session_id(secret: bytes, value: str) -> str | None:
    """The session id a cookie value carries, or None when its signature is not ours."""
    sid, dot, signature = value.rpartition(".")
    if not dot or not sid:
        return None
    return sid if hmac.compare_digest(signature, _mac(_key(secret, b"session"), sid)) else None


def csrf_token(secret: bytes, session: str) -> str:
    """The CSRF token of a session's forms."""
    return _mac(_key(secret, b"csrf"), session)


def csrf_ok(secret: bytes, session: str, presented: str | None) -> bool:
    """Whether a posted form's CSRF token is the session's."""
    return presented is not None and hmac.compare_digest(presented, csrf_token(secret, session))
