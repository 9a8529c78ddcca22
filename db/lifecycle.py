"""The run state machine as data: which event moves a run from which state to which.

This table is the single definition of run states (DESIGN §4). ``db.runs.transition`` is
the one function that applies it to the database; :func:`replay` folds a run's events
through the same table, so a run's state can always be recomputed from its event log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class RunState(StrEnum):
    """Every state a run can be in."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"


TERMINAL_STATES: frozenset[RunState] = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.BUDGET_EXCEEDED}
)

#: The event that creates a run, and the state it creates it in.
CREATION_EVENT = "run_queued"
INITIAL_STATE = RunState.QUEUED

_ENDINGS = {
    "run_failed": RunState.FAILED,
    "run_cancelled": RunState.CANCELLED,
}
_ENGINE_ENDINGS = {
    **_ENDINGS,
    "run_completed": RunState.SUCCEEDED,
    "budget_exceeded": RunState.BUDGET_EXCEEDED,
    "run_interrupted": RunState.INTERRUPTED,
}

#: (state, event type) -> next state. Pairs not listed are illegal transitions.
TRANSITIONS: Mapping[tuple[RunState, str], RunState] = {
    # A queued run waits for a worker; it can be paused, cancelled or failed before it starts.
    (RunState.QUEUED, "run_started"): RunState.RUNNING,
    (RunState.QUEUED, "run_paused"): RunState.PAUSED,
    **{(RunState.QUEUED, event): state for event, state in _ENDINGS.items()},
    # A running run ends, or is asked to pause at its next step boundary.
    (RunState.RUNNING, "pause_requested"): RunState.PAUSING,
    # The engine itself may pause at a boundary (a budget with on_budget_exceeded = pause,
    # a question with auto_pause).
    (RunState.RUNNING, "run_paused"): RunState.PAUSED,
    **{(RunState.RUNNING, event): state for event, state in _ENGINE_ENDINGS.items()},
    # Pausing: the boundary is reached (paused), the pause is withdrawn (resumed), or it ends.
    (RunState.PAUSING, "run_paused"): RunState.PAUSED,
    (RunState.PAUSING, "run_resumed"): RunState.RUNNING,
    **{(RunState.PAUSING, event): state for event, state in _ENGINE_ENDINGS.items()},
    # Resuming a paused run re-queues it to continue from its checkpoint.
    (RunState.PAUSED, "run_resumed"): RunState.QUEUED,
    **{(RunState.PAUSED, event): state for event, state in _ENDINGS.items()},
    # A lost worker's run is re-queued from its checkpoint, or failed with the reason.
    (RunState.INTERRUPTED, "run_queued"): RunState.QUEUED,
    **{(RunState.INTERRUPTED, event): state for event, state in _ENDINGS.items()},
}

#: Event types that change state; only ``db.runs`` may write them.
STATE_EVENT_TYPES: frozenset[str] = frozenset(
    {event for (_, event) in TRANSITIONS} | {CREATION_EVENT}
)


class IllegalTransition(Exception):
    """An event that the run's current state does not allow."""

    def __init__(self, run_id: str, state: RunState | None, event_type: str) -> None:
        self.run_id = run_id
        self.state = state
        self.event_type = event_type
        allowed = sorted(event for (origin, event) in TRANSITIONS if origin == state)
        where = f"in state {state.value!r}" if state is not None else "before it exists"
        hint = f"allowed now: {', '.join(allowed)}" if allowed else "the run has ended"
        super().__init__(f"run {run_id} {where} cannot take {event_type!r} ({hint})")


def next_state(run_id: str, state: RunState | None, event_type: str) -> RunState:
    """Return the state ``event_type`` leads to from ``state``, or raise IllegalTransition."""
    if state is None:
        if event_type == CREATION_EVENT:
            return INITIAL_STATE
        raise IllegalTransition(run_id, None, event_type)
    try:
        return TRANSITIONS[(state, event_type)]
    except KeyError:
        raise IllegalTransition(run_id, state, event_type) from None


def replay(run_id: str, event_types: Iterable[str]) -> RunState | None:
    """Fold a run's event types (in seq order) through the table; non-state events are skipped."""
    state: RunState | None = None
    for event_type in event_types:
        if event_type in STATE_EVENT_TYPES:
            state = next_state(run_id, state, event_type)
    return state
