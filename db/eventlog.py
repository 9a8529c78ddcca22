"""The event log: the one writer of events, their mirror, their subscribers and their readers.

Writing: :meth:`EventLog.transaction` opens a ``BEGIN IMMEDIATE`` transaction and yields a
:class:`Tx` whose :meth:`Tx.append` assigns the run's next ``seq`` (``run.last_seq + 1``,
read and written under the database write lock, so contiguous and unique across threads and
processes). After the outermost commit the new lines are appended to
``runs/<id>/events.jsonl`` and the in-process hub is notified. A rolled-back transaction
leaves no trace anywhere. :meth:`EventLog.append` is the one-event shorthand.

The hot path uses parameterised SQL on the connection Peewee manages rather than building
model queries: the schema and the models are Peewee's; the per-event cost is SQLite's.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from peewee import SqliteDatabase

from app.clock import now_ts
from app.home import Home
from app.redact import redact
from app.wire.events import EVENT_PAYLOADS, Actor, EventEnvelope, Payload, StoredEvent
from db.connection import raw_connection
from db.hub import EventHub, Subscription
from db.lifecycle import STATE_EVENT_TYPES
from db.mirror import JsonlMirror, MirrorState, mirror_is_sound

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_payload = msgspec.json.Decoder(dict[str, Any]).decode

_SELECT = (
    "SELECT e.id, e.seq, e.ts, e.run_id, r.task_id, r.parent_run_id, e.type, e.actor, e.payload"
    " FROM event e JOIN run r ON r.id = e.run_id"
)


class UnknownRun(LookupError):
    """An event was written for a run id that does not exist."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")


def _envelope_from_row(row: tuple[Any, ...]) -> StoredEvent:
    cursor, seq, ts, run_id, task_id, parent_run_id, type_, actor, payload = row
    return StoredEvent(
        cursor,
        EventEnvelope(
            seq=seq,
            ts=ts,
            run_id=run_id,
            task_id=task_id,
            parent_run_id=parent_run_id,
            type=type_,
            actor=Actor(actor),
            payload=_decode_payload(payload),
        ),
    )


def encode_line(envelope: EventEnvelope) -> bytes:
    """The ``events.jsonl`` line (and SSE data) of an envelope, newline included."""
    return _encode(envelope) + b"\n"


