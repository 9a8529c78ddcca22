"""Leases: which worker holds a run, until when; and recovering runs whose worker was lost.

A worker claims a queued run by writing its owner id and an expiry in the same transaction
as ``run_started`` (so two workers can never both start it), renews the expiry while it
runs, and clears it when it lets go. The sweeper (at start-up and on a timer) finds runs
whose lease expired — or whose owner is a dead process on this host — and emits
``run_interrupted``; then re-queues them from their checkpoint when their engine can resume,
or fails them with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.clock import format_ts, now_ts, utc_now
from app.wire.events import Actor, RunFailed, RunInterrupted, RunQueued, RunStarted
from db.connection import raw_connection
from db.eventlog import EventLog, Tx
from db.lifecycle import IllegalTransition, RunState
from db.runs import transition
from jobs.engines import engine_resumable

log = logging.getLogger(__name__)
HOST = socket.gethostname()


def new_owner_id() -> str:
    """An owner id for this process: ``host:pid:nonce`` (the nonce survives pid reuse)."""
    return f"{HOST}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead_here(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid_text) != os.getpid() and _is_zombie(int(pid_text))


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class Claim:
    """A run this worker now holds."""

    run_id: str
    engine: str
    attempt: int
    checkpoint: dict[str, Any] | None
    active_ms: int


def claim(log_: EventLog, run_id: str, *, owner: str, ttl_s: float) -> Claim | None:
    """Take a queued run: lease + ``run_started`` in one transaction; None if not queued."""
    expires = format_ts(utc_now() + timedelta(seconds=ttl_s))
    with log_.transaction() as tx:
        row = tx.execute(
            "SELECT state, engine, attempt, checkpoint, active_ms FROM run WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None or row[0] != RunState.QUEUED.value:
            return None
        _, engine, attempt, checkpoint_text, active_ms = row
        checkpoint = json.loads(checkpoint_text) if checkpoint_text else None
        tx.execute(
            "UPDATE run SET lease_owner = ?, lease_expires_at = ?, attempt = attempt + 1"
            " WHERE id = ?",
            (owner, expires, run_id),
        )
        transition(
            log_,
            run_id,
            RunStarted(
                worker_id=owner, attempt=attempt + 1, from_checkpoint=checkpoint is not None
            ),
            actor=Actor.WORKER,
            tx=tx,
        )
    return Claim(run_id, engine, attempt + 1, checkpoint, int(active_ms))


def renew(log_: EventLog, run_id: str, *, owner: str, ttl_s: float) -> bool:
    """Extend our lease; False when it is no longer ours (the run must stop)."""
    expires = format_ts(utc_now() + timedelta(seconds=ttl_s))
    with log_.transaction() as tx:
        changed = tx.execute(
            "UPDATE run SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?",
            (expires, run_id, owner),
        ).rowcount
    return changed == 1


def release(
    log_: EventLog, run_id: str, *, owner: str, attempt: int, active_ms: int, tx: Tx | None = None
) -> None:
    """Let go of a run (after it paused or ended) and record its running time.

    Only this attempt's lease is released (owner *and* attempt): once a paused run has been
    resumed and claimed again — possibly by the same worker — the old attempt, still closing
    its engine, must not clear the new lease. Pass ``tx`` to release in the same transaction
    as the pause or ending, so the next claim already sees the released lease and the time.
    """
    if tx is None:
        with log_.transaction() as own:
            release(log_, run_id, owner=owner, attempt=attempt, active_ms=active_ms, tx=own)
        return
    tx.execute(
        "UPDATE run SET lease_owner = NULL, lease_expires_at = NULL, engine_pgid = NULL,"
        " active_ms = ? WHERE id = ? AND lease_owner = ? AND attempt = ?",
        (active_ms, run_id, owner, attempt),
    )


@dataclass(frozen=True)
class Recovered:
    """A run the sweeper found orphaned, and what it did with it."""

    run_id: str
    action: str  # "requeued" | "failed"
    engine_pgid: int | None


def sweep_expired(
    log_: EventLog, *, ignore_owner: str | None = None, dead_owner: str | None = None
) -> list[Recovered]:
    """Interrupt every running/pausing run whose lease expired or whose owner died here.

    Each run is handled in its own transaction: ``run_interrupted``, then ``run_queued``
    (resumable engine) or ``run_failed`` with the reason. Returns what was done, including
    the process group the lost worker's engine had, for the caller to kill. ``dead_owner``
    is treated as lost whatever its lease says (a runner handing back its own runs at exit).
    """
    now = now_ts()
    rows = (
        raw_connection(log_.db)
        .execute(
            "SELECT id, engine, lease_owner, lease_expires_at, engine_pgid FROM run"
            " WHERE state IN ('running', 'pausing')"
        )
        .fetchall()
    )
    recovered: list[Recovered] = []
    for run_id, engine, owner, expires_at, pgid in rows:
        if owner is not None and owner == ignore_owner:
            continue
        lost = (
            owner is None
            or owner == dead_owner
            or expires_at is None
            or expires_at <= now
            or owner_is_dead_here(owner)
        )
        if not lost:
            continue
        reason = (
            f"its worker {owner} stopped renewing its lease"
            if owner
            else "it was running without a worker lease"
        )
        try:
            with log_.transaction() as tx:
                current = tx.execute(
                    "SELECT state, lease_owner FROM run WHERE id = ?", (run_id,)
                ).fetchone()
                if (
                    current is None
                    or current[0] not in ("running", "pausing")
                    or current[1] != owner
                ):
                    continue  # it moved on since we looked
                transition(
                    log_,
                    run_id,
                    RunInterrupted(reason=reason, lease_owner=owner),
                    actor=Actor.RUNNER,
                    reason=reason,
                    tx=tx,
                )
                tx.execute(
                    "UPDATE run SET lease_owner = NULL, lease_expires_at = NULL,"
                    " engine_pgid = NULL WHERE id = ?",
                    (run_id,),
                )
                if engine_resumable(engine):
                    transition(
                        log_,
                        run_id,
                        RunQueued(engine=engine, reason=f"re-queued from its checkpoint: {reason}"),
                        actor=Actor.RUNNER,
                        tx=tx,
                    )
                    action = "requeued"
                else:
                    failure = f"interrupted and cannot resume: {reason}"
                    transition(
                        log_,
                        run_id,
                        RunFailed(reason=failure, error_type="interrupted"),
                        actor=Actor.RUNNER,
                        reason=failure,
                        tx=tx,
                    )
                    action = "failed"
        except IllegalTransition as error:
            log.warning("sweeper skipped %s: %s", run_id, error)
            continue
        recovered.append(Recovered(run_id, action, pgid))
    return recovered
