"""Notices commits made by other processes (a stand-alone worker, the CLI) cheaply.

SQLite's ``PRAGMA data_version`` changes on a connection whenever another connection has
committed. Asking it costs no table read, so a dedicated connection can ask every few
milliseconds for a few microseconds each; a change wakes the event hub, whose pump then
reads the new events once, in commit order.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class DataVersionWatcher:
    """A daemon thread that calls ``on_change`` after any other connection commits."""

    def __init__(self, db_path: Path, on_change: Callable[[], None], interval_s: float = 0.005):
        self._db_path = db_path
        self._on_change = on_change
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="data-version", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(str(self._db_path), isolation_level=None, check_same_thread=False)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while not self._stop.wait(self._interval_s):
                try:
                    current = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error as error:  # a locked or busy moment: try again next tick
                    log.debug("data_version check failed: %s", error)
                    continue
                if current != last:
                    last = current
                    self._on_change()
        finally:
            conn.close()
