"""Secrets the runner hands out: the control token, delegation tokens, UI login codes, sessions.

Every secret is random (``secrets.token_urlsafe``) with a recognisable prefix, so the
redactor can mask any that slip into text; only SHA-256 hashes are kept in memory or in the
database. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from app.clock import now_ts
from db.connection import raw_connection
from db.eventlog import EventLog

CONTROL_PREFIX = "cdp_"
DELEGATION_PREFIX = "cdpd_"
LOGIN_PREFIX = "cdpl_"
SESSION_PREFIX = "cdps_"
CSRF_PREFIX = "cdpc_"


def new_secret(prefix: str) -> str:
    """A fresh 256-bit secret with ``prefix``."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(candidate: str, expected_hash: str) -> bool:
    """Constant-time check of a candidate secret against a stored hash."""
    return hmac.compare_digest(hash_secret(candidate), expected_hash)


@dataclass(frozen=True)
class DelegationGrant:
    """What a valid delegation token lets its bearer act as."""

    run_id: str
    profile: str


def issue_delegation_token(log: EventLog, run_id: str, *, profile: str) -> str:
    """Create a delegation token for ``run_id``; only its hash is stored. Returns the token."""
    token = new_secret(DELEGATION_PREFIX)
    with log.transaction() as tx:
        tx.execute(
            "INSERT INTO delegation_token (run_id, token_hash, profile, created_at)"
            " VALUES (?, ?, ?, ?)",
            (run_id, hash_secret(token), profile, now_ts()),
        )
    return token


def check_delegation_token(log: EventLog, token: str) -> DelegationGrant | None:
    """The grant of a valid, unrevoked delegation token, or None."""
    if not token.startswith(DELEGATION_PREFIX):
        return None
    row = (
        raw_connection(log.db)
        .execute(
            "SELECT run_id, profile FROM delegation_token WHERE token_hash = ?"
            " AND revoked_at IS NULL",
            (hash_secret(token),),
        )
        .fetchone()
    )
    return DelegationGrant(run_id=row[0], profile=row[1]) if row else None
