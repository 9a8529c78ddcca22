"""The control sweeper: expires due questions and confirmations, once or on a timer."""

from __future__ import annotations

import logging
import threading
import time

import freezegun
import pytest

from app.control.confirmations import ConfirmationService
from app.control.questions import QuestionService
from app.control.sweeper import Sweeper
from app.wire.events import Actor
from db.runs import create_run
from db.store import Store

KEY = bytes(range(32))


def services(store: Store) -> tuple[QuestionService, ConfirmationService]:
    questions = QuestionService(
        store.log, default_ttl_s=60, default_fallback="pause", max_wait_ms=1_000
    )
    confirmations = ConfirmationService(store.log, key=KEY, ttl_s=60, max_pending=3)
    return questions, confirmations


def new_run(store: Store) -> str:
    return create_run(store.log, task="t", engine="rlm", actor=Actor.PARENT).id


def test_sweep_once_expires_due_items(store: Store) -> None:
    questions, confirmations = services(store)
    sweeper = Sweeper(questions=questions, confirmations=confirmations, interval_s=60)
    run = new_run(store)
    with freezegun.freeze_time("2030-01-01T00:00:00Z") as frozen:
        q = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, ttl_s=30)
        late = questions.enqueue(run, prompt="later?", actor=Actor.DELEGATE, ttl_s=300)
        cf = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
        assert sweeper.sweep_once() == 0
        frozen.tick(61)
        assert sweeper.sweep_once() == 2
        assert sweeper.sweep_once() == 0
    assert questions.get(q.id).status == "expired"
    assert questions.get(late.id).status == "pending"
    assert confirmations.get(cf.id).status == "expired"


class Flaky:
    """A stand-in service whose first sweep fails."""

    def __init__(self) -> None:
        self.calls = 0
        self.swept = threading.Event()

    def expire_due(self) -> list[object]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("database hiccup")
        self.swept.set()
        return [object()]


def test_a_failing_sweep_is_logged_and_the_other_service_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky()
    sweeper = Sweeper(questions=flaky, confirmations=flaky, interval_s=60)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="app.control.sweeper"):
        assert sweeper.sweep_once() == 1  # questions failed, confirmations went on
    assert "sweeping questions failed" in caplog.text
    assert "database hiccup" in caplog.text
    assert sweeper.sweep_once() == 2


def test_start_and_stop(store: Store) -> None:
    questions, confirmations = services(store)
    run = new_run(store)
    q = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, ttl_s=1)
    sweeper = Sweeper(questions=questions, confirmations=confirmations, interval_s=0.05)
    sweeper.start()
    try:
        assert sweeper.running
        with pytest.raises(RuntimeError, match="already running"):
            sweeper.start()
        deadline = time.monotonic() + 10
        while questions.get(q.id).status == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert questions.get(q.id).status == "expired"
    finally:
        sweeper.stop()
    assert not sweeper.running
    # It can be started again after a stop, and stopping twice is harmless.
    sweeper.start()
    sweeper.stop()
    sweeper.stop()
    assert not sweeper.running


def test_the_loop_survives_failing_sweeps(store: Store) -> None:
    questions, _ = services(store)
    flaky = Flaky()
    sweeper = Sweeper(questions=questions, confirmations=flaky, interval_s=0.01)  # type: ignore[arg-type]
    sweeper.start()
    try:
        assert flaky.swept.wait(5)
    finally:
        sweeper.stop()
    assert flaky.calls >= 2


def test_the_thread_is_a_daemon_and_stop_joins_it(store: Store) -> None:
    questions, confirmations = services(store)
    sweeper = Sweeper(questions=questions, confirmations=confirmations, interval_s=30)
    sweeper.start()
    thread = sweeper._thread
    assert thread is not None and thread.daemon
    started = time.monotonic()
    sweeper.stop()
    # stop() wakes the waiting thread at once rather than after the interval.
    assert time.monotonic() - started < 5
    assert not thread.is_alive()


def test_interval_must_be_positive(store: Store) -> None:
    questions, confirmations = services(store)
    for interval in (0, -1):
        with pytest.raises(ValueError, match="interval"):
            Sweeper(questions=questions, confirmations=confirmations, interval_s=interval)
