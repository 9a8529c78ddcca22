"""Confirm-to-act: a destructive action waits for a person, then the runner replays it.

A model (through the MCP server) asks for a destructive action; instead of doing it the
runner stores a *confirmation* and answers ``confirmation_required``. A person approves or
denies it in the UI, TUI or CLI; on approval the runner itself executes the stored action.

Integrity: each confirmation is signed. Its nonce is
``HMAC-SHA256(key, canonical([id, run_id, action, digest, expires_at]))`` where ``digest``
is the SHA-256 of the canonical JSON of ``{"action", "params"}``; only ``sha256(nonce)`` is
stored. The nonce itself is never stored, returned, logged or put in an event: approving
recomputes it from the key and the row (digest recomputed from the stored action and
params), so a row changed in the database (another action, other params, another run, a
later expiry) no longer matches, is refused with ``security_violation`` and is denied.

Use: approval is single-use (a conditional ``UPDATE … WHERE status = 'pending'`` that must
change exactly one row) and happens in the same transaction as the ``confirmation_resolved``
event and the action's own events. Confirmations expire after ``confirm.ttl_s``; asking
again for the same action and params while one is pending returns that one; at most
``confirm.max_pending`` may be pending per run. Only a person (``ui``, ``tui``, ``cli``,
``user``) may approve: an approval attempted by any other actor is itself a security
violation, since it would let a model confirm its own request.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast, get_args

import msgspec

from app.clock import format_ts, now_ts, utc_now
from app.control.actions import ControlAction, request_control
from app.control.errors import Conflict, ControlError, Forbidden, LimitReached, NotFound
from app.ids import new_id
from app.redact import redact
from app.wire.events import (
    Actor,
    ConfirmationRequired,
    ConfirmationResolved,
    SecurityViolation,
)
from db.connection import raw_connection
from db.eventlog import EventLog, Tx, UnknownRun
from db.lifecycle import TERMINAL_STATES, RunState

logger = logging.getLogger(__name__)

ConfirmationStatus = Literal["pending", "approved", "denied", "expired"]
STATUSES: tuple[str, ...] = get_args(ConfirmationStatus)

KEY_BYTES = 32
#: Actors that stand for a person; only they may approve.
PERSON_ACTORS: frozenset[Actor] = frozenset({Actor.UI, Actor.TUI, Actor.CLI, Actor.USER})
#: Longest canonical JSON of an action's params.
MAX_PARAMS_CHARS = 16_384
MAX_REASON_CHARS = 2_000
MAX_LIST_LIMIT = 1_000
#: Request id prefix of the control requests approved confirmations make (``confirm:<cid>``).
CONFIRM_REQUEST_PREFIX = "confirm:"

_COLUMNS = (
    "id, run_id, action, params, digest, nonce_hash, status, created_at, expires_at,"
    " resolved_at, resolved_by"
)


class ConfirmationView(msgspec.Struct, frozen=True, kw_only=True):
    """A confirmation as people see it (params redacted; never a nonce)."""

    id: str
    run_id: str
    action: str
    params: dict[str, Any]
    status: ConfirmationStatus
    created_at: str
    expires_at: str
    resolved_at: str | None
    resolved_by: str | None


class ConfirmationRequiredView(msgspec.Struct, frozen=True, kw_only=True):
    """What a model sees instead of the action's result."""

    confirmation_id: str
    action: str
    expires_at: str
    how_to_approve: str


# -- errors ------------------------------------------------------------------------------------


class InvalidConfirmation(ValueError):
    """An unknown action or malformed params; the message says what is accepted."""

    code = "invalid_confirmation"


class ConfirmationNotFound(NotFound):
    """No confirmation has this id."""

    def __init__(self, confirmation_id: str) -> None:
        self.confirmation_id = confirmation_id
        super().__init__(
            f"no confirmation with id {confirmation_id!r} (list them with GET /api/confirmations)",
            code="confirmation_not_found",
        )


class ConfirmationConflict(Conflict):
    """The confirmation (or its run) is not in a state that allows the request."""

    def __init__(
        self, message: str, *, confirmation_id: str | None = None, status: str | None = None
    ) -> None:
        self.confirmation_id = confirmation_id
        self.status = status
        super().__init__(message, code="confirmation_conflict")


class ConfirmationExpired(ConfirmationConflict):
    """The confirmation expired before it was approved or denied."""


