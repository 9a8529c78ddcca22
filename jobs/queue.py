"""The Huey queue: one task, ``execute_run(run_id)``, and consumers that pick it up at once.

The database is the source of truth, not the queue: a queue message only says "look at this
run"; the worker claims the run with a lease and does nothing if it is not ``queued``. So a
message delivered twice, or a message for a run cancelled meanwhile, is harmless.

Huey's workers poll an idle queue with exponential backoff. Here they wait on an event
instead, set by an in-process enqueue or by a ``PRAGMA data_version`` change of the queue
database (an enqueue from another process), so a spawned run starts within milliseconds
without a tight poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from huey import Huey, SqliteHuey
from huey.consumer import Consumer, Worker

from app.home import Home

log = logging.getLogger(__name__)

TASK_NAME = "execute_run"
#: Longest a worker sleeps on an idle queue with no wake-up (a safety net, not the path).
IDLE_POLL_S = 1.0


class QueueConfigError(ValueError):
    """The configured queue backend cannot be used; the message says how to fix it."""


def build_huey(home: Home, backend: str, url: str = "") -> Huey:
    """The Huey instance for ``queue.backend`` (sqlite in the home by default)."""
    if backend == "sqlite":
        return SqliteHuey(
            name="codex-delegation",
            filename=str(home.queue_db_path),
            results=False,
            store_none=False,
            utc=True,
            fsync=False,
            timeout=10,
        )
    if backend == "redis":
        try:
            from huey import RedisHuey
        except ImportError:  # pragma: no cover - huey always exports it
            raise QueueConfigError("RedisHuey is unavailable") from None
        if not url:
            raise QueueConfigError("queue.backend = redis needs queue.url (redis://host:port/db)")
        try:
            return RedisHuey(name="codex-delegation", url=url, results=False)
        except ImportError:
            raise QueueConfigError(
                "queue.backend = redis needs the `redis` package: pip install redis"
            ) from None
    if backend == "postgres":
        if not url:
            raise QueueConfigError(
                "queue.backend = postgres needs queue.url (postgresql://user@host/db)"
            )
        from huey.contrib.sql_huey import SqlHuey

        try:
            return SqlHuey(name="codex-delegation", database=url, results=False)
        except Exception as error:
            raise QueueConfigError(f"queue.backend = postgres: {error}") from None
    raise QueueConfigError(f"unknown queue.backend {backend!r}; use sqlite, redis or postgres")


class Wakeup:
    """Wakes every idle worker when work may have arrived, without losing a wake-up.

    A generation counter instead of an event: a worker notes the generation before it looks
    at the queue, and sleeps only while it is unchanged, so a wake-up that lands between an
    empty dequeue and the sleep is not lost, and one waking worker cannot swallow it for the
    others.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def set(self) -> None:
        """Wake every waiting worker."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    @property
    def generation(self) -> int:
        return self._generation

    def wait_change(self, since: int, timeout: float) -> bool:
        """Sleep until the generation moves past ``since`` (True) or ``timeout`` (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation != since, timeout)


#: What this process does with a run message (set by the RunQueue the process hosts).
_EXECUTOR: Callable[[str], Any] | None = None


def execute_run_message(run_id: str) -> None:
    """The Huey task: hand the run to this process's executor (the run loop).

    A module-level function so that its registered name is the same in every process.
    """
    if _EXECUTOR is None:
        raise RuntimeError("this process hosts no run executor")
    _EXECUTOR(run_id)


class RunQueue:
    """The queue of one process: enqueue runs, and host a consumer that executes them."""

    def __init__(self, huey: Huey, execute: Callable[[str], Any]) -> None:
        global _EXECUTOR  # noqa: PLW0603 - one executor per process, like the huey registry
        _EXECUTOR = execute
        self.huey = huey
        self.wake = Wakeup()
        self._task = huey.task(name=TASK_NAME, retries=0)(execute_run_message)
        self._consumer: _Consumer | None = None

    def enqueue(self, run_id: str) -> None:
        """Ask a worker to look at ``run_id`` (call after the run's commit)."""
        self._task(run_id)
        self.wake.set()

    def start_consumer(self, workers: int) -> None:
        """Start thread workers in this process (no signal handlers, no scheduler)."""
        consumer = _Consumer(
            self.huey,
            wake=self.wake,
            workers=workers,
            periodic=False,
            initial_delay=IDLE_POLL_S,
            max_delay=IDLE_POLL_S,
            backoff=1.0,
            worker_type="thread",
            check_worker_health=False,
        )
        consumer.start()
        self._consumer = consumer

    def stop_consumer(self, timeout: float = 10.0) -> None:
        """Stop the workers, letting running tasks reach a boundary for up to ``timeout``."""
        if self._consumer is not None:
            self._consumer.shutdown_timeout = timeout
            self.wake.set()
            self._consumer.stop(graceful=True)
            self._consumer = None

    def run_consumer_forever(self, workers: int, stop: threading.Event) -> None:
        """Host a consumer until ``stop`` is set (for `app worker`)."""
        self.start_consumer(workers)
        try:
            stop.wait()
        finally:
            self.stop_consumer()


class _WakeableWorker(Worker):  # type: ignore[misc]
    """A Huey worker that sleeps on :class:`Wakeup` instead of polling with backoff."""

    wake: Wakeup
    _seen = 0

    def loop(self, now: Any = None) -> None:
        self._seen = self.wake.generation
        super().loop(now)

    def sleep(self) -> None:
        self.wake.wait_change(self._seen, self.delay)


class _Consumer(Consumer):  # type: ignore[misc]
    """Huey's consumer for hosting inside another process: no signal handlers."""

    def __init__(self, huey: Huey, *, wake: Wakeup, **kwargs: Any) -> None:
        self._wake = wake
        super().__init__(huey, **kwargs)

    def _create_worker(self) -> Worker:
        worker = _WakeableWorker(
            huey=self.huey,
            stop_flag=self.stop_flag,
            default_delay=self.default_delay,
            max_delay=self.max_delay,
            backoff=self.backoff,
            max_tasks=self.max_tasks,
        )
        worker.wake = self._wake
        return worker

    def _set_signal_handlers(self) -> None:
        """The host process owns its signals."""
