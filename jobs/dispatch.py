"""Turning "this run is queued" into a queue message, from one place.

The dispatcher follows the event log: whenever a run becomes ``queued`` (spawned, resumed,
re-queued after an interruption) — in this process or, through the data_version watcher,
in another — it enqueues the run. At start it enqueues every run the database says is
queued, so messages lost with a crashed queue are recreated from the truth.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from app.clock import format_ts, utc_now
from db.connection import raw_connection
from db.eventlog import EventLog
from db.hub import Subscription
from jobs.queue import RunQueue

log = logging.getLogger(__name__)

#: Event types after which a run may be in state ``queued``.
QUEUEING_EVENTS = frozenset({"run_queued", "run_resumed"})


class Dispatcher:
    """A thread that enqueues runs as they become queued."""

    def __init__(self, log_: EventLog, queue: RunQueue) -> None:
        self._log = log_
        self._queue = queue
        self._thread: threading.Thread | None = None
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Subscribe first, then enqueue what is already queued (so nothing falls between)."""
        subscription = self._log.subscribe(after=self._log.latest_cursor())
        self._subscription = subscription
        for (run_id,) in (
            raw_connection(self._log.db)
            .execute("SELECT id FROM run WHERE state = 'queued' ORDER BY created_at")
            .fetchall()
        ):
            self._queue.enqueue(run_id)
        self._thread = threading.Thread(target=self._follow, name="dispatcher", daemon=True)
        self._thread.start()

    def redispatch_stale(self, older_than_s: float) -> int:
        """Enqueue again runs that have sat queued for a while (a message may have been lost,
        e.g. with a worker killed between taking it and claiming the run). Returns how many."""
        cutoff = format_ts(utc_now() - timedelta(seconds=older_than_s))
        rows = (
            raw_connection(self._log.db)
            .execute("SELECT id FROM run WHERE state = 'queued' AND updated_at < ?", (cutoff,))
            .fetchall()
        )
        if not rows or self._queue.huey.pending_count() >= len(rows):
            return 0  # enough messages are waiting already; do not pile up duplicates
        for (run_id,) in rows:
            self._queue.enqueue(run_id)
        return len(rows)

    def stop(self) -> None:
        """Stop following the log."""
        if self._subscription is not None:
            self._subscription.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self) -> None:
        assert self._subscription is not None
        conn = None
        for stored in self._subscription:
            if stored.event.type not in QUEUEING_EVENTS:
                continue
            try:
                conn = conn or raw_connection(self._log.db)
                row = conn.execute(
                    "SELECT state FROM run WHERE id = ?", (stored.event.run_id,)
                ).fetchone()
                if row is not None and row[0] == "queued":
                    self._queue.enqueue(stored.event.run_id)
            except Exception:
                log.exception("could not enqueue %s", stored.event.run_id)