class TooManyPending(LimitReached):
    """The run already has ``confirm.max_pending`` confirmations waiting."""


class ConfirmationRefused(Forbidden):
    """Refused for security reasons (a tampered record, or an approver that is not a person)."""


# -- canonical form, digest and signature ------------------------------------------------------


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the one text a value is hashed and signed as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def params_digest(action: str, params: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``{"action": action, "params": params}``."""
    return hashlib.sha256(canonical_json({"action": action, "params": params}).encode()).hexdigest()


def load_or_create_key(path: Path) -> bytes:
    """Return the signing key in ``path``, creating it (32 random bytes, mode 0600) if absent.

    Creation is atomic: the key is written to a private temporary file (``O_EXCL``) and
    hard-linked into place, which fails if another process got there first; the loser then
    reads the winner's key, so every process of a home signs with the same key and nobody
    ever reads a half-written one. A key file that is not the owner's alone, or not 32
    bytes, is refused rather than used.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        # FileExistsError: another process created it first, and its key is the one to use.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symlink; the confirmation key must be a file") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file; remove it to create a new key")
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise ValueError(
                f"{path} is readable by others or not owned by this user; the confirmation key"
                f" must be private: run `chmod 600 {path}` (or remove it to create a new key)"
            )
        key = handle.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"{path} does not hold a {KEY_BYTES}-byte key; remove it to create a new one"
            " (pending confirmations will then be refused)"
        )
    return key


def required_view(view: ConfirmationView, *, approve_hint: str) -> ConfirmationRequiredView:
    """What the model is told: which confirmation to wait for, and how a person approves it."""
    return ConfirmationRequiredView(
        confirmation_id=view.id,
        action=view.action,
        expires_at=view.expires_at,
        how_to_approve=approve_hint,
    )


# -- the action registry -----------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovedAction:
    """What an executor gets: the approved action's run, params and approver."""

    log: EventLog
    run_id: str
    confirmation_id: str
    params: dict[str, Any]
    approver: Actor


@dataclass(frozen=True)
class ActionSpec:
    """One action that needs confirmation: how to check its params and how to execute it.

    ``check`` returns the normalised params (what is digested, stored and executed) or raises
    InvalidConfirmation; ``execute`` runs inside the approval's transaction, so whatever it
    writes commits or rolls back with the approval.
    """

    name: str
    check: Callable[[dict[str, Any]], dict[str, Any]]
    execute: Callable[[ApprovedAction], None]


def _check_cancel(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - {"reason"})
    if unknown:
        raise InvalidConfirmation(
            f"cancel takes only an optional 'reason'; remove {', '.join(map(repr, unknown))}"
        )
    reason = params.get("reason")
    if reason is None:
        return {}
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InvalidConfirmation(
            f"cancel's 'reason' must be a string of at most {MAX_REASON_CHARS} characters"
        )
    return {"reason": reason}


def _execute_cancel(approved: ApprovedAction) -> None:
    request_control(
        approved.log,
        approved.run_id,
        action=ControlAction.CANCEL,
        request_id=f"{CONFIRM_REQUEST_PREFIX}{approved.confirmation_id}",
        requested_by=approved.approver,
        reason=approved.params.get("reason")
        or f"cancel approved (confirmation {approved.confirmation_id})",
    )


#: The actions that can be confirmed today; more (``github.merge``) register here.
ACTIONS: dict[str, ActionSpec] = {
    "cancel": ActionSpec(name="cancel", check=_check_cancel, execute=_execute_cancel),
}


# -- the service -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    id: str
    run_id: str
    action: str
    params: str
    digest: str
    nonce_hash: str
    status: str
    created_at: str
    expires_at: str
    resolved_at: str | None
    resolved_by: str | None


