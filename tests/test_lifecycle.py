"""The run state machine: hand-checked paths and a hypothesis rule-based property test."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from app.home import Home
from app.wire.events import (
    EVENT_PAYLOADS,
    Actor,
    AgentMessage,
    BudgetExceeded,
    CancelRequested,
    PauseRequested,
    Payload,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunInterrupted,
    RunPaused,
    RunQueued,
    RunResumed,
    RunStarted,
)
from db.lifecycle import (
    STATE_EVENT_TYPES,
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    RunState,
    replay,
)
from db.mirror import read_mirror
from db.runs import create_run, get_run, transition
from db.store import Store, open_store

#: One payload instance per state-changing event type.
STATE_PAYLOADS: dict[str, Payload] = {
    "run_queued": RunQueued(engine="rlm", reason="requeued"),
    "run_started": RunStarted(worker_id="w1"),
    "pause_requested": PauseRequested(request_id="r", requested_by="ui"),
    "run_paused": RunPaused(reason="boundary"),
    "run_resumed": RunResumed(request_id="r2"),
    "run_completed": RunCompleted(answer_preview="42"),
    "run_failed": RunFailed(reason="engine crashed"),
    "run_cancelled": RunCancelled(reason="user"),
    "budget_exceeded": BudgetExceeded(budget="max_iterations", limit=50, used=50),
    "run_interrupted": RunInterrupted(reason="lease expired"),
}


def test_every_state_event_has_a_payload_here() -> None:
    assert set(STATE_PAYLOADS) == STATE_EVENT_TYPES
    assert set(EVENT_PAYLOADS) >= STATE_EVENT_TYPES


def test_design_catalogue_is_registered() -> None:
    design = """run_queued, run_started, step_started, step_completed, step_failed, agent_message,
    tool_called, usage, pause_requested, run_paused, resume_requested, run_resumed,
    cancel_requested, run_cancelled, run_completed, run_failed, run_interrupted,
    rlm_policy_changed, repl_exec, subcall_started, subcall_completed, budget_exceeded,
    context_search, context_peek, context_chunk_read, artifact_written, question_queued,
    question_answered, question_expired, question_dismissed, confirmation_required,
    confirmation_resolved, security_violation, github_operation"""
    assert {name.strip() for name in design.split(",")} <= set(EVENT_PAYLOADS)


def test_pause_resume_cycle_and_completion(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    steps = [
        ("run_started", RunState.RUNNING),
        ("pause_requested", RunState.PAUSING),
        ("run_paused", RunState.PAUSED),
        ("run_resumed", RunState.QUEUED),
        ("run_started", RunState.RUNNING),
        ("pause_requested", RunState.PAUSING),
        ("run_resumed", RunState.RUNNING),
        ("run_completed", RunState.SUCCEEDED),
    ]
    for event_type, expected in steps:
        assert (
            transition(store.log, run.id, STATE_PAYLOADS[event_type], actor=Actor.WORKER)
            == expected
        )
    assert get_run(store.log, run.id).state == "succeeded"
    assert replay(run.id, [e.type for e in store.log.page(run.id)]) == RunState.SUCCEEDED


def test_queued_run_can_be_paused_resumed_and_cancelled(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    assert (
        transition(store.log, run.id, STATE_PAYLOADS["run_paused"], actor=Actor.UI)
        == RunState.PAUSED
    )
    assert (
        transition(store.log, run.id, STATE_PAYLOADS["run_resumed"], actor=Actor.UI)
        == RunState.QUEUED
    )
    assert (
        transition(store.log, run.id, STATE_PAYLOADS["run_cancelled"], actor=Actor.UI)
        == RunState.CANCELLED
    )


def test_interrupted_run_is_requeued_or_failed(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    transition(store.log, run.id, STATE_PAYLOADS["run_started"], actor=Actor.WORKER)
    transition(store.log, run.id, STATE_PAYLOADS["run_interrupted"], actor=Actor.RUNNER)
    assert (
        transition(store.log, run.id, STATE_PAYLOADS["run_queued"], actor=Actor.RUNNER)
        == RunState.QUEUED
    )


def test_illegal_transition_is_typed_and_writes_nothing(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    with pytest.raises(IllegalTransition) as raised:
        transition(store.log, run.id, STATE_PAYLOADS["run_completed"], actor=Actor.WORKER)
    assert raised.value.state == RunState.QUEUED
    assert raised.value.event_type == "run_completed"
    assert "allowed now" in str(raised.value)
    assert store.log.last_seq(run.id) == 1
    assert get_run(store.log, run.id).state == "queued"


def test_state_and_event_commit_together_or_not_at_all(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    with pytest.raises(RuntimeError), store.log.transaction() as tx:
        transition(store.log, run.id, STATE_PAYLOADS["run_started"], actor=Actor.WORKER, tx=tx)
        raise RuntimeError("crash between the state change and the commit")
    assert get_run(store.log, run.id).state == "queued"
    assert store.log.last_seq(run.id) == 1


class RunLifecycle(RuleBasedStateMachine):
    """Random sequences of events over several runs, checked against the database and mirror."""

    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lifecycle-"))
        self.store: Store = open_store(Home(self.tmp / "home"))
        self.expected_seq: dict[str, int] = {}
        self.ended: dict[str, int] = {}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(target=runs)
    def first_run(self) -> str:
        return self._new_run()

    @rule(target=runs)
    def another_run(self) -> str:
        return self._new_run()

    def _new_run(self) -> str:
        run = create_run(self.store.log, task="t", engine="rlm", actor=Actor.CLI)
        self.expected_seq[run.id] = 1
        return run.id

    @rule(run_id=runs, event_type=st.sampled_from(sorted(STATE_EVENT_TYPES)))
    def apply_event(self, run_id: str, event_type: str) -> None:
        before = RunState(get_run(self.store.log, run_id).state)
        legal = (before, event_type) in TRANSITIONS
        try:
            after = transition(
                self.store.log, run_id, STATE_PAYLOADS[event_type], actor=Actor.RUNNER
            )
        except IllegalTransition:
            assert not legal
            assert get_run(self.store.log, run_id).state == before
            return
        assert legal, f"{before} accepted {event_type}"
        assert before not in TERMINAL_STATES, "terminal states are absorbing"
        assert after == TRANSITIONS[(before, event_type)]
        self.expected_seq[run_id] += 1

    @rule(run_id=runs, text=st.text(max_size=20))
    def plain_event(self, run_id: str, text: str) -> None:
        self.store.log.append(run_id, AgentMessage(text=text), actor=Actor.DELEGATE)
        self.expected_seq[run_id] += 1

    @rule(run_id=runs)
    def request_cancel(self, run_id: str) -> None:
        # Request events are plain events: they never move the state by themselves.
        before = get_run(self.store.log, run_id).state
        self.store.log.append(
            run_id, CancelRequested(request_id="c", requested_by="ui"), actor=Actor.UI
        )
        self.expected_seq[run_id] += 1
        assert get_run(self.store.log, run_id).state == before

    @invariant()
    def state_equals_replay_and_seq_is_contiguous(self) -> None:
        for run_id, expected in self.expected_seq.items():
            events = self.store.log.page(run_id, limit=10_000)
            assert [e.seq for e in events] == list(range(1, expected + 1))
            state = get_run(self.store.log, run_id).state
            assert replay(run_id, [e.type for e in events]) == RunState(state)
            assert read_mirror(self.store.home.events_mirror(run_id)) == list(
                range(1, expected + 1)
            )
            if RunState(state) in TERMINAL_STATES:
                ended_at = self.ended.setdefault(run_id, expected)
                state_events_after = [e for e in events[ended_at:] if e.type in STATE_EVENT_TYPES]
                assert state_events_after == []


TestRunLifecycle = RunLifecycle.TestCase
TestRunLifecycle.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
