"""In-process fan-out of committed events to live subscribers.

Writers only *notify* the hub after they commit; one pump thread then reads the new
events from the database in global-cursor order and hands them to every subscriber. Reading
back from the database (rather than forwarding what the writer holds) gives one ordered,
exactly-once stream whether an event was committed by this process or, once a watcher calls
:meth:`EventHub.notify` for them, by another one.

Each subscriber has a bounded queue. A subscriber that falls behind is never blocked on and
never silently dropped: its queue is cleared and it resumes from the database at its own
cursor. Subscribers wait on a condition variable (threads) or a future (asyncio), not by
polling the database.

The pump hands each subscriber a whole page at once (one lock round per subscriber per page)
and wakes the asyncio consumers of one event loop with a single thread-safe callback per
page, so the cost of a commit grows with the number of subscribers only by a few list
operations each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from app.wire.events import StoredEvent

log = logging.getLogger(__name__)

#: Seconds the pump waits before reading again after a failed read.
PUMP_RETRY_S = 0.2

#: Reads committed events: (after_cursor, run_id or None, after_seq, limit) -> events.
EventReader = Callable[[int, str | None, int, int], list[StoredEvent]]

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[bool]"]


def _resolve(waiters: list[asyncio.Future[bool]]) -> None:
    """Run on a consumer's event loop: wake every waiter of one pump page."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(True)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Subscription:
    """A live, gap-free, duplicate-free stream of events for one run or for all runs.

    For a run-scoped subscription the cursor is the run's ``seq``; for a global one it is the
    global cursor (the event row id). Start ``after`` a cursor to resume a stream.

    The consumer is either *following* (taking what the pump queued) or *catching up*
    (reading pages from the database at its cursor). It starts catching up; it follows once
    a database read finds nothing newer **and** the queue has not overflowed since that read
    began (``_epoch`` counts overflows). That rule is what makes the hand-over exact: every
    event the pump dropped at an overflow was committed before the overflow, so a read begun
    after it sees the event; every event pumped after it is still in the queue.
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
        self._epoch = 0
        self._closed = False
        self._waiter: _Waiter | None = None
        self.lag_count = 0

    def _key(self, stored: StoredEvent) -> int:
        return stored.event.seq if self.run_id is not None else stored.cursor

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the pump's side ----------------------------------------------------------------------

    def _offer(self, items: list[StoredEvent]) -> _Waiter | None:
        """Called by the pump: queue a page of events, or mark this subscriber as lagging.

        Returns the asyncio waiter to wake, if a consumer is waiting on one (the pump wakes
        all waiters of one loop together).
        """
        with self._cond:
            if self._closed:
                return None
            if len(self._queue) + len(items) > self._queue_size:
                # Too far behind: drop the queue; the consumer re-reads from the database.
                self._queue.clear()
                self._catching_up = True
                self._epoch += 1
                self.lag_count += 1
            else:
                self._queue.extend(items)
            self._cond.notify_all()
            waiter, self._waiter = self._waiter, None
            return waiter

    # -- the consumer's side ------------------------------------------------------------------

    def _step(self) -> tuple[int, list[StoredEvent] | None]:
        """Under the lock: ``(epoch, None)`` when the consumer must read the database first,
        else ``(epoch, items)`` with whatever is queued (maybe nothing)."""
        if self._catching_up:
            return self._epoch, None
        items = list(self._queue)
        self._queue.clear()
        return self._epoch, items

    def _caught_up(self, batch: list[StoredEvent], epoch: int) -> list[StoredEvent]:
        """Account for a catch-up read begun at ``epoch``; returns the events to hand out."""
        if batch:
            self.cursor = self._key(batch[-1])
            return batch
        with self._cond:
            if self._epoch == epoch:
                self._catching_up = False
        return []

    def _fresh(self, items: list[StoredEvent]) -> list[StoredEvent]:
        fresh = [item for item in items if self._key(item) > self.cursor]
        if fresh:
            self.cursor = self._key(fresh[-1])
        return fresh

    def _read(self) -> list[StoredEvent]:
        return self._hub.read(self.cursor, self.run_id, self._page_size)

    def get(self, timeout: float | None = None) -> list[StoredEvent]:
        """Return the next events after the cursor, waiting up to ``timeout`` seconds.

        Returns an empty list on timeout or when the subscription is closed.
        """
        waited = False
        while True:
            with self._cond:
                epoch, items = self._step()
                if items is not None and not items:
                    if self._closed or waited:
                        return []
                    self._cond.wait(timeout)
                    waited = True
                    continue
            if items is None:
                caught = self._caught_up(self._read(), epoch)
                if caught:
                    return caught
                continue
            fresh = self._fresh(items)
            if fresh:
                return fresh

    async def aget(self, timeout: float | None = None) -> list[StoredEvent]:
        """Like :meth:`get`, for asyncio consumers: waits without holding a thread.

        Catch-up pages are read from the database on a worker thread, so a consumer far
        behind never stalls the event loop (and the other consumers on it).
        """
        loop = asyncio.get_running_loop()
        waited = False
        while True:
            with self._cond:
                epoch, items = self._step()
                waiter: asyncio.Future[bool] | None = None
                if items is not None and not items:
                    if self._closed or waited:
                        return []
                    waiter = loop.create_future()
                    self._waiter = (loop, waiter)
            if waiter is not None:
                waited = True
                expiry = None if timeout is None else loop.call_later(timeout, _expire, waiter)
                try:
                    await waiter
                finally:
                    if expiry is not None:
                        expiry.cancel()
                    with self._cond:
                        if self._waiter is not None and self._waiter[1] is waiter:
                            self._waiter = None
                continue
            if items is None:
                caught = self._caught_up(await asyncio.to_thread(self._read), epoch)
                if caught:
                    return caught
                continue
            fresh = self._fresh(items)
            if fresh:
                return fresh

    def __iter__(self) -> Iterator[StoredEvent]:
        """Yield events forever (until :meth:`close`)."""
        while not self._closed:
            yield from self.get(timeout=1.0)

    def wake(self) -> None:
        """Wake a consumer blocked in :meth:`get` (it returns what it has, maybe nothing)."""
        with self._cond:
            self._cond.notify_all()
            waiter, self._waiter = self._waiter, None
        _wake([waiter])

    def close(self) -> None:
        """Stop the subscription and release a waiting consumer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiter, self._waiter = self._waiter, None
        _wake([waiter])
        self._hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wake(waiters: list[_Waiter | None]) -> None:
    """Wake asyncio waiters from any thread: one callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[bool]]] = {}
    for entry in waiters:
        if entry is not None:
            by_loop.setdefault(entry[0], []).append(entry[1])
    for loop, futures in by_loop.items():
        # RuntimeError: the consumer's loop has closed, so there is nobody to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, futures)


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
            if not self._subscribers:
                # Nobody listened, so the pump stood still: skip what was committed
                # meanwhile (the new subscriber reads that from the database itself)
                # instead of pumping it to nobody.
                self._pump_cursor = max(self._pump_cursor, self._latest_cursor())
            if self._pump is None:
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
                after = self._pump_cursor
            while True:
                try:
                    batch = self._read(after, None, 0, self._page_size)
                except Exception:
                    # A failed read (I/O error, a database being swapped under us) must not
                    # kill the pump and starve every subscriber: retry shortly.
                    log.exception("event hub: reading new events failed; retrying")
                    time.sleep(PUMP_RETRY_S)
                    with self._lock:
                        self._dirty = True
                    break
                if not batch:
                    break
                after = batch[-1].cursor
                with self._lock:
                    self._pump_cursor = max(self._pump_cursor, after)
                    subscribers = list(self._subscribers)
                self._deliver(batch, subscribers)

    @staticmethod
    def _deliver(batch: list[StoredEvent], subscribers: list[Subscription]) -> None:
        by_run: dict[str, list[StoredEvent]] = {}
        for stored in batch:
            by_run.setdefault(stored.event.run_id, []).append(stored)
        waiters = []
        for subscription in subscribers:
            items = batch if subscription.run_id is None else by_run.get(subscription.run_id)
            if items:
                waiters.append(subscription._offer(items))
        _wake(waiters)
