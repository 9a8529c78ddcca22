"""The question queue: delegates ask, people answer, unanswered questions expire.

A question belongs to the run that asked it; its *parent* is that run's ``parent_run_id``
(the run that delegated the work, usually the top-level Codex). Every lifecycle event
(``question_queued``, ``question_answered``, ``question_dismissed``, ``question_expired``) is
appended to the asking run **and** to its parent, in the transaction that changes the row, so
whoever follows either run sees the question come and go.

Auto-pause: a question asked with ``auto_pause`` pauses its run at once (control request
``auto-pause:<qid>`` by the runner). Answering or dismissing it resumes the run
(``auto-resume:<qid>``) only when no other auto-pause question of the run is still pending and
the run is paused *because of* an auto-pause, i.e. its newest control request is a runner's
``auto-pause:`` one. A pause a person made (or any later control request) is never undone.

Expiry: every question has ``expires_at``; :meth:`QuestionService.expire_due` (run by the
sweeper) expires the due ones and applies each one's fallback to its run:

- ``pause``: a queued or running run is paused (``expiry-pause:<qid>``); a run already
  pausing/paused for an auto-pause has that pause re-recorded as the expiry's, so answering
  another question does not lift it.
- ``resume``: a run pausing/paused for an auto-pause is resumed (``expiry-resume:<qid>``)
  unless another auto-pause question of it is still pending. A person's pause is kept.
- ``fail``: a run that has not ended fails (``run_failed``).

A run that has ended only sees the question expire. Answering or dismissing a question whose
``expires_at`` has passed (before the sweeper got to it) expires it instead and raises
:class:`QuestionConflict`, so a deadline means the same thing whoever reaches it first.

Long-polling (:meth:`QuestionService.wait`) holds no thread and does not poll the database:
each waiting coroutine parks on an asyncio future registered with the service; whichever
thread changes the question wakes it with ``loop.call_soon_threadsafe`` after its commit.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
from datetime import timedelta
from typing import Literal, cast, get_args

import msgspec

from app.clock import format_ts, now_ts, utc_now
from app.control.actions import ControlAction, request_control
from app.control.errors import Conflict, NotFound
from app.ids import new_id
from app.wire.events import (
    Actor,
    Payload,
    QuestionAnswered,
    QuestionDismissed,
    QuestionExpired,
    QuestionQueued,
    RunFailed,
)
from db.connection import raw_connection
from db.eventlog import EventLog, Tx, UnknownRun
from db.lifecycle import TERMINAL_STATES, RunState
from db.runs import transition

logger = logging.getLogger(__name__)

QuestionStatus = Literal["pending", "answered", "expired", "dismissed"]
ExpiryFallback = Literal["pause", "resume", "fail"]
STATUSES: tuple[str, ...] = get_args(QuestionStatus)
FALLBACKS: tuple[str, ...] = get_args(ExpiryFallback)

#: Control request id prefixes the question queue writes (``<prefix><question id>``).
AUTO_PAUSE_PREFIX = "auto-pause:"
AUTO_RESUME_PREFIX = "auto-resume:"
EXPIRY_PAUSE_PREFIX = "expiry-pause:"
EXPIRY_RESUME_PREFIX = "expiry-resume:"

#: Characters of the prompt copied into the ``question_queued`` event.
PREVIEW_CHARS = 200
MAX_REASON_CHARS = 2_000
#: Longest ttl accepted (a year); beyond it a deadline means nothing and datetimes overflow.
MAX_TTL_S = 366 * 24 * 3600
MAX_LIST_LIMIT = 1_000

_COLUMNS = (
    "id, run_id, parent_run_id, prompt, status, answer, auto_pause, expiry_fallback,"
    " created_at, expires_at, resolved_at, resolved_by"
)


class QuestionView(msgspec.Struct, frozen=True, kw_only=True):
    """A question as the API, the CLI, the TUI and the MCP tools show it."""

    id: str
    run_id: str
    parent_run_id: str | None
    prompt: str
    status: QuestionStatus
    answer: str | None
    auto_pause: bool
    expiry_fallback: ExpiryFallback
    created_at: str
    expires_at: str | None
    resolved_at: str | None
    resolved_by: str | None


# -- errors ------------------------------------------------------------------------------------


class InvalidQuestion(ValueError):
    """A request to the question queue is malformed; the message says how to fix it."""

    code = "invalid_question"


class QuestionNotFound(NotFound):
    """No question has this id."""

    def __init__(self, question_id: str) -> None:
        self.question_id = question_id
        super().__init__(
            f"no question with id {question_id!r} (list them with GET /api/questions)",
            code="question_not_found",
        )


class QuestionConflict(Conflict):
    """The question (or its run) is not in a state that allows the request."""

    def __init__(
        self, message: str, *, question_id: str | None = None, status: str | None = None
    ) -> None:
        self.question_id = question_id
        self.status = status
        super().__init__(message, code="question_conflict")


# -- helpers -----------------------------------------------------------------------------------


def _view(row: tuple[object, ...]) -> QuestionView:
    (
        qid,
        run_id,
        parent_run_id,
        prompt,
        status,
        answer,
        auto_pause,
        fallback,
        created_at,
        expires_at,
        resolved_at,
        resolved_by,
    ) = row
    return QuestionView(
        id=cast(str, qid),
        run_id=cast(str, run_id),
        parent_run_id=cast("str | None", parent_run_id),
        prompt=cast(str, prompt),
        status=cast(QuestionStatus, status),
        answer=cast("str | None", answer),
        auto_pause=bool(auto_pause),
        expiry_fallback=cast(ExpiryFallback, fallback),
        created_at=cast(str, created_at),
        expires_at=cast("str | None", expires_at),
        resolved_at=cast("str | None", resolved_at),
        resolved_by=cast("str | None", resolved_by),
    )


def _check_text(name: str, value: object, limit: int, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidQuestion(f"{name} must be a non-empty string; {hint}")
    if len(value) > limit:
        raise InvalidQuestion(
            f"{name} is {len(value)} characters long, more than the limit of {limit}; {hint}"
        )
    return value


def _wake(waiter: asyncio.Future[None]) -> None:
    # Runs on the waiter's own loop; the waiter may have timed out and gone already.
    if not waiter.done():
        waiter.set_result(None)


def _run_state(tx: Tx, run_id: str) -> RunState | None:
    row = tx.execute("SELECT state FROM run WHERE id = ?", (run_id,)).fetchone()
    return RunState(row[0]) if row else None


def paused_for_question(tx: Tx, run_id: str) -> bool:
    """True when the run's newest control request is the runner's auto-pause for a question.

    This is how a pause the queue made is told apart from one a person (or anything else)
    made afterwards: any later control request becomes the newest and wins.
    """
    row = tx.execute(
        "SELECT request_id, requested_by, action FROM control_request WHERE run_id = ?"
        " ORDER BY id DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    return (
        row is not None
        and str(row[0]).startswith(AUTO_PAUSE_PREFIX)
        and row[1] == Actor.RUNNER.value
        and row[2] == ControlAction.PAUSE.value
    )


# -- the service ----------------------------------------------------------------------------


class QuestionService:
    """Enqueue, list, wait for, answer, dismiss and expire questions (thread-safe)."""

    def __init__(
        self,
        log: EventLog,
        *,
        default_ttl_s: int,
        default_fallback: str,
        max_wait_ms: int,
        max_prompt_chars: int = 20_000,
        max_answer_chars: int = 100_000,
    ) -> None:
        """Configure the queue (``questions.ttl_s``, ``questions.expiry_fallback``, ...)."""
        if not 1 <= default_ttl_s <= MAX_TTL_S:
            raise ValueError(f"questions.ttl_s must be between 1 and {MAX_TTL_S} seconds")
        if default_fallback not in FALLBACKS:
            raise ValueError(
                f"questions.expiry_fallback must be one of {', '.join(FALLBACKS)},"
                f" not {default_fallback!r}"
            )
        if max_wait_ms < 0:
            raise ValueError("questions.max_wait_ms must be >= 0")
        self.log = log
        self.default_ttl_s = default_ttl_s
        self.default_fallback = default_fallback
        self.max_wait_ms = max_wait_ms
        self.max_prompt_chars = max_prompt_chars
        self.max_answer_chars = max_answer_chars
        # question id -> the futures of coroutines waiting on it, each with its loop.
        self._waiters: dict[
            str, builtins.list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
        ] = {}
        self._waiters_lock = threading.Lock()

    # -- asking ------------------------------------------------------------------------------

    def enqueue(
        self,
        run_id: str,
        *,
        prompt: str,
        actor: Actor,
        auto_pause: bool = False,
        ttl_s: int | None = None,
        expiry_fallback: str | None = None,
    ) -> QuestionView:
        """Queue a question from ``run_id``; with ``auto_pause`` the run is paused right away.

        Raises InvalidQuestion (bad prompt, ttl or fallback), UnknownRun, QuestionConflict
        when the run has ended, or ``actions.ControlConflict`` (a Conflict) when an auto-pause
        cannot apply now (an interrupted run); nothing is written in any of these cases.
        """
        _check_text(
            "prompt",
            prompt,
            self.max_prompt_chars,
            "ask one focused question and put long material in an artifact",
        )
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_S:
            raise InvalidQuestion(
                f"ttl_s must be a whole number of seconds from 1 to {MAX_TTL_S}, not {ttl_s!r};"
                f" leave it out to use the default ({self.default_ttl_s} s)"
            )
        fallback = self.default_fallback if expiry_fallback is None else expiry_fallback
        if fallback not in FALLBACKS:
            raise InvalidQuestion(
                f"expiry_fallback must be one of {', '.join(FALLBACKS)}, not {fallback!r};"
                f" leave it out to use the default ({self.default_fallback})"
            )
        qid = new_id("q")
        now = utc_now()
        created_at = format_ts(now)
        expires_at = format_ts(now + timedelta(seconds=ttl))
        with self.log.transaction() as tx:
            row = tx.execute(
                "SELECT state, parent_run_id FROM run WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise UnknownRun(run_id)
            state, parent_run_id = RunState(row[0]), row[1]
            if state in TERMINAL_STATES:
                raise QuestionConflict(
                    f"run {run_id} has ended ({state.value}); only a run that is still going"
                    " can ask a question"
                )
            tx.execute(
                f"INSERT INTO question ({_COLUMNS})"  # noqa: S608 - constant column list
                " VALUES (?, ?, ?, ?, 'pending', NULL, ?, ?, ?, ?, NULL, NULL)",
                (
                    qid,
                    run_id,
                    parent_run_id,
                    prompt,
                    int(auto_pause),
                    fallback,
                    created_at,
                    expires_at,
                ),
            )
            self._append_both(
                tx,
                run_id,
                parent_run_id,
                QuestionQueued(
                    question_id=qid,
                    asked_by_run_id=run_id,
                    prompt_preview=prompt[:PREVIEW_CHARS],
                    auto_pause=auto_pause,
                    expires_at=expires_at,
                ),
                actor,
            )
            # A run already pausing or paused stays so; recording an auto-pause over a
            # person's pause would let the answer lift a pause the person made.
            if auto_pause and state not in (RunState.PAUSING, RunState.PAUSED):
                request_control(
                    self.log,
                    run_id,
                    action=ControlAction.PAUSE,
                    request_id=f"{AUTO_PAUSE_PREFIX}{qid}",
                    requested_by=Actor.RUNNER,
                    reason=f"waiting for an answer to question {qid}",
                )
        return self.get(qid)

    # -- reading -----------------------------------------------------------------------------

    def get(self, question_id: str) -> QuestionView:
        """Return one question; raises QuestionNotFound."""
        row = (
            raw_connection(self.log.db)
            .execute(f"SELECT {_COLUMNS} FROM question WHERE id = ?", (question_id,))  # noqa: S608
            .fetchone()
        )
        if row is None:
            raise QuestionNotFound(question_id)
        return _view(row)

    def list(
        self,
        *,
        status: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[QuestionView]:
        """Questions matching every given filter, newest first, at most ``limit``."""
        if status is not None and status not in STATUSES:
            raise InvalidQuestion(
                f"status must be one of {', '.join(STATUSES)}, not {status!r};"
                " leave it out to list every status"
            )
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidQuestion(f"limit must be from 1 to {MAX_LIST_LIMIT}, not {limit}")
        where: builtins.list[str] = []
        params: builtins.list[object] = []
        for column, value in (
            ("status", status),
            ("run_id", run_id),
            ("parent_run_id", parent_run_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = (
            raw_connection(self.log.db)
            .execute(
                f"SELECT {_COLUMNS} FROM question{clause}"  # noqa: S608 - fixed column names
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
            .fetchall()
        )
        return [_view(row) for row in rows]

    async def wait(self, question_id: str, wait_ms: int) -> QuestionView:
        """Long-poll: return once the question is no longer pending, or after ``wait_ms``.

        ``wait_ms`` is capped at ``max_wait_ms``; on timeout the current (pending) view is
        returned. Raises QuestionNotFound, or InvalidQuestion for a negative ``wait_ms``.
        """
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
            raise InvalidQuestion(f"wait_ms must be a whole number >= 0, not {wait_ms!r}")
        timeout = min(wait_ms, self.max_wait_ms) / 1000
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (loop, waiter)
        # Register before reading, so a change committed between the read and the await
        # still wakes us (the notification finds the waiter already there).
        with self._waiters_lock:
            self._waiters.setdefault(question_id, []).append(entry)
        try:
            view = self.get(question_id)
            if view.status != "pending" or timeout <= 0:
                return view
            await asyncio.wait((waiter,), timeout=timeout)
            return self.get(question_id)
        finally:
            with self._waiters_lock:
                entries = self._waiters.get(question_id, [])
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    self._waiters.pop(question_id, None)

    def wake_all(self) -> None:
        """Wake every waiting long-poll now (each returns the current view); for shutdown."""
        with self._waiters_lock:
            question_ids = builtins.list(self._waiters)
        for question_id in question_ids:
            self._notify(question_id)

    # -- resolving ---------------------------------------------------------------------------

    def answer(self, question_id: str, *, answer: str, by: Actor) -> QuestionView:
        """Answer a pending question; may resume a run its auto-pause paused.

        Raises InvalidQuestion (empty or oversized answer), QuestionNotFound, or
        QuestionConflict when the question is not pending (or has just expired).
        """
        _check_text(
            "answer",
            answer,
            self.max_answer_chars,
            "to close a question without answering it, dismiss it instead",
        )
        return self._resolve(question_id, status="answered", by=by, answer=answer)

    def dismiss(self, question_id: str, *, by: Actor, reason: str | None = None) -> QuestionView:
        """Close a pending question without an answer; may resume an auto-paused run."""
        if reason is not None:
            _check_text("reason", reason, MAX_REASON_CHARS, "give a short reason or none at all")
        return self._resolve(question_id, status="dismissed", by=by, reason=reason)

    def _resolve(
        self,
        question_id: str,
        *,
        status: Literal["answered", "dismissed"],
        by: Actor,
        answer: str | None = None,
        reason: str | None = None,
    ) -> QuestionView:
        verb = "answered" if status == "answered" else "dismissed"
        expired: QuestionView | None = None
        with self.log.transaction() as tx:
            view = self._load(tx, question_id)
            if view.status != "pending":
                raise QuestionConflict(
                    f"question {question_id} is {view.status}, not pending; only a pending"
                    f" question can be {verb}",
                    question_id=question_id,
                    status=view.status,
                )
            if view.expires_at is not None and view.expires_at <= now_ts():
                # Its deadline passed before the sweeper got to it: expire it now (and commit
                # that), so the outcome does not depend on when the sweeper last ran.
                self._expire(tx, view)
                expired = view
            else:
                tx.execute(
                    "UPDATE question SET status = ?, answer = ?, resolved_at = ?,"
                    " resolved_by = ? WHERE id = ? AND status = 'pending'",
                    (status, answer, now_ts(), by.value, question_id),
                )
                payload: Payload
                if status == "answered":
                    payload = QuestionAnswered(question_id=question_id, answered_by=by.value)
                else:
                    payload = QuestionDismissed(
                        question_id=question_id, dismissed_by=by.value, reason=reason
                    )
                self._append_both(tx, view.run_id, view.parent_run_id, payload, by)
                if view.auto_pause:
                    self._resume_if_ours(
                        tx,
                        view.run_id,
                        request_id=f"{AUTO_RESUME_PREFIX}{question_id}",
                        reason=f"question {question_id} was {verb}",
                    )
                self._notify_after_commit(question_id)
        if expired is not None:
            raise QuestionConflict(
                f"question {question_id} expired at {expired.expires_at} before it was {verb};"
                f" its fallback ({expired.expiry_fallback}) was applied to run {expired.run_id}",
                question_id=question_id,
                status="expired",
            )
        return self.get(question_id)

    # -- expiring ----------------------------------------------------------------------------

    def expire_due(self) -> builtins.list[QuestionView]:
        """Expire every pending question whose ``expires_at`` has passed, applying fallbacks.

        Each question is expired in its own transaction: one that cannot be expired (logged)
        does not hold back the others, and is tried again at the next call.
        """
        now = now_ts()
        due = (
            raw_connection(self.log.db)
            .execute(
                "SELECT id FROM question WHERE status = 'pending' AND expires_at IS NOT NULL"
                " AND expires_at <= ? ORDER BY expires_at, id",
                (now,),
            )
            .fetchall()
        )
        expired: builtins.list[QuestionView] = []
        for (question_id,) in due:
            try:
                with self.log.transaction() as tx:
                    view = self._load(tx, question_id)
                    # Answered or dismissed meanwhile by another thread: nothing to do.
                    still_pending = view.status == "pending"
                    if still_pending:
                        self._expire(tx, view)
            except Exception:
                logger.exception(
                    "question %s could not be expired; retrying next sweep", question_id
                )
                continue
            if still_pending:
                expired.append(self.get(question_id))
        return expired

    def _expire(self, tx: Tx, view: QuestionView) -> None:
        qid = view.id
        tx.execute(
            "UPDATE question SET status = 'expired', resolved_at = ?, resolved_by = ?"
            " WHERE id = ? AND status = 'pending'",
            (now_ts(), Actor.RUNNER.value, qid),
        )
        self._append_both(
            tx,
            view.run_id,
            view.parent_run_id,
            QuestionExpired(question_id=qid, fallback=view.expiry_fallback),
            Actor.RUNNER,
        )
        self._apply_fallback(tx, view)
        self._notify_after_commit(qid)

    def _apply_fallback(self, tx: Tx, view: QuestionView) -> None:
        qid, run_id, fallback = view.id, view.run_id, view.expiry_fallback
        state = _run_state(tx, run_id)
        if state is None or state in TERMINAL_STATES:
            return  # an ended run only sees its question expire
        reason = f"question {qid} expired unanswered (fallback: {fallback})"
        if fallback == "fail":
            transition(
                self.log,
                run_id,
                RunFailed(reason=reason, error_type="question_expired"),
                actor=Actor.RUNNER,
                reason=reason,
                tx=tx,
            )
        elif fallback == "pause":
            ours = state in (RunState.PAUSING, RunState.PAUSED) and paused_for_question(tx, run_id)
            if state in (RunState.QUEUED, RunState.RUNNING) or ours:
                # When the run is already paused for an auto-pause, this records the pause
                # as the expiry's, so answering another question does not lift it.
                request_control(
                    self.log,
                    run_id,
                    action=ControlAction.PAUSE,
                    request_id=f"{EXPIRY_PAUSE_PREFIX}{qid}",
                    requested_by=Actor.RUNNER,
                    reason=reason,
                )
            elif state is RunState.INTERRUPTED:
                logger.info("run %s is interrupted; the pause fallback of %s is moot", run_id, qid)
        else:
            self._resume_if_ours(
                tx, run_id, request_id=f"{EXPIRY_RESUME_PREFIX}{qid}", reason=reason
            )

    def _resume_if_ours(self, tx: Tx, run_id: str, *, request_id: str, reason: str) -> bool:
        """Resume a run the queue paused, unless a person's pause or another question holds it."""
        other = tx.execute(
            "SELECT 1 FROM question WHERE run_id = ? AND status = 'pending' AND auto_pause = 1"
            " LIMIT 1",
            (run_id,),
        ).fetchone()
        if other is not None:
            return False
        if _run_state(tx, run_id) not in (RunState.PAUSING, RunState.PAUSED):
            return False
        if not paused_for_question(tx, run_id):
            return False
        request_control(
            self.log,
            run_id,
            action=ControlAction.RESUME,
            request_id=request_id,
            requested_by=Actor.RUNNER,
            reason=reason,
        )
        return True

    # -- internals ---------------------------------------------------------------------------

    def _load(self, tx: Tx, question_id: str) -> QuestionView:
        row = tx.execute(
            f"SELECT {_COLUMNS} FROM question WHERE id = ?",  # noqa: S608
            (question_id,),
        ).fetchone()
        if row is None:
            raise QuestionNotFound(question_id)
        return _view(row)

    def _append_both(
        self, tx: Tx, run_id: str, parent_run_id: str | None, payload: Payload, actor: Actor
    ) -> None:
        tx.append(run_id, payload, actor=actor)
        if parent_run_id is not None:
            tx.append(parent_run_id, payload, actor=actor)

    def _notify_after_commit(self, question_id: str) -> None:
        # Waiters re-read the row when woken, so they must only be woken once it is visible;
        # a rolled-back transaction drops the callback and wakes no one.
        self.log.db.after_commit(lambda: self._notify(question_id))

    def _notify(self, question_id: str) -> None:
        with self._waiters_lock:
            entries = builtins.list(self._waiters.get(question_id, ()))
        for loop, waiter in entries:
            # RuntimeError: that loop is closed, and its waiter went with it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, waiter)
