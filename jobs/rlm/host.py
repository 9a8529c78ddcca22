"""The host side of the REPL channel: every call a cell makes is served (and budgeted) here.

The REPL can only ask; the host decides. Each call is checked against the run's budgets
before any work, produces its event (sizes and references, never bulk content), and is
recorded with its reply so the REPL's state can be rebuilt later by replaying the cells
against the same replies (everything non-deterministic crossed this channel).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.ids import new_id
from app.wire.events import ArtifactWritten, Payload, SubcallCompleted, SubcallStarted, Usage
from jobs.rlm.budget import Budget, BudgetExhausted
from jobs.rlm.lm.base import LMClient, LMError, Message
from jobs.rlm.protocol import Call, Reply

ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_ARTIFACT_BYTES = 5 * 1024 * 1024
MAX_PROMPT_CHARS = 200_000


class ContextLike(Protocol):
    """What the host needs from the context store (``jobs.rlm.context.ContextStore``)."""

    def dispatch(
        self, fn: str, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[Any, Payload | None]:
        """Serve one ``context.*`` call: (JSON value, event payload or None)."""
        ...


#: Runs a child RLM for ``rlm_query``: (prompt, context text or None, depth) -> answer.
ChildRunner = Callable[[str, str | None, int], str]
#: Queues a question from the run (auto-pausing it); returns the question id.
Asker = Callable[[str], str]


@dataclass
class RecordedCall:
    """One call of a cell and the reply it got (what replay feeds back)."""

    fn: str
    ok: bool
    value: Any = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"fn": self.fn, "ok": self.ok, "value": self.value, "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordedCall:
        return cls(
            fn=data["fn"], ok=bool(data["ok"]), value=data.get("value"), error=data.get("error")
        )


@dataclass
class Host:
    """Serves the calls of one REPL (one level of the recursion)."""

    context: ContextLike
    sub_client: LMClient
    budget: Budget
    emit: Callable[[Payload], None]
    artifacts_dir: Path
    depth: int = 0
    sub_model: str | None = None
    run_child: ChildRunner | None = None
    ask: Asker | None = None
    #: True when the run should pause: the next call is refused and the cell ends there.
    pause_requested: Callable[[], bool] | None = None
    #: Set when a call was refused because of a pause.
    paused: bool = False
    recorded: list[RecordedCall] = field(default_factory=list)
    #: Questions asked by this cell (the loop waits for their answers across a pause).
    asked: list[str] = field(default_factory=list)

    def handle(self, call: Call) -> Reply:
        """Answer one call (never raises: a refusal is a failed reply the cell sees)."""
        try:
            value = self._serve(call)
        except BudgetExhausted as error:
            return self._record(call, ok=False, error=str(error))
        except (LMError, ValueError, TypeError, OSError) as error:
            return self._record(call, ok=False, error=f"{type(error).__name__}: {error}")
        return self._record(call, ok=True, value=value)

    def _record(
        self, call: Call, *, ok: bool, value: Any = None, error: str | None = None
    ) -> Reply:
        self.recorded.append(RecordedCall(fn=call.fn, ok=ok, value=value, error=error))
        return Reply(id=call.id, ok=ok, value=value, error=error)

    def _serve(self, call: Call) -> Any:
        self.budget.check_clock()
        if self.paused or (self.pause_requested is not None and self.pause_requested()):
            # Pause between sub-calls: this call is not made; the iteration ends at the cell.
            self.paused = True
            raise ValueError(
                "the run is pausing: this call was not made and the cell stops here; "
                "after the resume, continue from where it stopped"
            )
        if call.fn.startswith("context."):
            value, payload = self.context.dispatch(call.fn, list(call.args), dict(call.kwargs))
            if payload is not None:
                self.emit(payload)
            return value
        if call.fn == "llm_query":
            prompt, model = _prompt_args(call, "model")
            return self._subcall("llm_query", prompt, model=model)
        if call.fn == "rlm_query":
            prompt, context_text = _prompt_args(call, "context")
            # A child RLM at depth d+1 makes its own sub-calls at depth d+2: it is allowed only
            # when that is within rlm.max_subcall_depth; at the cap the plain sub-model answers.
            if self.run_child is None or self.depth + 2 > self.budget.max_depth:
                full = prompt if context_text is None else f"{prompt}\n\nContext:\n{context_text}"
                return self._subcall("rlm_query", full, model=None)
            return self._child(prompt, context_text)
        if call.fn == "write_artifact":
            return self._write_artifact(call)
        if call.fn == "ask":
            return self._ask(call)
        raise ValueError(f"unknown host function {call.fn!r}")

    def _subcall(self, kind: str, prompt: str, *, model: str | None) -> str:
        self.budget.charge_subcall()
        subcall_id = new_id("sub")
        chosen = model or self.sub_model
        self.emit(
            SubcallStarted(
                subcall_id=subcall_id,
                kind=kind,  # type: ignore[arg-type]
                depth=self.depth + 1,
                prompt_chars=len(prompt),
                model=chosen,
            )
        )
        started = time.monotonic()
        try:
            completion = self.sub_client.complete([Message("user", prompt)], model=chosen)
        except LMError as error:
            self.emit(
                SubcallCompleted(
                    subcall_id=subcall_id,
                    kind=kind,  # type: ignore[arg-type]
                    depth=self.depth + 1,
                    duration_ms=int((time.monotonic() - started) * 1000),
                    error=str(error),
                )
            )
            raise
        self.emit(
            Usage(
                model=completion.model,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                cached_input_tokens=completion.cached_input_tokens,
                cost_usd=completion.cost_usd,
            )
        )
        self.emit(
            SubcallCompleted(
                subcall_id=subcall_id,
                kind=kind,  # type: ignore[arg-type]
                depth=self.depth + 1,
                response_chars=len(completion.text),
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        )
        self.budget.charge_usage(
            completion.input_tokens + completion.output_tokens, completion.cost_usd
        )
        return completion.text

    def _child(self, prompt: str, context_text: str | None) -> str:
        assert self.run_child is not None
        self.budget.charge_subcall()
        subcall_id = new_id("sub")
        self.emit(
            SubcallStarted(
                subcall_id=subcall_id,
                kind="rlm_query",
                depth=self.depth + 1,
                prompt_chars=len(prompt),
            )
        )
        started = time.monotonic()
        error: str | None = None
        answer = ""
        try:
            answer = self.run_child(prompt, context_text, self.depth + 1)
        except BudgetExhausted:
            raise
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}"
            raise ValueError(f"the recursive sub-agent failed: {error}") from failure
        finally:
            self.emit(
                SubcallCompleted(
                    subcall_id=subcall_id,
                    kind="rlm_query",
                    depth=self.depth + 1,
                    response_chars=len(answer),
                    duration_ms=int((time.monotonic() - started) * 1000),
                    error=error,
                )
            )
        return answer

    def _ask(self, call: Call) -> str:
        if self.ask is None:
            raise ValueError("ask() is not available at this level of the recursion")
        args = list(call.args)
        question = call.kwargs.get("question", args[0] if args else None)
        if not isinstance(question, str) or not question.strip():
            raise TypeError("ask(question): question must be a non-empty str")
        question_id = self.ask(question)
        self.asked.append(question_id)
        return question_id

    def _write_artifact(self, call: Call) -> str:
        args = list(call.args)
        name = call.kwargs.get("name", args[0] if args else None)
        content = call.kwargs.get("content", args[1] if len(args) > 1 else None)
        if not isinstance(name, str) or not ARTIFACT_NAME.match(name):
            raise ValueError(
                "write_artifact(name, content): name must be a plain file name "
                "(letters, digits, '.', '_', '-'; at most 100 characters; no directories)"
            )
        if not isinstance(content, str):
            raise TypeError("write_artifact(name, content): content must be a str")
        data = content.encode("utf-8")
        if len(data) > MAX_ARTIFACT_BYTES:
            raise ValueError(f"an artifact may be at most {MAX_ARTIFACT_BYTES} bytes")
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        path = self.artifacts_dir / name
        path.write_bytes(data)
        self.emit(
            ArtifactWritten(name=name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        )
        return f"artifacts/{name}"


@dataclass
class ReplayHost:
    """Feeds a cell its recorded replies, in order (rebuilding REPL state after a restart)."""

    calls: list[RecordedCall]
    position: int = 0
    diverged: bool = False

    def handle(self, call: Call) -> Reply:
        if self.position >= len(self.calls) or self.calls[self.position].fn != call.fn:
            self.diverged = True
            return Reply(id=call.id, ok=False, error="replay diverged from the recorded run")
        recorded = self.calls[self.position]
        self.position += 1
        return Reply(id=call.id, ok=recorded.ok, value=recorded.value, error=recorded.error)


def _prompt_args(call: Call, second: str) -> tuple[str, str | None]:
    args = list(call.args)
    prompt = call.kwargs.get("prompt", args[0] if args else None)
    other = call.kwargs.get(second, args[1] if len(args) > 1 else None)
    unknown = set(call.kwargs) - {"prompt", second}
    if unknown:
        raise TypeError(f"{call.fn}() got unexpected arguments: {', '.join(sorted(unknown))}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TypeError(f"{call.fn}(prompt, {second}=None): prompt must be a non-empty str")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"{call.fn}: the prompt is longer than {MAX_PROMPT_CHARS} characters")
    if other is not None and not isinstance(other, str):
        raise TypeError(f"{call.fn}: {second} must be a str or None")
    return prompt, other
