"""The question queue: events on run and parent, answers, auto-pause, expiry, long-polling."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import freezegun
import pytest

from app.control.actions import ControlAction, control_state, request_control
from app.control.errors import Conflict, NotFound
from app.control.questions import (
    InvalidQuestion,
    QuestionConflict,
    QuestionNotFound,
    QuestionService,
    QuestionView,
)
from app.wire.events import Actor, EventEnvelope, RunStarted
from db.eventlog import UnknownRun
from db.runs import create_run, get_run, transition
from db.store import Store

T0 = "2030-01-01T00:00:00Z"


def service(store: Store, **overrides: Any) -> QuestionService:
    options: dict[str, Any] = {
        "default_ttl_s": 60,
        "default_fallback": "pause",
        "max_wait_ms": 5_000,
    }
    options.update(overrides)
    return QuestionService(store.log, **options)


def events(store: Store, run_id: str) -> list[EventEnvelope]:
    return store.log.page(run_id, limit=1_000)


def types(store: Store, run_id: str) -> list[str]:
    return [event.type for event in events(store, run_id)]


def state(store: Store, run_id: str) -> str:
    return get_run(store.log, run_id).state


def new_run(store: Store, parent_run_id: str | None = None) -> str:
    return create_run(
        store.log, task="t", engine="rlm", actor=Actor.PARENT, parent_run_id=parent_run_id
    ).id


@pytest.fixture
def family(store: Store) -> tuple[str, str]:
    """A parent run and a child run delegated by it."""
    parent = new_run(store)
    return parent, new_run(store, parent)


# -- enqueue, list, get ----------------------------------------------------------------------


def test_enqueue_writes_the_row_and_events_on_run_and_parent(
    store: Store, family: tuple[str, str]
) -> None:
    parent, child = family
    questions = service(store)
    with freezegun.freeze_time(T0):
        view = questions.enqueue(child, prompt="Which branch?", actor=Actor.DELEGATE)
    assert view.id.startswith("q_")
    assert view.run_id == child and view.parent_run_id == parent
    assert view.status == "pending" and view.answer is None and not view.auto_pause
    assert view.expiry_fallback == "pause"
    assert view.created_at == "2030-01-01T00:00:00.000Z"
    assert view.expires_at == "2030-01-01T00:01:00.000Z"
    assert questions.get(view.id) == view
    for run_id in (child, parent):
        last = events(store, run_id)[-1]
        assert last.type == "question_queued"
        assert last.actor == Actor.DELEGATE
        assert last.payload == {
            "question_id": view.id,
            "asked_by_run_id": child,
            "prompt_preview": "Which branch?",
            "auto_pause": False,
            "expires_at": view.expires_at,
        }


def test_a_root_run_question_has_no_parent_event(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    view = questions.enqueue(
        run, prompt="x" * 500, actor=Actor.PARENT, ttl_s=5, expiry_fallback="fail"
    )
    assert view.parent_run_id is None and view.expiry_fallback == "fail"
    assert types(store, run) == ["run_queued", "question_queued"]
    assert events(store, run)[-1].payload["prompt_preview"] == "x" * 200


def test_list_filters(store: Store, family: tuple[str, str]) -> None:
    parent, child = family
    other = new_run(store)
    questions = service(store)
    a = questions.enqueue(child, prompt="a", actor=Actor.DELEGATE)
    b = questions.enqueue(child, prompt="b", actor=Actor.DELEGATE)
    c = questions.enqueue(other, prompt="c", actor=Actor.DELEGATE)
    questions.answer(b.id, answer="yes", by=Actor.UI)

    def ids(**filters: Any) -> set[str]:
        return {view.id for view in questions.list(**filters)}

    assert ids() == {a.id, b.id, c.id}
    assert ids(status="pending") == {a.id, c.id}
    assert ids(status="answered") == {b.id}
    assert ids(run_id=child) == {a.id, b.id}
    assert ids(parent_run_id=parent) == {a.id, b.id}
    assert ids(parent_run_id=parent, status="pending") == {a.id}
    assert ids(run_id=other, status="answered") == set()
    assert len(questions.list(limit=2)) == 2
    with pytest.raises(InvalidQuestion, match="status must be one of"):
        questions.list(status="open")
    with pytest.raises(InvalidQuestion, match="limit"):
        questions.list(limit=0)


def test_unknown_ids(store: Store) -> None:
    questions = service(store)
    with pytest.raises(UnknownRun, match="run_nope"):
        questions.enqueue("run_nope", prompt="?", actor=Actor.DELEGATE)
    for call in (
        lambda: questions.get("q_nope"),
        lambda: questions.answer("q_nope", answer="a", by=Actor.UI),
        lambda: questions.dismiss("q_nope", by=Actor.UI),
    ):
        with pytest.raises(QuestionNotFound, match="q_nope") as caught:
            call()
        assert isinstance(caught.value, NotFound)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "prompt must be a non-empty string"),
        ({"prompt": "   \n"}, "prompt must be a non-empty string"),
        ({"prompt": "x" * 101}, "more than the limit of 100"),
        ({"ttl_s": 0}, "ttl_s must be a whole number of seconds from 1"),
        ({"ttl_s": -5}, "leave it out to use the default"),
        ({"ttl_s": True}, "ttl_s"),
        ({"expiry_fallback": "explode"}, "expiry_fallback must be one of pause, resume, fail"),
    ],
)
def test_enqueue_validation(store: Store, kwargs: dict[str, Any], message: str) -> None:
    run = new_run(store)
    questions = service(store, max_prompt_chars=100)
    arguments: dict[str, Any] = {"prompt": "ok?", **kwargs}
    with pytest.raises(InvalidQuestion, match=message) as caught:
        questions.enqueue(run, actor=Actor.DELEGATE, **arguments)
    assert isinstance(caught.value, ValueError)
    assert types(store, run) == ["run_queued"]
    assert questions.list() == []


def test_answer_validation(store: Store) -> None:
    run = new_run(store)
    questions = service(store, max_answer_chars=10)
    view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE)
    with pytest.raises(InvalidQuestion, match="dismiss it instead"):
        questions.answer(view.id, answer=" ", by=Actor.UI)
    with pytest.raises(InvalidQuestion, match="limit of 10"):
        questions.answer(view.id, answer="x" * 11, by=Actor.UI)
    with pytest.raises(InvalidQuestion, match="reason"):
        questions.dismiss(view.id, by=Actor.UI, reason="")
    assert questions.get(view.id).status == "pending"


def test_asking_on_an_ended_run_is_a_conflict(store: Store) -> None:
    run = new_run(store)
    request_control(
        store.log, run, action=ControlAction.CANCEL, request_id="c1", requested_by=Actor.CLI
    )
    with pytest.raises(QuestionConflict, match="has ended \\(cancelled\\)"):
        service(store).enqueue(run, prompt="?", actor=Actor.DELEGATE)


def test_bad_configuration_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="expiry_fallback"):
        service(store, default_fallback="nope")
    with pytest.raises(ValueError, match="ttl_s"):
        service(store, default_ttl_s=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        service(store, max_wait_ms=-1)


# -- answer, dismiss ---------------------------------------------------------------------------


def test_answer_records_it_and_emits_on_run_and_parent(
    store: Store, family: tuple[str, str]
) -> None:
    parent, child = family
    questions = service(store)
    view = questions.enqueue(child, prompt="Which branch?", actor=Actor.DELEGATE)
    answered = questions.answer(view.id, answer="main", by=Actor.UI)
    assert answered.status == "answered" and answered.answer == "main"
    assert answered.resolved_by == "ui" and answered.resolved_at is not None
    for run_id in (child, parent):
        last = events(store, run_id)[-1]
        assert last.type == "question_answered" and last.actor == Actor.UI
        assert last.payload == {"question_id": view.id, "answered_by": "ui"}
    # The answer itself stays out of the event log.
    assert all("main" not in str(e.payload) for e in events(store, parent))


def test_dismiss_records_the_reason(store: Store, family: tuple[str, str]) -> None:
    parent, child = family
    questions = service(store)
    view = questions.enqueue(child, prompt="?", actor=Actor.DELEGATE)
    dismissed = questions.dismiss(view.id, by=Actor.TUI, reason="not relevant")
    assert dismissed.status == "dismissed" and dismissed.answer is None
    assert dismissed.resolved_by == "tui"
    for run_id in (child, parent):
        last = events(store, run_id)[-1]
        assert last.type == "question_dismissed"
        assert last.payload == {
            "question_id": view.id,
            "dismissed_by": "tui",
            "reason": "not relevant",
        }


def test_a_question_is_resolved_once(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE)
    questions.answer(view.id, answer="yes", by=Actor.UI)
    before = types(store, run)
    with pytest.raises(QuestionConflict, match="is answered, not pending") as caught:
        questions.answer(view.id, answer="no", by=Actor.UI)
    assert isinstance(caught.value, Conflict) and caught.value.status == "answered"
    with pytest.raises(QuestionConflict, match="is answered"):
        questions.dismiss(view.id, by=Actor.UI)
    assert questions.get(view.id).answer == "yes"
    assert types(store, run) == before


# -- auto-pause --------------------------------------------------------------------------------


def test_auto_pause_pauses_and_the_answer_resumes(store: Store, family: tuple[str, str]) -> None:
    parent, child = family
    questions = service(store)
    view = questions.enqueue(child, prompt="?", actor=Actor.DELEGATE, auto_pause=True)
    assert view.auto_pause
    assert state(store, child) == "paused"
    latest = control_state(store.log, child).latest_action
    assert latest is not None and latest.request_id == f"auto-pause:{view.id}"
    assert latest.requested_by == "runner"
    assert types(store, child)[-2:] == ["question_queued", "run_paused"]

    questions.answer(view.id, answer="go on", by=Actor.UI)
    assert state(store, child) == "queued"
    latest = control_state(store.log, child).latest_action
    assert latest is not None and latest.request_id == f"auto-resume:{view.id}"
    assert types(store, child)[-3:] == ["question_answered", "resume_requested", "run_resumed"]
    # The parent hears about the question, not about the child's pauses.
    assert types(store, parent)[-2:] == ["question_queued", "question_answered"]


def test_dismissing_an_auto_pause_question_resumes_too(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, auto_pause=True)
    questions.dismiss(view.id, by=Actor.UI)
    assert state(store, run) == "queued"


def test_auto_pause_of_a_running_run_is_withdrawn_by_the_answer(store: Store) -> None:
    run = new_run(store)
    transition(store.log, run, RunStarted(), actor=Actor.WORKER)
    questions = service(store)
    view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, auto_pause=True)
    assert state(store, run) == "pausing"
    questions.answer(view.id, answer="ok", by=Actor.UI)
    assert state(store, run) == "running"


def test_a_persons_pause_is_never_undone(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    request_control(
        store.log, run, action=ControlAction.PAUSE, request_id="p1", requested_by=Actor.UI
    )
    view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, auto_pause=True)
    latest = control_state(store.log, run).latest_action
    assert latest is not None and latest.request_id == "p1"
    questions.answer(view.id, answer="ok", by=Actor.UI)
    assert state(store, run) == "paused"


def test_a_pause_made_after_the_auto_pause_is_kept(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, auto_pause=True)
    # The person pauses too (a no-op for the state, but now the pause is theirs).
    request_control(
        store.log, run, action=ControlAction.PAUSE, request_id="p1", requested_by=Actor.TUI
    )
    questions.answer(view.id, answer="ok", by=Actor.UI)
    assert state(store, run) == "paused"


def test_the_run_resumes_after_its_last_auto_pause_question(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    first = questions.enqueue(run, prompt="1?", actor=Actor.DELEGATE, auto_pause=True)
    second = questions.enqueue(run, prompt="2?", actor=Actor.DELEGATE, auto_pause=True)
    plain = questions.enqueue(run, prompt="3?", actor=Actor.DELEGATE)
    questions.answer(first.id, answer="a", by=Actor.UI)
    assert state(store, run) == "paused"
    questions.answer(second.id, answer="b", by=Actor.UI)
    assert state(store, run) == "queued"
    # A plain question never touches the run's state.
    questions.answer(plain.id, answer="c", by=Actor.UI)
    assert state(store, run) == "queued"


def test_an_interrupted_run_cannot_auto_pause(store: Store) -> None:
    from app.wire.events import RunInterrupted

    run = new_run(store)
    transition(store.log, run, RunStarted(), actor=Actor.WORKER)
    transition(store.log, run, RunInterrupted(reason="lost"), actor=Actor.RUNNER)
    questions = service(store)
    with pytest.raises(Conflict, match="interrupted"):
        questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, auto_pause=True)
    # All or nothing: no question and no event were left behind.
    assert questions.list() == []
    assert "question_queued" not in types(store, run)


# -- expiry ------------------------------------------------------------------------------------


def test_expiry_with_the_pause_fallback(store: Store, family: tuple[str, str]) -> None:
    parent, child = family
    questions = service(store)
    with freezegun.freeze_time(T0) as frozen:
        view = questions.enqueue(child, prompt="?", actor=Actor.DELEGATE, ttl_s=30)
        frozen.tick(29)
        assert questions.expire_due() == []
        frozen.tick(1)
        expired = questions.expire_due()
    assert [v.id for v in expired] == [view.id]
    assert expired[0].status == "expired" and expired[0].resolved_by == "runner"
    assert state(store, child) == "paused"
    assert types(store, child)[-2:] == ["question_expired", "run_paused"]
    assert events(store, child)[-2].payload == {"question_id": view.id, "fallback": "pause"}
    assert types(store, parent)[-1] == "question_expired"
    latest = control_state(store.log, child).latest_action
    assert latest is not None and latest.request_id == f"expiry-pause:{view.id}"
    assert questions.expire_due() == []


def test_expiry_pause_fallback_keeps_an_auto_pause_for_good(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    with freezegun.freeze_time(T0) as frozen:
        timed = questions.enqueue(run, prompt="1?", actor=Actor.DELEGATE, auto_pause=True, ttl_s=5)
        other = questions.enqueue(
            run, prompt="2?", actor=Actor.DELEGATE, auto_pause=True, ttl_s=500
        )
        frozen.tick(10)
        assert [v.id for v in questions.expire_due()] == [timed.id]
        # The expired question asked for the run to stay paused: the other answer keeps it so.
        questions.answer(other.id, answer="b", by=Actor.UI)
    assert state(store, run) == "paused"


def test_expiry_with_the_resume_fallback(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    with freezegun.freeze_time(T0) as frozen:
        view = questions.enqueue(
            run, prompt="?", actor=Actor.DELEGATE, auto_pause=True, expiry_fallback="resume"
        )
        assert state(store, run) == "paused"
        frozen.tick(61)
        assert [v.id for v in questions.expire_due()] == [view.id]
    assert state(store, run) == "queued"
    assert types(store, run)[-3:] == ["question_expired", "resume_requested", "run_resumed"]
    latest = control_state(store.log, run).latest_action
    assert latest is not None and latest.request_id == f"expiry-resume:{view.id}"


def test_resume_fallback_keeps_a_persons_pause(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    request_control(
        store.log, run, action=ControlAction.PAUSE, request_id="p1", requested_by=Actor.UI
    )
    with freezegun.freeze_time(T0) as frozen:
        questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, expiry_fallback="resume")
        frozen.tick(61)
        assert len(questions.expire_due()) == 1
    assert state(store, run) == "paused"


def test_expiry_with_the_fail_fallback(store: Store) -> None:
    run = new_run(store)
    transition(store.log, run, RunStarted(), actor=Actor.WORKER)
    questions = service(store, default_fallback="fail")
    with freezegun.freeze_time(T0) as frozen:
        view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE)
        frozen.tick(60)
        questions.expire_due()
    summary = get_run(store.log, run)
    assert summary.state == "failed"
    reason = f"question {view.id} expired unanswered (fallback: fail)"
    assert summary.state_reason == reason
    assert types(store, run)[-2:] == ["question_expired", "run_failed"]
    assert events(store, run)[-1].payload["reason"] == reason


@pytest.mark.parametrize("fallback", ["pause", "resume", "fail"])
def test_a_question_of_an_ended_run_just_expires(store: Store, fallback: str) -> None:
    run = new_run(store)
    questions = service(store)
    with freezegun.freeze_time(T0) as frozen:
        view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, expiry_fallback=fallback)
        request_control(
            store.log, run, action=ControlAction.CANCEL, request_id="c", requested_by=Actor.CLI
        )
        frozen.tick(3600)
        assert [v.id for v in questions.expire_due()] == [view.id]
    assert state(store, run) == "cancelled"
    assert types(store, run)[-1] == "question_expired"


def test_answering_after_the_deadline_expires_the_question(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    with freezegun.freeze_time(T0) as frozen:
        view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, ttl_s=10)
        frozen.tick(11)
        with pytest.raises(QuestionConflict, match=r"expired .* fallback \(pause\)") as caught:
            questions.answer(view.id, answer="late", by=Actor.UI)
    assert caught.value.status == "expired"
    # The expiry (and its fallback) was committed even though the call raised.
    assert questions.get(view.id).status == "expired"
    assert state(store, run) == "paused"
    assert types(store, run)[-2:] == ["question_expired", "run_paused"]


def test_an_answered_question_does_not_expire(store: Store) -> None:
    run = new_run(store)
    questions = service(store)
    with freezegun.freeze_time(T0) as frozen:
        view = questions.enqueue(run, prompt="?", actor=Actor.DELEGATE, ttl_s=10)
        questions.answer(view.id, answer="in time", by=Actor.UI)
        frozen.tick(60)
        assert questions.expire_due() == []
    assert questions.get(view.id).status == "answered"
    assert state(store, run) == "queued"


# -- wait (long-poll) --------------------------------------------------------------------------


def test_wait_returns_at_once_when_already_resolved(store: Store) -> None:
    questions = service(store)
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE)
    questions.answer(view.id, answer="yes", by=Actor.UI)
    started = time.monotonic()
    result = asyncio.run(questions.wait(view.id, 5_000))
    assert time.monotonic() - started < 0.5
    assert result.status == "answered" and result.answer == "yes"


def test_wait_wakes_on_an_answer_from_another_thread(store: Store) -> None:
    questions = service(store, max_wait_ms=10_000)
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE)

    def answer_later() -> None:
        try:
            time.sleep(0.2)
            questions.answer(view.id, answer="from a thread", by=Actor.UI)
        finally:
            store.db.close()  # this thread's connection

    async def poll() -> tuple[QuestionView, float]:
        worker = threading.Thread(target=answer_later)
        started = time.monotonic()
        worker.start()
        result = await questions.wait(view.id, 10_000)
        elapsed = time.monotonic() - started
        worker.join()
        return result, elapsed

    result, elapsed = asyncio.run(poll())
    assert result.status == "answered" and result.answer == "from a thread"
    assert 0.15 <= elapsed < 2.0, elapsed
    assert questions._waiters == {}


def test_wait_wakes_on_expiry_by_another_thread(store: Store) -> None:
    questions = service(store, max_wait_ms=10_000)
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE, ttl_s=1)

    def expire_later() -> None:
        try:
            time.sleep(1.1)  # past the one-second deadline, in real time
            questions.expire_due()
        finally:
            store.db.close()

    async def poll() -> tuple[QuestionView, float]:
        worker = threading.Thread(target=expire_later)
        started = time.monotonic()
        worker.start()
        result = await questions.wait(view.id, 10_000)
        worker.join()
        return result, time.monotonic() - started

    result, elapsed = asyncio.run(poll())
    assert result.status == "expired"
    assert elapsed < 5.0


def test_wait_returns_the_pending_view_after_the_timeout(store: Store) -> None:
    questions = service(store)
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE)
    started = time.monotonic()
    result = asyncio.run(questions.wait(view.id, 150))
    elapsed = time.monotonic() - started
    assert result == view
    assert 0.14 <= elapsed < 1.5, elapsed
    assert asyncio.run(questions.wait(view.id, 0)) == view


def test_wait_is_capped_by_max_wait_ms(store: Store) -> None:
    questions = service(store, max_wait_ms=100)
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE)
    started = time.monotonic()
    result = asyncio.run(questions.wait(view.id, 60_000))
    assert time.monotonic() - started < 1.5
    assert result.status == "pending"


def test_many_waiters_hold_no_threads(store: Store) -> None:
    questions = service(store)
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE)

    async def scenario() -> tuple[list[QuestionView], int, int]:
        before = threading.active_count()
        waits = [asyncio.ensure_future(questions.wait(view.id, 5_000)) for _ in range(50)]
        await asyncio.sleep(0.1)
        during = threading.active_count()
        # Answered from the loop's own thread: call_soon_threadsafe works from here too.
        questions.answer(view.id, answer="all of you", by=Actor.UI)
        results = await asyncio.wait_for(asyncio.gather(*waits), timeout=2)
        return results, before, during

    results, before, during = asyncio.run(scenario())
    assert during == before
    assert {r.answer for r in results} == {"all of you"}
    assert questions._waiters == {}


def test_wait_errors(store: Store) -> None:
    questions = service(store)
    with pytest.raises(QuestionNotFound):
        asyncio.run(questions.wait("q_nope", 100))
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE)
    with pytest.raises(InvalidQuestion, match="wait_ms"):
        asyncio.run(questions.wait(view.id, -1))
    assert questions._waiters == {}


def test_wake_all_releases_waiters(store: Store) -> None:
    questions = service(store)
    view = questions.enqueue(new_run(store), prompt="?", actor=Actor.DELEGATE)

    async def scenario() -> float:
        started = time.monotonic()
        waiting = asyncio.ensure_future(questions.wait(view.id, 5_000))
        await asyncio.sleep(0.05)
        questions.wake_all()
        await waiting
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0
