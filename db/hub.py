"""In-process fan-out of committed events to live subscribers.

Writers only *notify* the hub after they commit; one pump thread then reads the new
events from the database in global-cursor order and hands them to every subscriber. Reading
back from the database (rather than forwarding what the writer holds) gives one ordered,
exactly-once stream whether an event was committed by this process or, once a watcher calls
:meth:`EventHub.notify` for them, by another one.

Each subscriber has a bounded queue. A subscriber that falls behind is never blocked on and
never silently dropped: its queue is cleared and it resumes from the database at its own
cursor. Subscribers wait on a condition variable, not by polling the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator

from app.wire.events import StoredEvent

#: Reads committed events: (after_cursor, run_id or None, after_seq, limit) -> events.
EventReader = Callable[[int, str | None, int, int], list[StoredEvent]]


class Subscription:
    """A live, gap-free, duplicate-free stream of events for one run or for all runs.

    For a run-scoped subscription the cursor is the run's ``seq``; for a global one it is the
    global cursor (the event row id). Start ``after`` a cursor to resume a stream.
    """

    def __init__(
        self, hub: EventHub, run_id: str | None, after: int, queue_size: int, page_size: int
    ) -> None:
        self.run_id = run_id
        self.cursor = after
        self._hub = hub
        self._queue: deque[StoredEvent] = deque()
        self._queue_size = queue_size
        self._page_size = page_size
        self._cond = threading.Condition()
        self._catching_up = True
        self._closed = False
        self._waker: asyncio.Event | None = None
        self._waker_loop: asyncio.AbstractEventLoop | None = None
        self.lag_count = 0

    def _key(self, stored: StoredEvent) -> int:
        return stored.event.seq if self.run_id is not None else stored.cursor

    def _offer(self, stored: StoredEvent) -> None:
        """Called by the pump: queue an event, or mark this subscriber as lagging."""
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self._queue_size:
                # Too far behind: drop the queue and let the consumer re-read from the database.
                self._queue.clear()
                self._catching_up = True
                self.lag_count += 1
            else:
                self._queue.append(stored)
            self._cond.notify_all()
            self._wake_async()

    def _wake_async(self) -> None:
        # Called with self._cond held.
        if self._waker is not None and self._waker_loop is not None:
            waker, self._waker = self._waker, None
            # RuntimeError: the consumer's loop has closed, so there is nobody to wake.
            with contextlib.suppress(RuntimeError):
                self._waker_loop.call_soon_threadsafe(waker.set)

    def get(self, timeout: float | None = None) -> list[StoredEvent]:
        """Return the next events after the cursor, waiting up to ``timeout`` seconds.

        Returns an empty list on timeout or when the subscription is closed.
        """
        while True:
            with self._cond:
                catching_up = self._catching_up
            if catching_up:
                batch = self._hub.read(self.cursor, self.run_id, self._page_size)
                if batch:
                    self.cursor = self._key(batch[-1])
                    return batch
                with self._cond:
                    self._catching_up = False
            with self._cond:
                if not self._queue and not self._catching_up and not self._closed:
                    self._cond.wait(timeout)
                if self._catching_up:
                    continue
                items = list(self._queue)
                self._queue.clear()
            fresh = [item for item in items if self._key(item) > self.cursor]
            if fresh:
                self.cursor = self._key(fresh[-1])
            if fresh or not items:
                return fresh

    def _take(self) -> tuple[list[StoredEvent], bool] | None:
        """Drain the queue: (items, closed), or None when the consumer must catch up first."""
        with self._cond:
            if self._catching_up:
                return None
            items = list(self._queue)
            self._queue.clear()
            return items, self._closed

    async def aget(self, timeout: float | None = None) -> list[StoredEvent]:
        """Like :meth:`get`, for asyncio consumers: waits without holding a thread.

        Catch-up pages are read from the database on the calling thread (short SQLite reads).
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                catching_up = self._catching_up
            if catching_up:
                batch = self._hub.read(self.cursor, self.run_id, self._page_size)
                if batch:
                    self.cursor = self._key(batch[-1])
                    return batch
                with self._cond:
                    self._catching_up = False
            with self._cond:
                if self._catching_up:
                    continue
                if not self._queue and not self._closed:
                    waker = asyncio.Event()
                    self._waker, self._waker_loop = waker, loop
                else:
                    waker = None
            if waker is not None:
                try:
                    await asyncio.wait_for(waker.wait(), timeout)
                except TimeoutError:
                    with self._cond:
                        self._waker = None
                        if not self._queue and not self._catching_up:
                            return []
            taken = self._take()
            if taken is None:
                continue
            items, closed = taken
            fresh = [item for item in items if self._key(item) > self.cursor]
            if fresh:
                self.cursor = self._key(fresh[-1])
                return fresh
            if closed:
                return []

    def __iter__(self) -> Iterator[StoredEvent]:
        """Yield events forever (until :meth:`close`)."""
        while not self._closed:
            yield from self.get(timeout=1.0)

    def wake(self) -> None:
        """Wake a consumer blocked in :meth:`get` (it returns what it has, maybe nothing)."""
        with self._cond:
            self._cond.notify_all()
            self._wake_async()

    def close(self) -> None:
        """Stop the subscription and release a waiting consumer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._wake_async()
        self._hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Owns the subscribers of one process and the pump thread that feeds them."""

    def __init__(
        self,
        read: EventReader,
        latest_cursor: Callable[[], int],
        *,
        queue_size: int = 10_000,
        page_size: int = 1_000,
    ) -> None:
        self._read = read
        self._latest_cursor = latest_cursor
        self._queue_size = queue_size
        self._page_size = page_size
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._dirty = False
        self._stopped = False
        self._pump: threading.Thread | None = None
        self._pump_cursor = 0

    def read(self, after: int, run_id: str | None, limit: int) -> list[StoredEvent]:
        """Read committed events after a cursor (seq for one run, global cursor for all)."""
        if run_id is None:
            return self._read(after, None, 0, limit)
        return self._read(0, run_id, after, limit)

    def subscribe(self, *, run_id: str | None = None, after: int = 0) -> Subscription:
        """Start a subscription that first catches up from ``after``, then follows live."""
        subscription = Subscription(self, run_id, after, self._queue_size, self._page_size)
        with self._lock:
            if self._pump is None:
                self._pump_cursor = self._latest_cursor()
                self._pump = threading.Thread(target=self._run_pump, name="event-hub", daemon=True)
                self._pump.start()
            self._subscribers.append(subscription)
        return subscription

    def notify(self) -> None:
        """Tell the hub that new events were committed (cheap; safe from any thread)."""
        if not self._subscribers:
            return
        with self._lock:
            self._dirty = True
            self._wakeup.notify()

    def close(self) -> None:
        """Stop the pump and close every subscription."""
        with self._lock:
            self._stopped = True
            subscribers = list(self._subscribers)
            self._wakeup.notify()
        for subscription in subscribers:
            subscription.close()
        if self._pump is not None:
            self._pump.join(timeout=5)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def _run_pump(self) -> None:
        while True:
            with self._lock:
                while not self._dirty and not self._stopped:
                    self._wakeup.wait()
                if self._stopped:
                    return
                self._dirty = False
            while True:
                batch = self._read(self._pump_cursor, None, 0, self._page_size)
                if not batch:
                    break
                self._pump_cursor = batch[-1].cursor
                with self._lock:
                    subscribers = list(self._subscribers)
                for stored in batch:
                    for subscription in subscribers:
                        if (
                            subscription.run_id is None
                            or subscription.run_id == stored.event.run_id
                        ):
                            subscription._offer(stored)
