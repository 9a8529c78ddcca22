"""The ``echo`` engine: a diagnostic engine with no model behind it.

It runs ``echo.steps`` steps of ``echo.step_ms`` each and answers with the task text. Use
it to check the control plane end to end (spawn, pause, resume, cancel, crash recovery)
without an LLM; the execution benchmark uses it as the trivial engine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from app.wire.events import AgentMessage
from jobs.engines.base import Engine, EngineContext, EngineInterrupted, StepResult


class EchoEngine(Engine):
    """Counts steps; resumable from the count."""

    name = "echo"
    resumable = True

    def __init__(self, context: EngineContext, checkpoint: Mapping[str, Any] | None) -> None:
        super().__init__(context, checkpoint)
        self.done = int((checkpoint or {}).get("done", 0))
        self.total = int(context.setting("echo.steps", 3))
        self.step_s = int(context.setting("echo.step_ms", 0)) / 1000
        self._stop = threading.Event()

    def step(self, number: int) -> StepResult:
        if self.step_s and self._stop.wait(self.step_s):
            raise EngineInterrupted("interrupted")
        self.done += 1
        if self.done >= self.total:
            text = self.context.run.task
            self.context.emit(AgentMessage(text=text[:2000], truncated=len(text) > 2000))
            return StepResult(finished=True, answer=text)
        return StepResult()

    def checkpoint(self) -> dict[str, Any]:
        return {"done": self.done}

    def interrupt(self) -> None:
        self._stop.set()
