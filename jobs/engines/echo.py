"""The ``echo`` engine: a diagnostic engine with no model behind it.

It runs ``echo.steps`` steps of ``echo.step_ms`` each and answers with the task text. With
``echo.child = true`` each step is a supervised child process (``sleep``), so that process
supervision (cancel, runner death) can be checked too. Use it to check the control plane
end to end (spawn, pause, resume, cancel, crash recovery) without an LLM; the execution
benchmark uses it as the trivial engine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from app.wire.events import AgentMessage
from jobs.engines.base import Engine, EngineContext, EngineFailed, EngineInterrupted, StepResult
from jobs.supervise import SupervisedProcess


class EchoEngine(Engine):
    """Counts steps; resumable from the count."""

    name = "echo"
    resumable = True

    def __init__(self, context: EngineContext, checkpoint: Mapping[str, Any] | None) -> None:
        super().__init__(context, checkpoint)
        self.done = int((checkpoint or {}).get("done", 0))
        self.total = int(context.setting("echo.steps", 3))
        self.step_s = int(context.setting("echo.step_ms", 0)) / 1000
        self.child = bool(context.setting("echo.child", False))
        self._stop = threading.Event()
        self._proc: SupervisedProcess[bytes] | None = None

    def step(self, number: int) -> StepResult:
        if self.child:
            self._child_step()
        elif self.step_s and self._stop.wait(self.step_s):
            raise EngineInterrupted("interrupted")
        self.done += 1
        if self.done >= self.total:
            text = self.context.run.task
            self.context.emit(AgentMessage(text=text[:2000], truncated=len(text) > 2000))
            return StepResult(finished=True, answer=text)
        return StepResult()

    def _child_step(self) -> None:
        if self._stop.is_set():
            raise EngineInterrupted("interrupted")
        proc = SupervisedProcess.start(["sleep", f"{self.step_s:.3f}"])
        self._proc = proc
        self.context.set_pgid(proc.pgid)
        try:
            code = proc.wait()
        finally:
            proc.terminate_group(grace_s=1.0)
            self._proc = None
            self.context.set_pgid(None)
        if self._stop.is_set():
            raise EngineInterrupted("interrupted")
        if code != 0:
            raise EngineFailed(f"the echo step's child exited with {code}")

    def checkpoint(self) -> dict[str, Any]:
        return {"done": self.done}

    def interrupt(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None:
            proc.terminate_group(grace_s=1.0)

    def close(self) -> None:
        self.interrupt()
