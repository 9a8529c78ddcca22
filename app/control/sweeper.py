"""The control sweeper: a daemon thread that expires due questions and confirmations.

It sweeps once as soon as it starts (so deadlines that passed while the runner was down
take effect at once) and then every ``interval_s``. A sweep that fails is logged and the
next one runs as usual: one bad row or a passing database hiccup never stops expiry.
"""

from __future__ import annotations

import logging
import threading

from app.control.confirmations import ConfirmationService
from app.control.questions import QuestionService

logger = logging.getLogger(__name__)


class Sweeper:
    """Runs :meth:`sweep_once` on a daemon thread every ``interval_s`` seconds."""

    def __init__(
        self,
        *,
        questions: QuestionService,
        confirmations: ConfirmationService,
        interval_s: float,
    ) -> None:
        """Sweep ``questions`` and ``confirmations``; ``interval_s`` must be positive."""
        if not interval_s > 0:
            raise ValueError(f"the sweep interval must be > 0 seconds, not {interval_s!r}")
        self.questions = questions
        self.confirmations = confirmations
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """True while the sweeper thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the sweeper thread; raises RuntimeError if it is already running."""
        with self._lock:
            if self.running:
                raise RuntimeError("the sweeper is already running")
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="control-sweeper", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and wait for it (a sweep in progress finishes first)."""
        with self._lock:
            self._stop.set()
            thread = self._thread
            self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def sweep_once(self) -> int:
        """Expire due questions and confirmations now; returns how many expired.

        Each service is swept even when the other fails (the failure is logged).
        """
        count = 0
        for name, expire in (
            ("questions", self.questions.expire_due),
            ("confirmations", self.confirmations.expire_due),
        ):
            try:
                count += len(expire())
            except Exception:
                logger.exception("sweeping %s failed; trying again in %s s", name, self.interval_s)
        return count

    def _loop(self) -> None:
        db = self.questions.log.db
        try:
            while not self._stop.is_set():
                try:
                    expired = self.sweep_once()
                    if expired:
                        logger.info("sweeper expired %d question(s)/confirmation(s)", expired)
                except Exception:  # pragma: no cover - sweep_once already logs its failures
                    logger.exception("sweep failed; trying again in %s s", self.interval_s)
                self._stop.wait(self.interval_s)
        finally:
            # Peewee keeps one connection per thread: close this thread's before it ends.
            if not db.is_closed():
                db.close()
