"""The engine interface the run loop drives, one step at a time.

A *step* is the unit between two control boundaries: a model turn with its tool calls, an
RLM iteration, an echo tick. The run loop reads control (pause, cancel) and budgets only
between steps; :meth:`Engine.interrupt` is the one way to stop a step early, called from
the run's watchdog thread when the run is cancelled or its lease is lost.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from app.wire.events import Payload
from app.wire.runs import RunSummary


class EngineUnavailable(Exception):
    """The engine cannot run here; the message tells a person what to do about it."""


class EngineInterrupted(Exception):
    """The current step was stopped by :meth:`Engine.interrupt`."""


class EngineBudgetExhausted(Exception):
    """An engine-level budget ran out (RLM iterations, sub-calls, tokens, cost, clock)."""

    def __init__(self, budget: str, limit: float, used: float, partial_answer: str | None) -> None:
        self.budget = budget
        self.limit = limit
        self.used = used
        self.partial_answer = partial_answer
        super().__init__(f"budget exceeded: {budget} (limit {limit:g}, used {used:g})")


class EngineFailed(Exception):
    """The engine failed in a way a person can act on; the message is the run's reason."""


@dataclass(frozen=True)
class StepResult:
    """What one step produced."""

    finished: bool = False
    answer: str | None = None


@dataclass
class EngineContext:
    """What an engine may use: its run, its files, its config, and the event writer."""

    run: RunSummary
    run_dir: Path
    #: The run's effective config (nested, as in manifest.json).
    config: Mapping[str, Any]
    #: Append one event to this run (the actor is the engine's).
    emit: Callable[[Payload], None]
    #: Record the process group of the engine's current child (None when it has none).
    set_pgid: Callable[[int | None], None]
    #: Path of the 0600 file holding the run's delegation token.
    token_path: Path
    #: Extra environment for children (e.g. how to reach the runner).
    child_env: dict[str, str] = field(default_factory=dict)
    #: Ask a question on behalf of the run (auto-pausing it); returns the question id.
    ask: Callable[[str], str] | None = None
    #: ``(status, answer)`` of one of the run's questions.
    question_status: Callable[[str], tuple[str, str | None]] | None = None
    #: Whether a pause was requested (engines with sub-steps stop at the next one).
    pause_requested: Callable[[], bool] | None = None

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key."""
        return config_value(self.config, dotted, default)


def config_value(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """Look a dotted key up in a nested config mapping (``default`` when absent)."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


class Engine(abc.ABC):
    """One run's engine; created per attempt, from the run's checkpoint when resuming."""

    name: ClassVar[str]
    #: Whether a run interrupted mid-step (worker lost) can continue from its checkpoint.
    resumable: ClassVar[bool] = False
    #: When a step finishes the work while a pause is pending, pause instead of completing
    #: (the next step, after resume, continues the work).
    yields_to_pause: ClassVar[bool] = False

    def __init__(self, context: EngineContext, checkpoint: Mapping[str, Any] | None) -> None:
        self.context = context
        self.restored = checkpoint is not None

    @abc.abstractmethod
    def step(self, number: int) -> StepResult:
        """Run one step; raise EngineInterrupted when interrupted, EngineFailed on failure."""

    @abc.abstractmethod
    def checkpoint(self) -> dict[str, Any]:
        """A JSON-ready state to continue from after a pause (called between steps)."""

    def interrupt(self) -> None:  # noqa: B027 - engines without children need no override
        """Stop the current step now (called from another thread)."""

    def close(self) -> None:  # noqa: B027 - engines without resources need no override
        """Release resources (children are gone after this)."""
