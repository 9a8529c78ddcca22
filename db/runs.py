"""Runs: creation, the one transition function, and reading them back.

:func:`transition` is the only code that changes ``run.state``. It reads the state under the
write lock, looks the event up in ``db.lifecycle.TRANSITIONS``, and writes the new state and
the event in the same transaction, so the state column and the event log can never disagree.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from app.clock import now_ts
from app.files import write_private_json
from app.home import Home
from app.ids import new_id
from app.redact import redact
from app.wire.events import Actor, Payload, RunQueued
from app.wire.runs import RunSummary
from db.connection import raw_connection
from db.eventlog import EventLog, Tx, UnknownRun
from db.lifecycle import INITIAL_STATE, RunState, next_state

RUN_SUBDIRS = ("artifacts", "scratch", "logs")
_RUN_COLUMNS = (
    "id, state, engine, task, repo, task_id, parent_run_id, created_at, updated_at,"
    " last_seq, state_reason"
)


def _summary(row: tuple[Any, ...]) -> RunSummary:
    names = [name.strip() for name in _RUN_COLUMNS.split(",")]
    return RunSummary(**dict(zip(names, row, strict=True)))


def get_run(log: EventLog, run_id: str) -> RunSummary:
    """Return one run; raises UnknownRun."""
    row = (
        raw_connection(log.db)
        .execute(f"SELECT {_RUN_COLUMNS} FROM run WHERE id = ?", (run_id,))  # noqa: S608
        .fetchone()
    )
    if row is None:
        raise UnknownRun(run_id)
    return _summary(row)


def list_runs(
    log: EventLog,
    *,
    states: Sequence[str] = (),
    parent_run_id: str | None = None,
    limit: int = 50,
    before: tuple[str, str] | None = None,
) -> list[RunSummary]:
    """Runs newest first, optionally filtered; ``before`` = (created_at, id) of the last seen."""
    clauses: list[str] = []
    params: list[Any] = []
    if states:
        clauses.append(f"state IN ({', '.join('?' for _ in states)})")
        params.extend(states)
    if parent_run_id is not None:
        clauses.append("parent_run_id = ?")
        params.append(parent_run_id)
    if before is not None:
        clauses.append("(created_at, id) < (?, ?)")
        params.extend(before)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = (
        raw_connection(log.db)
        .execute(
            f"SELECT {_RUN_COLUMNS} FROM run{where}"  # noqa: S608 - fixed columns, bound values
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        .fetchall()
    )
    return [_summary(row) for row in rows]


def create_run(
    log: EventLog,
    *,
    task: str,
    engine: str,
    actor: Actor,
    repo: Path | None = None,
    parent_run_id: str | None = None,
    task_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_sources: Mapping[str, str] | None = None,
    run_id: str | None = None,
    on_create: Callable[[Tx, str], None] | None = None,
) -> RunSummary:
    """Create a queued run: its directory, its row and its ``run_queued`` event, all or nothing.

    Everything a worker needs (directory, ``manifest.json``, whatever ``on_create`` adds inside
    the transaction, e.g. the delegation token) exists before the commit makes the run
    visible, since a worker may claim it the moment it is committed. The directory is
    removed again if anything fails, so neither a row without a directory nor a directory
    without a row is left behind.
    """
    run_id = run_id or new_id("run")
    home = log.home
    run_dir = home.run_dir(run_id)
    run_dir.mkdir(parents=True, mode=0o700)
    try:
        for name in RUN_SUBDIRS:
            (run_dir / name).mkdir(mode=0o700)
        ts = now_ts()
        write_manifest(
            home,
            RunSummary(
                id=run_id,
                state=INITIAL_STATE.value,
                engine=engine,
                task=task,
                repo=str(repo) if repo else None,
                task_id=task_id,
                parent_run_id=parent_run_id,
                created_at=ts,
                updated_at=ts,
                last_seq=1,
                state_reason=None,
            ),
            config or {},
            config_sources or {},
        )
        with log.transaction() as tx:
            if (
                parent_run_id is not None
                and not tx.execute("SELECT 1 FROM run WHERE id = ?", (parent_run_id,)).fetchone()
            ):
                raise UnknownRun(parent_run_id)
            tx.execute(
                "INSERT INTO run (id, task_id, parent_run_id, state, engine, task, repo,"
                " created_at, updated_at, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    run_id,
                    task_id,
                    parent_run_id,
                    INITIAL_STATE.value,
                    engine,
                    task,
                    str(repo) if repo else None,
                    ts,
                    ts,
                ),
            )
            tx.append(
                run_id,
                RunQueued(engine=engine, task_preview=task[:200]),
                actor=actor,
                state_change=True,
            )
            if on_create is not None:
                on_create(tx, run_id)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return get_run(log, run_id)


def transition(
    log: EventLog,
    run_id: str,
    payload: Payload,
    *,
    actor: Actor,
    reason: str | None = None,
    checkpoint: str | None = None,
    tx: Tx | None = None,
) -> RunState:
    """Apply the state-changing event ``payload`` to a run and return the new state.

    Raises ``IllegalTransition`` (nothing written) when the run's state does not allow the
    event, ``UnknownRun`` when there is no such run. Pass ``tx`` to join a larger transaction.
    """
    if tx is None:
        with log.transaction() as own:
            return transition(
                log, run_id, payload, actor=actor, reason=reason, checkpoint=checkpoint, tx=own
            )
    row = tx.execute("SELECT state FROM run WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise UnknownRun(run_id)
    new_state = next_state(run_id, RunState(row[0]), payload.event_type)
    tx.execute(
        "UPDATE run SET state = ?, state_reason = ?, checkpoint = coalesce(?, checkpoint)"
        " WHERE id = ?",
        (new_state.value, reason, checkpoint, run_id),
    )
    tx.append(run_id, payload, actor=actor, state_change=True)
    return new_state


def write_manifest(
    home: Home, run: RunSummary, config: Mapping[str, Any], sources: Mapping[str, str]
) -> Path:
    """Write ``runs/<id>/manifest.json`` atomically (0600): the summary and effective config."""
    path = home.run_dir(run.id) / "manifest.json"
    document = {
        "manifest_version": 1,
        "run": {
            "id": run.id,
            "engine": run.engine,
            "task": run.task,
            "repo": run.repo,
            "task_id": run.task_id,
            "parent_run_id": run.parent_run_id,
            "created_at": run.created_at,
        },
        "config": dict(config),
        "config_sources": dict(sources),
    }
    write_private_json(path, redact(document))
    return path
