"""Browser sessions: one-time login codes that become an HttpOnly session cookie + CSRF token.

Kept in the runner's memory only: a restarted runner hands out a new login URL, and every
old session is gone with the process. Only hashes of codes and session ids are held.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

from app.clock import format_ts, utc_now
from app.control.tokens import (
    CSRF_PREFIX,
    LOGIN_PREFIX,
    SESSION_PREFIX,
    hash_secret,
    new_secret,
)

LOGIN_CODE_TTL = timedelta(minutes=5)
SESSION_TTL = timedelta(hours=12)
SESSION_COOKIE = "cdp_session"
CSRF_COOKIE = "cdp_csrf"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its CSRF token and when it stops being valid."""

    session_hash: str
    csrf_token: str
    expires_at: str


class SessionStore:
    """Login codes and sessions of one runner process (thread-safe)."""

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}  # hash -> expires_at
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new_login_code(self) -> tuple[str, str]:
        """Return ``(code, expires_at)`` of a fresh one-time login code."""
        code = new_secret(LOGIN_PREFIX)
        expires_at = format_ts(utc_now() + LOGIN_CODE_TTL)
        with self._lock:
            self._codes[hash_secret(code)] = expires_at
        return code, expires_at

    def redeem(self, code: str) -> tuple[str, Session] | None:
        """Trade a valid, unused, unexpired login code for ``(session_id, session)``."""
        now = format_ts(utc_now())
        with self._lock:
            expires_at = self._codes.pop(hash_secret(code), None)
            if expires_at is None or expires_at <= now:
                return None
            session_id = new_secret(SESSION_PREFIX)
            session = Session(
                session_hash=hash_secret(session_id),
                csrf_token=new_secret(CSRF_PREFIX),
                expires_at=format_ts(utc_now() + SESSION_TTL),
            )
            self._sessions[session.session_hash] = session
        return session_id, session

    def lookup(self, session_id: str) -> Session | None:
        """The live session for a cookie value, or None."""
        with self._lock:
            session = self._sessions.get(hash_secret(session_id))
            if session is None:
                return None
            if session.expires_at <= format_ts(utc_now()):
                del self._sessions[session.session_hash]
                return None
            return session
