"""Control actions: pause, resume and cancel of a run, idempotent per ``request_id``.

A control request is recorded (``control_request`` row, ``run.control_seq`` + 1), its events
written and the run's state moved, all in one transaction; afterwards
``runs/<id>/control.json`` is rewritten from the database. Repeating a ``request_id`` returns
the first outcome and writes nothing; reusing it for another action is a conflict.

What each action does depends on the state (the run loop of the Execution issue acts on
``pausing`` and ``cancelled`` at its next step boundary):

| action | queued | running | pausing | paused | interrupted | ended |
|---|---|---|---|---|---|---|
| pause | → paused | → pausing | no change | no change | conflict | conflict |
| resume | no change | no change | → running | → queued | conflict | conflict |
| cancel | → cancelled | → cancelled | → cancelled | → cancelled | → cancelled | conflict |
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from app.clock import now_ts
from app.control.errors import Conflict
from app.files import write_private
from app.wire.events import (
    Actor,
    CancelRequested,
    PauseRequested,
    ResumeRequested,
    RunCancelled,
    RunPaused,
    RunResumed,
)
from db.connection import raw_connection
from db.eventlog import EventLog, Tx, UnknownRun
from db.lifecycle import TERMINAL_STATES, RunState
from db.runs import transition


class ControlAction(StrEnum):
    """What a person or client can ask of a run."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


class LatestAction(msgspec.Struct, frozen=True, kw_only=True):
    """The newest control request of a run, as control.json shows it."""

    request_id: str
    requested_by: str
    requested_at: str
    action: str
    reason: str | None


class ControlState(msgspec.Struct, frozen=True, kw_only=True):
    """The shape of ``runs/<id>/control.json`` and of ``GET /api/runs/{id}/control``."""

    run_id: str
    control_seq: int
    latest_action: LatestAction | None
    feature_toggles: dict[str, Any]


class ControlConflict(Conflict):
    """The request cannot apply: the run has ended, or the request id was used differently."""

    def __init__(self, run_id: str, message: str, state: RunState | None = None) -> None:
        self.run_id = run_id
        self.state = state
        super().__init__(message, code="control_conflict")


@dataclass(frozen=True)
class ControlOutcome:
    """What a control request did."""

    run_id: str
    action: ControlAction
    request_id: str
    state: RunState
    #: False when the request was a repeat of an earlier one (nothing was written).
    applied: bool
    #: True when the state changed because of this request.
    changed: bool


def request_control(
    log: EventLog,
    run_id: str,
    *,
    action: ControlAction,
    request_id: str,
    requested_by: Actor,
    reason: str | None = None,
) -> ControlOutcome:
    """Record and apply a control request; see the module docstring for the rules."""
    with log.transaction() as tx:
        row = tx.execute("SELECT state FROM run WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(run_id)
        state = RunState(row[0])
        previous = tx.execute(
            "SELECT action FROM control_request WHERE run_id = ? AND request_id = ?",
            (run_id, request_id),
        ).fetchone()
        if previous is not None:
            if previous[0] != action.value:
                raise ControlConflict(
                    run_id,
                    f"request_id {request_id!r} was already used for {previous[0]!r} on this run;"
                    " use a new request_id for a new request",
                    state,
                )
            return ControlOutcome(run_id, action, request_id, state, applied=False, changed=False)
        new_state = _apply(
            tx,
            log,
            run_id=run_id,
            state=state,
            action=action,
            request_id=request_id,
            requested_by=requested_by,
            reason=reason,
        )
        tx.execute(
            "INSERT INTO control_request (run_id, request_id, action, requested_by, reason,"
            " requested_at) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, request_id, action.value, requested_by.value, reason, now_ts()),
        )
        tx.execute("UPDATE run SET control_seq = control_seq + 1 WHERE id = ?", (run_id,))
        # After the outermost commit (immediately when this was the outermost transaction).
        log.db.after_commit(lambda: write_control_mirror(log, run_id))
    return ControlOutcome(
        run_id, action, request_id, new_state, applied=True, changed=new_state != state
    )


def _apply(
    tx: Tx,
    log: EventLog,
    *,
    run_id: str,
    state: RunState,
    action: ControlAction,
    request_id: str,
    requested_by: Actor,
    reason: str | None,
) -> RunState:
    if state in TERMINAL_STATES:
        raise ControlConflict(
            run_id, f"run {run_id} has ended ({state.value}); nothing to {action.value}", state
        )
    by = requested_by.value

    def move(payload: Any) -> RunState:
        return transition(log, run_id, payload, actor=requested_by, reason=reason, tx=tx)

    if action is ControlAction.CANCEL:
        tx.append(
            run_id,
            CancelRequested(request_id=request_id, requested_by=by, reason=reason),
            actor=requested_by,
        )
        return move(RunCancelled(reason=reason, request_id=request_id))
    if state is RunState.INTERRUPTED:
        raise ControlConflict(
            run_id,
            f"run {run_id} is interrupted (its worker was lost); it is being re-queued or failed,"
            f" so it cannot {action.value} now: try again shortly",
            state,
        )
    if action is ControlAction.PAUSE:
        if state is RunState.QUEUED:
            return move(RunPaused(reason=reason or f"paused by {by} before it started"))
        if state is RunState.RUNNING:
            return move(PauseRequested(request_id=request_id, requested_by=by, reason=reason))
        return state  # pausing or paused already
    # resume
    if state in (RunState.PAUSING, RunState.PAUSED):
        tx.append(
            run_id,
            ResumeRequested(request_id=request_id, requested_by=by, reason=reason),
            actor=requested_by,
        )
        return move(RunResumed(request_id=request_id, reason=reason))
    return state  # queued or running: nothing to resume


def control_state(log: EventLog, run_id: str) -> ControlState:
    """Read a run's control state (what control.json mirrors) from the database."""
    conn = raw_connection(log.db)
    row = conn.execute(
        "SELECT control_seq, feature_toggles FROM run WHERE id = ?", (run_id,)
    ).fetchone()
    if row is None:
        raise UnknownRun(run_id)
    latest = conn.execute(
        "SELECT request_id, requested_by, requested_at, action, reason FROM control_request"
        " WHERE run_id = ? ORDER BY id DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    return ControlState(
        run_id=run_id,
        control_seq=int(row[0]),
        latest_action=LatestAction(
            request_id=latest[0],
            requested_by=latest[1],
            requested_at=latest[2],
            action=latest[3],
            reason=latest[4],
        )
        if latest
        else None,
        feature_toggles=json.loads(row[1] or "{}"),
    )


def write_control_mirror(log: EventLog, run_id: str) -> None:
    """Rewrite ``runs/<id>/control.json`` from the database (under a lock, atomically).

    Reading the state under the lock means concurrent writers can only ever leave the
    newest state in the file, whatever order they get here in.
    """
    path = log.home.run_dir(run_id) / "control.json"
    lock_path = path.with_name(".control.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = msgspec.json.format(msgspec.json.encode(control_state(log, run_id)), indent=2)
        write_private(path, data + b"\n")
    finally:
        os.close(fd)
