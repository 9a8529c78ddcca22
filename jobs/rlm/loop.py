"""The RLM loop: root model → code → sandboxed REPL → feedback, one iteration at a time.

One :class:`RlmLoop` per level of the recursion (the root is the run's engine; each
``rlm_query`` below the depth cap runs a child loop with its own REPL and the same budget).
An answer is final only when executed code sets it (``FINAL``/``FINAL_VAR``/``answer``);
prose never counts. When the root's iterations run out, one extraction turn asks for a
best-effort answer, which is returned marked as a default answer.

State that a resume needs — the conversation, every executed cell with the host replies it
got, counters — is in :meth:`RlmLoop.snapshot`. Rebuilding replays the cells in a fresh REPL
against the recorded replies (everything non-deterministic came through the host), with no
model call and no event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.wire.events import AgentMessage, Payload, ReplExec, Usage
from jobs.rlm import prompts
from jobs.rlm.budget import Budget, BudgetExhausted
from jobs.rlm.host import ContextLike, Host, RecordedCall, ReplayHost
from jobs.rlm.lm.base import Completion, LMClient, Message
from jobs.rlm.protocol import CellResult, FinalAnswer
from jobs.rlm.sandbox.base import ReplSession, Sandbox, SandboxLimits
from jobs.rlm.session import ReplDriver

log = logging.getLogger(__name__)

DEFAULT_ANSWER_MARK = "[default answer: the iteration budget ran out before a final answer was set]"


class LoopInterrupted(Exception):
    """The loop was interrupted from another thread (cancel, lost lease, budget)."""


@dataclass
class CellRecord:
    """An executed cell and the replies its host calls got."""

    code: str
    calls: list[RecordedCall]
    #: Interrupted or killed cells are not replayed (their partial effects are lost).
    completed: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "calls": [call.to_json() for call in self.calls],
            "completed": self.completed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellRecord:
        return cls(
            code=data["code"],
            calls=[RecordedCall.from_json(call) for call in data.get("calls", [])],
            completed=bool(data.get("completed", True)),
        )


@dataclass
class LoopSettings:
    """What every level shares."""

    sandbox: Sandbox
    limits: SandboxLimits
    run_dir: Path
    root_client: LMClient
    sub_client: LMClient
    context: ContextLike
    budget: Budget
    emit: Callable[[Payload], None]
    max_output_chars: int = 20_000
    cell_timeout_s: float = 60.0
    max_iterations: int = 50
    root_model: str | None = None
    sub_model: str | None = None
    #: Queue a question (auto-pausing the run); returns its id. None: ask() is refused.
    ask: Callable[[str], str] | None = None
    #: The (status, answer) of a question by id.
    question_status: Callable[[str], tuple[str, str | None]] | None = None
    #: Whether the run is pausing (checked before every host call).
    pause_requested: Callable[[], bool] | None = None


@dataclass
class RlmLoop:
    """One level of an RLM run."""

    settings: LoopSettings
    task: str
    depth: int = 0
    messages: list[Message] = field(default_factory=list)
    cells: list[CellRecord] = field(default_factory=list)
    iteration: int = 0
    final: FinalAnswer | None = None
    root_calls: int = 0
    #: Questions asked and not yet answered in the conversation.
    pending_questions: list[str] = field(default_factory=list)
    #: The last cell stopped at a host call because the run is pausing.
    paused_mid_cell: bool = False
    _session: ReplSession | None = None
    _driver: ReplDriver | None = None
    _children: list[RlmLoop] = field(default_factory=list)
    _interrupted: threading.Event = field(default_factory=threading.Event)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, saved: dict[str, Any] | None = None) -> None:
        """Start the REPL; with ``saved`` (a :meth:`snapshot`), rebuild its state first."""
        if saved:
            self.messages = [Message(m["role"], m["content"]) for m in saved.get("messages", [])]
            self.cells = [CellRecord.from_json(cell) for cell in saved.get("cells", [])]
            self.iteration = int(saved.get("iteration", 0))
            self.root_calls = int(saved.get("root_calls", 0))
            final = saved.get("final")
            self.final = FinalAnswer(value=final["value"], via=final["via"]) if final else None
            self.pending_questions = list(saved.get("pending_questions", []))
        self._open_session()
        if not self.messages:
            stats = self._stats()
            limits = self.settings
            self.messages = [
                Message(
                    "system",
                    prompts.SYSTEM_PROMPT.format(
                        max_iterations=limits.max_iterations,
                        max_subcalls=limits.budget.max_subcalls,
                    ),
                ),
                Message(
                    "user",
                    prompts.FIRST_USER_PROMPT.format(task=self.task, **prompts.stats_line(stats)),
                ),
            ]

    def _stats(self) -> dict[str, Any]:
        try:
            value, _ = self.settings.context.dispatch("context.stats", [], {})
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _open_session(self) -> None:
        settings = self.settings
        self._session = settings.sandbox.start(
            run_dir=settings.run_dir, limits=settings.limits, label=f"depth{self.depth}"
        )
        self._driver = ReplDriver(self._session, max_output_chars=settings.max_output_chars)
        replayed = [cell for cell in self.cells if cell.completed]
        for cell in replayed:
            replay = ReplayHost(cell.calls)
            self._driver.run_cell(
                cell.code, timeout_s=settings.cell_timeout_s, on_call=replay.handle
            )
            if replay.diverged:
                log.warning("replay of a cell diverged; the rebuilt REPL state may differ")

    def interrupt(self) -> None:
        """Stop now: kill this level's REPL and every child's (from another thread)."""
        self._interrupted.set()
        for child in list(self._children):
            child.interrupt()
        if self._session is not None:
            self._session.kill()

    def close(self) -> None:
        """Stop the REPLs."""
        for child in list(self._children):
            child.close()
        if self._session is not None:
            self._session.kill()

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue (see the module docstring)."""
        return {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "cells": [cell.to_json() for cell in self.cells],
            "iteration": self.iteration,
            "root_calls": self.root_calls,
            "final": {"value": self.final.value, "via": self.final.via} if self.final else None,
            "pending_questions": list(self.pending_questions),
        }

    # -- iterations --------------------------------------------------------------------------

    def iterate(self) -> str | None:
        """One iteration; returns the final answer once executed code has set it.

        Raises BudgetExhausted (with the loop's state intact) when a budget runs out, and
        LoopInterrupted when interrupted.
        """
        if self.final is not None:
            return self.final.value
        settings = self.settings
        self._deliver_answers()
        if self.depth == 0:
            settings.budget.charge_iteration()
        elif self.iteration >= settings.max_iterations:
            raise BudgetExhausted("rlm.max_iterations", settings.max_iterations, self.iteration)
        self.iteration += 1
        reply = self._complete(self.messages)
        self.messages.append(Message("assistant", reply.text))
        blocks = prompts.extract_code_blocks(reply.text)
        if not blocks:
            self.messages.append(Message("user", prompts.NO_CODE_PROMPT))
            return None
        outputs: list[dict[str, Any]] = []
        for code in blocks:
            result = self._run_cell(code)
            outputs.append(
                {
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                    "error": result.error,
                    "truncated": result.truncated,
                    "new_names": result.new_names,
                }
            )
            if result.final is not None:
                self.final = result.final
                break
            if settings.budget.exhausted is not None or self.paused_mid_cell:
                break
        reminder = "" if self.final else "Set the answer with FINAL(...) in code when you have it."
        self.messages.append(
            Message(
                "user",
                prompts.FEEDBACK_PROMPT.format(
                    iteration=self.iteration,
                    max_iterations=settings.max_iterations,
                    outputs=prompts.render_outputs(outputs, settings.max_output_chars),
                    reminder=reminder,
                ),
            )
        )
        if self.final is None and settings.budget.exhausted is not None:
            raise settings.budget.exhausted
        return self.final.value if self.final else None

    def _deliver_answers(self) -> None:
        """Put the answers to earlier questions into the conversation (after a pause)."""
        lookup = self.settings.question_status
        if not self.pending_questions or lookup is None:
            return
        still: list[str] = []
        for question_id in self.pending_questions:
            status, answer = lookup(question_id)
            if status == "pending":
                still.append(question_id)
            elif status == "answered":
                self.messages.append(
                    Message("user", f"Answer to your question {question_id}:\n{answer}")
                )
            else:
                self.messages.append(
                    Message("user", f"Your question {question_id} got no answer ({status}).")
                )
        self.pending_questions = still

    def run_to_end(self) -> str:
        """Iterate until an answer (for a child), extracting a default one at the end."""
        try:
            while True:
                answer = self.iterate()
                if answer is not None:
                    return answer
        except BudgetExhausted as exhausted:
            if exhausted.budget != "rlm.max_iterations" or self.depth == 0:
                raise
            return self.extract_default_answer()

    def extract_default_answer(self) -> str:
        """One last turn asking for a best-effort answer; marked as a default answer."""
        # The budget has run out by definition: this one call is allowed past it.
        reply = self._complete(
            [*self.messages, Message("user", prompts.EXTRACTION_PROMPT)], budgeted=False
        )
        text = f"{DEFAULT_ANSWER_MARK}\n{reply.text.strip()}"
        self.settings.emit(AgentMessage(text=text[:4000], truncated=len(text) > 4000))
        return text

    def _complete(self, messages: list[Message], *, budgeted: bool = True) -> Completion:
        if self._interrupted.is_set():
            raise LoopInterrupted("interrupted")
        settings = self.settings
        client = settings.root_client if self.depth == 0 else settings.sub_client
        model = settings.root_model if self.depth == 0 else settings.sub_model
        if budgeted:
            settings.budget.check_clock()
        completion = client.complete(messages, model=model)
        self.root_calls += 1
        settings.emit(
            Usage(
                model=completion.model,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                cached_input_tokens=completion.cached_input_tokens,
                cost_usd=completion.cost_usd,
            )
        )
        if budgeted:
            settings.budget.charge_usage(
                completion.input_tokens + completion.output_tokens, completion.cost_usd
            )
        return completion

    def _run_cell(self, code: str) -> CellResult:
        if self._interrupted.is_set():
            raise LoopInterrupted("interrupted")
        settings = self.settings
        if self._session is None or not self._session.alive:
            self._open_session()
        assert self._driver is not None
        host = Host(
            context=settings.context,
            sub_client=settings.sub_client,
            budget=settings.budget,
            emit=settings.emit,
            artifacts_dir=settings.run_dir / "artifacts",
            depth=self.depth,
            sub_model=settings.sub_model,
            run_child=self._run_child,
            ask=settings.ask if self.depth == 0 else None,
            pause_requested=settings.pause_requested,
        )
        result = self._driver.run_cell(code, timeout_s=settings.cell_timeout_s, on_call=host.handle)
        if self._interrupted.is_set():
            raise LoopInterrupted("interrupted")
        completed = result.error is None or not (
            result.error.startswith("timeout") or "REPL" in result.error
        )
        self.cells.append(CellRecord(code=code, calls=host.recorded, completed=completed))
        self.paused_mid_cell = host.paused
        self.pending_questions.extend(host.asked)
        settings.emit(
            ReplExec(
                iteration=self.iteration,
                code_chars=len(code),
                stdout_chars=len(result.stdout),
                stderr_chars=len(result.stderr),
                duration_ms=result.duration_ms,
                new_names=result.new_names[:50],
                error=result.error[:500] if result.error else None,
            )
        )
        return result

    def _run_child(self, prompt: str, context_text: str | None, depth: int) -> str:
        task = prompt if context_text is None else f"{prompt}\n\nGiven context:\n{context_text}"
        child = RlmLoop(settings=self.settings, task=task, depth=depth)
        self._children.append(child)
        try:
            child.start()
            return child.run_to_end()
        finally:
            child.close()
            self._children.remove(child)