@dataclass
class Tx:
    """A write transaction of the event log (use :meth:`EventLog.transaction`)."""

    conn: sqlite3.Connection
    appended: list[StoredEvent] = field(default_factory=list)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Run a statement inside this transaction (for state the event goes with)."""
        return self.conn.execute(sql, params)

    def append(
        self, run_id: str, payload: Payload, *, actor: Actor, state_change: bool = False
    ) -> EventEnvelope:
        """Append one event to ``run_id``; its seq is the run's next, assigned here.

        ``state_change`` is set only by ``db.runs``: state-changing event types may not be
        written without the state change they stand for.
        """
        event_type = payload.event_type
        if event_type in STATE_EVENT_TYPES and not state_change:
            raise ValueError(
                f"{event_type!r} changes run state: write it with db.runs.transition(), "
                "not EventLog.append()"
            )
        ts = now_ts()
        row = self.conn.execute(
            "UPDATE run SET last_seq = last_seq + 1, updated_at = ? WHERE id = ?"
            " RETURNING last_seq, task_id, parent_run_id",
            (ts, run_id),
        ).fetchone()
        if row is None:
            raise UnknownRun(run_id)
        seq, task_id, parent_run_id = row
        body = redact(msgspec.to_builtins(payload))
        cursor = self.conn.execute(
            "INSERT INTO event (run_id, seq, ts, type, actor, payload) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, seq, ts, event_type, actor.value, _encode(body).decode()),
        ).lastrowid
        envelope = EventEnvelope(
            seq=seq,
            ts=ts,
            run_id=run_id,
            task_id=task_id,
            parent_run_id=parent_run_id,
            type=event_type,
            actor=actor,
            payload=body,
        )
        assert cursor is not None
        self.appended.append(StoredEvent(cursor, envelope))
        return envelope


@dataclass(frozen=True)
class ReconcileReport:
    """What :meth:`EventLog.reconcile` found and did."""

    runs_checked: int
    mirrors_repaired: list[str]


class EventLog:
    """Appends, mirrors, publishes and reads the events of every run in one home."""

    def __init__(self, db: SqliteDatabase, home: Home) -> None:
        self.db = db
        self.home = home
        self.mirror = JsonlMirror(home.events_mirror, self._read_lines)
        self.hub = EventHub(self._read_events, self.latest_cursor)

    def close(self) -> None:
        """Stop the hub and close mirror file handles (the database stays open)."""
        self.hub.close()
        self.mirror.close()

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Open (or join) a write transaction; events appended in it publish after commit."""
        with self.db.atomic():
            tx = Tx(raw_connection(self.db))
            yield tx
            if tx.appended:
                appended = tx.appended
                self.db.after_commit(lambda: self._after_commit(appended))

    def append(self, run_id: str, payload: Payload, *, actor: Actor) -> EventEnvelope:
        """Append one event in its own transaction and return its envelope."""
        with self.transaction() as tx:
            return tx.append(run_id, payload, actor=actor)

    def append_many(self, items: Iterable[tuple[str, Payload, Actor]]) -> list[EventEnvelope]:
        """Append a batch of ``(run_id, payload, actor)`` in one transaction."""
        with self.transaction() as tx:
            return [tx.append(run_id, payload, actor=actor) for run_id, payload, actor in items]

    def _after_commit(self, appended: list[StoredEvent]) -> None:
        by_run: dict[str, list[tuple[int, bytes]]] = {}
        for stored in appended:
            envelope = stored.event
            by_run.setdefault(envelope.run_id, []).append((envelope.seq, encode_line(envelope)))
        for run_id, lines in by_run.items():
            try:
                self.mirror.append(run_id, lines)
            except OSError as error:
                # The commit stands; the reconciler (or the next append) repairs the mirror.
                log.error("events.jsonl mirror of %s not written: %s", run_id, error)
        self.hub.notify()

    # -- reading -----------------------------------------------------------------------------

    def page(self, run_id: str, *, after: int = 0, limit: int = 100) -> list[EventEnvelope]:
        """Events of one run with ``seq > after``, in seq order, at most ``limit``."""
        return [stored.event for stored in self._read_events(0, run_id, after, limit)]

    def page_all(self, *, after_cursor: int = 0, limit: int = 100) -> list[StoredEvent]:
        """Events of every run after a global cursor, in commit order."""
        return self._read_events(after_cursor, None, 0, limit)

    def latest_cursor(self) -> int:
        """The global cursor of the newest event (0 when there is none)."""
        row = raw_connection(self.db).execute("SELECT max(id) FROM event").fetchone()
        return int(row[0] or 0)

    def last_seq(self, run_id: str) -> int:
        """The seq of a run's newest event; raises UnknownRun for an unknown run."""
        row = (
            raw_connection(self.db)
            .execute("SELECT last_seq FROM run WHERE id = ?", (run_id,))
            .fetchone()
        )
        if row is None:
            raise UnknownRun(run_id)
        return int(row[0])

    def subscribe(self, *, run_id: str | None = None, after: int = 0) -> Subscription:
        """Follow new events live (catching up from ``after`` first); close it when done."""
        return self.hub.subscribe(run_id=run_id, after=after)

    def _read_events(
        self, after_cursor: int, run_id: str | None, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        conn = raw_connection(self.db)
        if run_id is None:
            rows = conn.execute(
                f"{_SELECT} WHERE e.id > ? ORDER BY e.id LIMIT ?", (after_cursor, limit)
            ).fetchall()
        else:
            rows = conn.execute(
                f"{_SELECT} WHERE e.run_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
                (run_id, after_seq, limit),
            ).fetchall()
        return [_envelope_from_row(row) for row in rows]

    def _read_lines(self, run_id: str, after_seq: int, upto_seq: int) -> list[tuple[int, bytes]]:
        rows = (
            raw_connection(self.db)
            .execute(
                f"{_SELECT} WHERE e.run_id = ? AND e.seq > ? AND e.seq <= ? ORDER BY e.seq",
                (run_id, after_seq, upto_seq),
            )
            .fetchall()
        )
        return [(row[1], encode_line(_envelope_from_row(row).event)) for row in rows]

    # -- reconciling the mirror ----------------------------------------------------------------

    def reconcile(self, run_id: str | None = None, *, verify: bool = False) -> ReconcileReport:
        """Re-sync ``events.jsonl`` mirrors from the database.

        A missing or truncated mirror is completed, a torn last line is cut, a mirror ahead
        of the database is cut back. With ``verify`` every line's seq is checked (a damaged
        middle makes the mirror be rewritten whole); otherwise only the tail is read, which
        is what start-up does.
        """
        conn = raw_connection(self.db)
        if run_id is None:
            runs = conn.execute("SELECT id, last_seq FROM run ORDER BY id").fetchall()
        else:
            runs = [(run_id, self.last_seq(run_id))]
        repaired: list[str] = []
        for rid, last_seq in runs:
            path = self.home.events_mirror(rid)
            if last_seq == 0 and not path.exists():
                continue
            if verify and not mirror_is_sound(path):
                self.mirror.rewrite(rid, last_seq)
                repaired.append(rid)
                continue
            before = path.stat().st_size if path.exists() else -1
            state: MirrorState = self.mirror.sync(rid, last_seq)
            if state.repaired_tail or path.stat().st_size != before:
                repaired.append(rid)
        return ReconcileReport(runs_checked=len(runs), mirrors_repaired=repaired)


def payload_type(event_type: str) -> type[Payload]:
    """The payload Struct registered for an event type."""
    return EVENT_PAYLOADS[event_type]
