"""Live subscriptions: catch-up then follow, no gaps, no duplicates, no polling while idle."""

from __future__ import annotations

import threading
import time

from app.wire.events import Actor, StepStarted, StoredEvent
from db.hub import Subscription
from db.runs import create_run
from db.store import Store


def collect(subscription: Subscription, count: int, timeout: float = 10.0) -> list[StoredEvent]:
    received: list[StoredEvent] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        received.extend(subscription.get(timeout=0.5))
    return received


def test_run_subscription_catches_up_then_follows(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    for step in range(5):
        store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
    with store.log.subscribe(run_id=run.id, after=2) as subscription:
        assert [s.event.seq for s in collect(subscription, 4)] == [3, 4, 5, 6]
        for step in range(5, 10):
            store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
        assert [s.event.seq for s in collect(subscription, 5)] == [7, 8, 9, 10, 11]


def test_global_subscription_sees_every_run_in_commit_order(store: Store) -> None:
    runs = [create_run(store.log, task=str(i), engine="rlm", actor=Actor.CLI) for i in range(3)]
    start = store.log.latest_cursor()
    with store.log.subscribe(after=start) as subscription:
        for step in range(30):
            store.log.append(
                runs[step % 3].id, StepStarted(step=step, kind="k"), actor=Actor.WORKER
            )
        received = collect(subscription, 30)
    assert [s.event.payload["step"] for s in received] == list(range(30))
    assert [s.cursor for s in received] == sorted(s.cursor for s in received)


def test_concurrent_writers_reach_subscriber_exactly_once(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    with store.log.subscribe(run_id=run.id) as subscription:

        def write(offset: int) -> None:
            for step in range(200):
                store.log.append(
                    run.id, StepStarted(step=offset + step, kind="k"), actor=Actor.WORKER
                )

        threads = [threading.Thread(target=write, args=(i * 1000,)) for i in range(4)]
        for thread in threads:
            thread.start()
        received = collect(subscription, 801)
        for thread in threads:
            thread.join()
    assert [s.event.seq for s in received] == list(range(1, 802))


def test_lagging_subscriber_resumes_from_the_database(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    store.log.hub._queue_size = 5  # a tiny queue so that the subscriber overflows
    with (
        store.log.subscribe(run_id=run.id, after=1) as slow,
        store.log.subscribe(run_id=run.id, after=1) as fast,
    ):
        assert slow.get(timeout=0.1) == []
        fast_received: list[StoredEvent] = []
        for step in range(100):
            store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
            fast_received.extend(fast.get(timeout=2))
        fast_received.extend(collect(fast, 100 - len(fast_received)))
        slow_received = collect(slow, 100)
    assert [s.event.seq for s in fast_received] == list(range(2, 102))
    assert [s.event.seq for s in slow_received] == list(range(2, 102))
    assert slow.lag_count >= 1


def test_idle_subscriber_does_not_poll_the_database(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    reads: list[int] = []
    original = store.log.hub._read

    def counting_read(*args: object) -> list[StoredEvent]:
        reads.append(1)
        return original(*args)  # type: ignore[arg-type]

    store.log.hub._read = counting_read  # type: ignore[method-assign]
    with store.log.subscribe(run_id=run.id, after=1) as subscription:
        assert subscription.get(timeout=0.1) == []
        reads.clear()
        assert subscription.get(timeout=1.0) == []
        assert reads == [], "an idle subscription must wait on a signal, not query"
        store.log.append(run.id, StepStarted(step=1, kind="k"), actor=Actor.WORKER)
        assert [s.event.seq for s in collect(subscription, 1)] == [2]


def test_close_releases_a_blocked_consumer(store: Store) -> None:
    subscription = store.log.subscribe()
    done = threading.Event()

    def consume() -> None:
        list(subscription)
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.1)
    subscription.close()
    assert done.wait(3)
    thread.join()
