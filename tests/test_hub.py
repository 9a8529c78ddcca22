"""The hub's hand-over between catching up and following, asyncio waiting, and pump start."""

from __future__ import annotations

import asyncio
import threading
import time

from app.wire.events import Actor, EventEnvelope, StepStarted, StoredEvent
from db.hub import EventHub
from db.runs import create_run
from db.store import Store


def _stored(cursor: int) -> StoredEvent:
    return StoredEvent(
        cursor,
        EventEnvelope(
            seq=cursor,
            ts="2026-01-01T00:00:00.000Z",
            run_id="run_x",
            task_id=None,
            parent_run_id=None,
            type="step_started",
            actor=Actor.WORKER,
            payload={"step": cursor, "kind": "k"},
        ),
    )


def test_overflow_during_a_catch_up_read_is_not_lost() -> None:
    """The pump overflows the queue while the consumer's catch-up read is in flight (its
    snapshot predates the overflowed events): the consumer must read again, not follow."""
    committed: list[StoredEvent] = []
    overflow_once: list[bool] = [True]
    hub: EventHub

    def read(after: int, run_id: str | None, after_seq: int, limit: int) -> list[StoredEvent]:
        snapshot = [s for s in committed if s.cursor > after][:limit]
        if overflow_once and overflow_once.pop():
            # Meanwhile three events commit and the pump offers them: 3 > queue size 2.
            fresh = [_stored(i) for i in (1, 2, 3)]
            committed.extend(fresh)
            hub._deliver(fresh, [subscription])
        return snapshot

    hub = EventHub(read, lambda: 0, queue_size=2)
    subscription = hub.subscribe(after=0)
    try:
        assert [s.cursor for s in subscription.get(timeout=1)] == [1, 2, 3]
        assert subscription.lag_count == 1
        committed.append(_stored(4))
        hub._deliver([committed[-1]], [subscription])
        assert [s.cursor for s in subscription.get(timeout=1)] == [4]
    finally:
        hub.close()


def test_async_consumers_follow_and_time_out(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)

    async def scenario() -> None:
        subscriptions = [store.log.subscribe(run_id=run.id, after=1) for _ in range(20)]
        try:
            # Nothing new: each waits, then times out with nothing.
            assert await asyncio.gather(*(s.aget(timeout=0.05) for s in subscriptions)) == [
                [] for _ in subscriptions
            ]
            waiting = [asyncio.create_task(s.aget(timeout=5)) for s in subscriptions]
            await asyncio.sleep(0.05)
            await asyncio.to_thread(
                store.log.append, run.id, StepStarted(step=1, kind="k"), actor=Actor.WORKER
            )
            results = await asyncio.gather(*waiting)
            assert [[s.event.seq for s in batch] for batch in results] == [[2]] * 20
        finally:
            for subscription in subscriptions:
                subscription.close()

    asyncio.run(scenario())


def test_async_catch_up_reads_off_the_event_loop(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    for step in range(2500):
        store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
    threads: set[int] = set()
    original = store.log.hub._read

    def recording_read(*args: object) -> list[StoredEvent]:
        threads.add(threading.get_ident())
        return original(*args)  # type: ignore[arg-type]

    store.log.hub._read = recording_read  # type: ignore[method-assign]

    async def scenario() -> list[int]:
        seqs: list[int] = []
        with store.log.subscribe(run_id=run.id) as subscription:
            while len(seqs) < 2501:
                seqs.extend(s.event.seq for s in await subscription.aget(timeout=1))
        return seqs

    loop_thread = threading.get_ident()  # asyncio.run runs the loop on this thread
    assert asyncio.run(scenario()) == list(range(1, 2502))
    assert threads and loop_thread not in threads


def test_closing_a_subscription_releases_an_async_waiter(store: Store) -> None:
    async def scenario() -> list[StoredEvent]:
        subscription = store.log.subscribe()
        waiter = asyncio.create_task(subscription.aget())
        await asyncio.sleep(0.05)
        subscription.close()
        return await asyncio.wait_for(waiter, 2)

    assert asyncio.run(scenario()) == []


def test_pump_skips_what_nobody_was_subscribed_for(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    store.log.subscribe().close()  # the pump exists; nobody listens
    for step in range(300):
        store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
    latest = store.log.latest_cursor()
    pumped_from: list[int] = []
    original = store.log.hub._read

    def recording_read(
        after: int, run_id: str | None, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        if threading.current_thread().name == "event-hub":
            pumped_from.append(after)
        return original(after, run_id, after_seq, limit)

    store.log.hub._read = recording_read  # type: ignore[method-assign]
    with store.log.subscribe(after=latest) as subscription:
        assert subscription.get(timeout=0.05) == []  # caught up: following the pump now
        store.log.append(run.id, StepStarted(step=300, kind="k"), actor=Actor.WORKER)
        received: list[StoredEvent] = []
        while not received:
            received = subscription.get(timeout=2)
    assert [s.cursor for s in received] == [latest + 1]
    assert pumped_from and min(pumped_from) >= latest


def test_pump_survives_a_failed_read() -> None:
    committed = [_stored(1)]
    failures = [RuntimeError("disk I/O error")]

    def read(after: int, run_id: str | None, after_seq: int, limit: int) -> list[StoredEvent]:
        if threading.current_thread().name == "event-hub" and failures:
            raise failures.pop()
        return [s for s in committed if s.cursor > after][:limit]

    hub = EventHub(read, lambda: 0)
    try:
        with hub.subscribe(after=0) as subscription:
            assert [s.cursor for s in subscription.get(timeout=1)] == [1]
            assert subscription.get(timeout=0.05) == []  # caught up: following the pump now
            committed.append(_stored(2))
            hub.notify()
            received: list[StoredEvent] = []
            deadline = time.monotonic() + 5
            while not received and time.monotonic() < deadline:
                received = subscription.get(timeout=0.5)
            assert [s.cursor for s in received] == [2]
            assert not failures
    finally:
        hub.close()