def _view(row: _Row) -> ConfirmationView:
    try:
        params = json.loads(row.params)
    except ValueError:
        params = None
    return ConfirmationView(
        id=row.id,
        run_id=row.run_id,
        action=row.action,
        # A damaged params column still shows (as nothing) rather than breaking the inbox.
        params=redact(params) if isinstance(params, dict) else {},
        status=cast(ConfirmationStatus, row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
    )


class ConfirmationService:
    """Create, list, approve (executing the action), deny and expire confirmations."""

    def __init__(
        self,
        log: EventLog,
        *,
        key: bytes,
        ttl_s: int,
        max_pending: int,
        actions: Mapping[str, ActionSpec] | None = None,
    ) -> None:
        """Configure with the signing key (:func:`load_or_create_key`) and ``confirm.*``."""
        if len(key) < KEY_BYTES:
            raise ValueError(f"the confirmation key must be at least {KEY_BYTES} bytes")
        if ttl_s < 1:
            raise ValueError("confirm.ttl_s must be >= 1")
        if max_pending < 1:
            raise ValueError("confirm.max_pending must be >= 1")
        self.log = log
        self.__key = key  # name-mangled: keeps it out of casual attribute listings
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.actions: Mapping[str, ActionSpec] = dict(ACTIONS if actions is None else actions)

    def __repr__(self) -> str:
        return f"ConfirmationService(ttl_s={self.ttl_s}, max_pending={self.max_pending})"

    # -- creating -----------------------------------------------------------------------------

    def require(
        self, run_id: str, *, action: str, params: dict[str, Any], requested_by: Actor
    ) -> ConfirmationView:
        """Ask for a person's confirmation of ``action`` on ``run_id``.

        A pending, unexpired confirmation of the same action and params is returned as is
        (no new event). Raises InvalidConfirmation, UnknownRun, ConfirmationConflict (the run
        has ended) or TooManyPending.
        """
        spec = self.actions.get(action)
        if spec is None:
            raise InvalidConfirmation(
                f"unknown action {action!r}; actions that take a confirmation:"
                f" {', '.join(sorted(self.actions))}"
            )
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise InvalidConfirmation(
                f"params of {action!r} must be a JSON object with string keys,"
                f" not {type(params).__name__}"
            )
        clean = spec.check(params)
        try:
            text = canonical_json(clean)
        except (TypeError, ValueError) as error:
            raise InvalidConfirmation(f"params of {action!r} are not plain JSON: {error}") from None
        if len(text) > MAX_PARAMS_CHARS:
            raise InvalidConfirmation(
                f"params of {action!r} are {len(text)} characters as JSON;"
                f" the limit is {MAX_PARAMS_CHARS}"
            )
        digest = params_digest(action, clean)
        with self.log.transaction() as tx:
            state_row = tx.execute("SELECT state FROM run WHERE id = ?", (run_id,)).fetchone()
            if state_row is None:
                raise UnknownRun(run_id)
            state = RunState(state_row[0])
            if state in TERMINAL_STATES:
                raise ConfirmationConflict(
                    f"run {run_id} has ended ({state.value}); there is nothing to {action}"
                )
            now = now_ts()
            same = tx.execute(
                f"SELECT {_COLUMNS} FROM confirmation"  # noqa: S608 - constant column list
                " WHERE run_id = ? AND digest = ? AND status = 'pending' AND expires_at > ?"
                " ORDER BY created_at, id LIMIT 1",
                (run_id, digest, now),
            ).fetchone()
            if same is not None:
                return _view(_Row(*same))
            pending = tx.execute(
                "SELECT count(*) FROM confirmation"
                " WHERE run_id = ? AND status = 'pending' AND expires_at > ?",
                (run_id, now),
            ).fetchone()[0]
            if pending >= self.max_pending:
                raise TooManyPending(
                    f"run {run_id} already has {pending} confirmations waiting"
                    f" (confirm.max_pending = {self.max_pending}); approve or deny one"
                    " (GET /api/confirmations?status=pending) or wait for them to expire"
                )
            cid = new_id("cf")
            moment = utc_now()
            created_at = format_ts(moment)
            expires_at = format_ts(moment + timedelta(seconds=self.ttl_s))
            nonce_hash = self._nonce_hash(cid, run_id, action, digest, expires_at)
            tx.execute(
                f"INSERT INTO confirmation ({_COLUMNS})"  # noqa: S608 - constant column list
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, NULL, NULL)",
                (cid, run_id, action, text, digest, nonce_hash, created_at, expires_at),
            )
            tx.append(
                run_id,
                ConfirmationRequired(
                    confirmation_id=cid, action=action, expires_at=expires_at, params_digest=digest
                ),
                actor=requested_by,
            )
        return self.get(cid)

    # -- reading ------------------------------------------------------------------------------

    def get(self, confirmation_id: str) -> ConfirmationView:
        """Return one confirmation; raises ConfirmationNotFound."""
        row = (
            raw_connection(self.log.db)
            .execute(
                f"SELECT {_COLUMNS} FROM confirmation WHERE id = ?",  # noqa: S608
                (confirmation_id,),
            )
            .fetchone()
        )
        if row is None:
            raise ConfirmationNotFound(confirmation_id)
        return _view(_Row(*row))

    def list(
        self, *, status: str | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[ConfirmationView]:
        """Confirmations matching every given filter, newest first, at most ``limit``."""
        if status is not None and status not in STATUSES:
            raise InvalidConfirmation(
                f"status must be one of {', '.join(STATUSES)}, not {status!r};"
                " leave it out to list every status"
            )
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidConfirmation(f"limit must be from 1 to {MAX_LIST_LIMIT}, not {limit}")
        where: builtins.list[str] = []
        params: builtins.list[object] = []
        for column, value in (("status", status), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = (
            raw_connection(self.log.db)
            .execute(
                f"SELECT {_COLUMNS} FROM confirmation{clause}"  # noqa: S608 - fixed columns
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
            .fetchall()
        )
        return [_view(_Row(*row)) for row in rows]

    # -- resolving ----------------------------------------------------------------------------

    def approve(self, confirmation_id: str, *, by: Actor) -> ConfirmationView:
        """Approve a pending confirmation and execute its action, in one transaction.

        Raises ConfirmationNotFound; ConfirmationConflict when it is not pending (or the
        action cannot apply any more); ConfirmationExpired (after recording the expiry);
        ConfirmationRefused (after recording a ``security_violation``) when ``by`` is not a
        person or the stored record fails its signature check.
        """
        failure: ControlError | None = None
        with self.log.transaction() as tx:
            row = self._load(tx, confirmation_id)
            if by not in PERSON_ACTORS:
                self._violation(
                    tx,
                    row,
                    kind="confirmation_approver_not_a_person",
                    detail=f"{by.value} tried to approve confirmation {row.id} ({row.action});"
                    " only a person (ui, tui, cli, user) may approve",
                )
                failure = ConfirmationRefused(
                    f"confirmation {row.id} can only be approved by a person (ui, tui, cli,"
                    f" user), not by {by.value}",
                    code="confirmation_refused",
                )
            else:
                self._check_pending(row, "approved")
                if row.expires_at <= now_ts():
                    self._expire(tx, row)
                    failure = self._expired_error(row, "approved")
                elif not self._signature_ok(row):
                    self._violation(
                        tx,
                        row,
                        kind="confirmation_tampered",
                        detail=f"confirmation {row.id} no longer matches its signature (its"
                        " action, params, run or expiry were changed outside the runner);"
                        " it was refused and denied",
                    )
                    self._set_status(tx, row, "denied", Actor.RUNNER)
                    failure = ConfirmationRefused(
                        f"confirmation {row.id} was refused: its stored record was changed"
                        " outside the runner, so it has been denied; ask for the action again"
                        " to get a new confirmation",
                        code="confirmation_tampered",
                    )
                else:
                    self._approve_and_execute(tx, row, by)
        if failure is not None:
            raise failure
        return self.get(confirmation_id)

    def deny(self, confirmation_id: str, *, by: Actor) -> ConfirmationView:
        """Deny a pending confirmation; its action is not executed.

        Raises ConfirmationNotFound, ConfirmationConflict (not pending) or
        ConfirmationExpired (after recording the expiry).
        """
        failure: ControlError | None = None
        with self.log.transaction() as tx:
            row = self._load(tx, confirmation_id)
            self._check_pending(row, "denied")
            if row.expires_at <= now_ts():
                self._expire(tx, row)
                failure = self._expired_error(row, "denied")
            else:
                self._set_status(tx, row, "denied", by)
        if failure is not None:
            raise failure
        return self.get(confirmation_id)

    def expire_due(self) -> builtins.list[ConfirmationView]:
        """Expire every pending confirmation whose ``expires_at`` has passed.

        Each is expired in its own transaction, so one failure (logged) holds back no other.
        """
        due = (
            raw_connection(self.log.db)
            .execute(
                "SELECT id FROM confirmation WHERE status = 'pending' AND expires_at <= ?"
                " ORDER BY expires_at, id",
                (now_ts(),),
            )
            .fetchall()
        )
        expired: builtins.list[ConfirmationView] = []
        for (confirmation_id,) in due:
            try:
                with self.log.transaction() as tx:
                    row = self._load(tx, confirmation_id)
                    still_pending = row.status == "pending"
                    if still_pending:
                        self._expire(tx, row)
            except Exception:
                logger.exception(
                    "confirmation %s could not be expired; retrying next sweep", confirmation_id
                )
                continue
            if still_pending:
                expired.append(self.get(confirmation_id))
        return expired

    # -- internals ----------------------------------------------------------------------------

    def _nonce_hash(self, cid: str, run_id: str, action: str, digest: str, expires_at: str) -> str:
        # The nonce only ever exists in this frame: it is hashed before anything keeps it.
        message = canonical_json([cid, run_id, action, digest, expires_at]).encode()
        return hashlib.sha256(hmac.new(self.__key, message, hashlib.sha256).digest()).hexdigest()

    def _signature_ok(self, row: _Row) -> bool:
        try:
            params = json.loads(row.params)
        except ValueError:
            return False
        if not isinstance(params, dict):
            return False
        # The digest is recomputed from what is stored: trusting the digest column would let
        # edited params pass with the old digest.
        digest = params_digest(row.action, params)
        expected = self._nonce_hash(row.id, row.run_id, row.action, digest, row.expires_at)
        nonce_ok = hmac.compare_digest(expected.encode(), row.nonce_hash.encode())
        # The digest column drives deduplication, so it must agree too.
        digest_ok = hmac.compare_digest(digest.encode(), row.digest.encode())
        return nonce_ok and digest_ok

    def _approve_and_execute(self, tx: Tx, row: _Row, by: Actor) -> None:
        spec = self.actions.get(row.action)
        if spec is None:
            raise ConfirmationConflict(
                f"action {row.action!r} of confirmation {row.id} is not supported by this"
                " runner any more; deny it",
                confirmation_id=row.id,
                status=row.status,
            )
        self._set_status(tx, row, "approved", by)
        try:
            spec.execute(
                ApprovedAction(
                    log=self.log,
                    run_id=row.run_id,
                    confirmation_id=row.id,
                    params=json.loads(row.params),
                    approver=by,
                )
            )
        except Conflict as error:
            # The approval rolls back with the action, so the confirmation stays pending.
            raise ConfirmationConflict(
                f"confirmation {row.id} could not be carried out: {error}",
                confirmation_id=row.id,
                status="pending",
            ) from error

    def _set_status(
        self, tx: Tx, row: _Row, status: Literal["approved", "denied", "expired"], by: Actor
    ) -> None:
        # Conditional on 'pending': exactly one caller can ever move a confirmation on.
        changed = tx.execute(
            "UPDATE confirmation SET status = ?, resolved_at = ?, resolved_by = ?"
            " WHERE id = ? AND status = 'pending'",
            (status, now_ts(), by.value, row.id),
        ).rowcount
        if changed != 1:
            raise ConfirmationConflict(
                f"confirmation {row.id} was resolved by someone else meanwhile",
                confirmation_id=row.id,
            )
        tx.append(
            row.run_id,
            ConfirmationResolved(
                confirmation_id=row.id, action=row.action, resolution=status, resolved_by=by.value
            ),
            actor=by,
        )

    def _expire(self, tx: Tx, row: _Row) -> None:
        self._set_status(tx, row, "expired", Actor.RUNNER)

    def _violation(self, tx: Tx, row: _Row, *, kind: str, detail: str) -> None:
        logger.warning("security violation on run %s: %s", row.run_id, detail)
        tx.append(row.run_id, SecurityViolation(kind=kind, detail=detail), actor=Actor.RUNNER)

    @staticmethod
    def _check_pending(row: _Row, verb: str) -> None:
        if row.status != "pending":
            raise ConfirmationConflict(
                f"confirmation {row.id} is {row.status}, not pending; only a pending"
                f" confirmation can be {verb}",
                confirmation_id=row.id,
                status=row.status,
            )

    @staticmethod
    def _expired_error(row: _Row, verb: str) -> ConfirmationExpired:
        return ConfirmationExpired(
            f"confirmation {row.id} expired at {row.expires_at} before it was {verb};"
            " ask for the action again to get a new confirmation",
            confirmation_id=row.id,
            status="expired",
        )

    def _load(self, tx: Tx, confirmation_id: str) -> _Row:
        row = tx.execute(
            f"SELECT {_COLUMNS} FROM confirmation WHERE id = ?",  # noqa: S608
            (confirmation_id,),
        ).fetchone()
        if row is None:
            raise ConfirmationNotFound(confirmation_id)
        return _Row(*row)
