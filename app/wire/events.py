"""Event envelope v1 and one payload Struct per event type (DESIGN §4-5).

The envelope is at once the database row's shape, the ``events.jsonl`` line and
the SSE ``data:``. Every event type has a payload Struct registered here;
``docs/events.md`` is generated from this module (``scripts/gen_events_doc.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1


class Actor(StrEnum):
    """Who caused an event."""

    RUNNER = "runner"
    WORKER = "worker"
    UI = "ui"
    TUI = "tui"
    CLI = "cli"
    PARENT = "parent"
    DELEGATE = "delegate"
    MCP = "mcp"
    USER = "user"


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """One event as stored, mirrored and streamed (schema version 1)."""

    schema_version: int = SCHEMA_VERSION
    seq: int
    ts: str
    run_id: str
    task_id: str | None
    parent_run_id: str | None
    type: str
    actor: Actor
    payload: dict[str, Any]


class StoredEvent(msgspec.Struct, frozen=True):
    """An envelope with its global cursor (the event row id, increasing in commit order)."""

    cursor: int
    event: EventEnvelope


class Payload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every event payload; subclasses are registered with :func:`event_payload`."""

    event_type: ClassVar[str]
    #: One line for ``docs/events.md``: when the event is written.
    when: ClassVar[str]


EVENT_PAYLOADS: dict[str, type[Payload]] = {}

P = TypeVar("P", bound=type[Payload])


def event_payload(event_type: str, when: str) -> Callable[[P], P]:
    """Register a payload Struct as the payload of ``event_type``."""

    def register(cls: P) -> P:
        if event_type in EVENT_PAYLOADS:
            raise ValueError(f"event type {event_type!r} registered twice")
        cls.event_type = event_type
        cls.when = when
        EVENT_PAYLOADS[event_type] = cls
        return cls

    return register


# -- run lifecycle ---------------------------------------------------------------------------


@event_payload("run_queued", "A run was created, or re-queued after an interruption.")
class RunQueued(Payload, frozen=True):
    engine: str
    task_preview: str = ""
    attempt: int = 0
    reason: str | None = None


@event_payload("run_started", "A worker claimed the run and began (or continued) executing it.")
class RunStarted(Payload, frozen=True):
    worker_id: str | None = None
    attempt: int = 1
    from_checkpoint: bool = False


@event_payload("run_completed", "The engine finished with an answer; the run succeeded.")
class RunCompleted(Payload, frozen=True):
    answer_preview: str | None = None
    artifacts: list[str] = msgspec.field(default_factory=list)


@event_payload("run_failed", "The run failed; `reason` says why in words a person can act on.")
class RunFailed(Payload, frozen=True):
    reason: str
    error_type: str | None = None


@event_payload("run_interrupted", "The run's worker was lost (lease expired) while it ran.")
class RunInterrupted(Payload, frozen=True):
    reason: str
    lease_owner: str | None = None


@event_payload("run_cancelled", "The run was stopped for good by a cancel request.")
class RunCancelled(Payload, frozen=True):
    reason: str | None = None
    request_id: str | None = None


@event_payload(
    "pause_requested", "A pause was requested; the run pauses at its next step boundary."
)
class PauseRequested(Payload, frozen=True):
    request_id: str
    requested_by: str
    reason: str | None = None


@event_payload(
    "run_paused", "The run reached a step boundary, checkpointed and released its worker."
)
class RunPaused(Payload, frozen=True):
    reason: str | None = None
    checkpoint: str | None = None


@event_payload("resume_requested", "A resume was requested for a pausing or paused run.")
class ResumeRequested(Payload, frozen=True):
    request_id: str
    requested_by: str
    reason: str | None = None


@event_payload(
    "run_resumed",
    "The run left `paused` (re-queued to continue from its checkpoint)"
    " or withdrew a pending pause.",
)
class RunResumed(Payload, frozen=True):
    request_id: str | None = None
    reason: str | None = None


@event_payload("cancel_requested", "A cancel was requested; the run stops at once.")
class CancelRequested(Payload, frozen=True):
    request_id: str
    requested_by: str
    reason: str | None = None


# -- steps and engine output -----------------------------------------------------------------


@event_payload("step_started", "The engine began one step (a model turn, an RLM iteration, ...).")
class StepStarted(Payload, frozen=True):
    step: int
    kind: str


@event_payload("step_completed", "The engine finished one step.")
class StepCompleted(Payload, frozen=True):
    step: int
    kind: str
    duration_ms: int


@event_payload("step_failed", "One step failed (the run may still go on or fail).")
class StepFailed(Payload, frozen=True):
    step: int
    kind: str
    error: str


@event_payload("agent_message", "The agent said something a person may want to read.")
class AgentMessage(Payload, frozen=True):
    text: str
    truncated: bool = False


@event_payload("tool_called", "The agent called a tool; secret-looking parameters are redacted.")
class ToolCalled(Payload, frozen=True):
    tool: str
    server: str | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    call_id: str | None = None
    status: str | None = None


@event_payload("usage", "Token usage of one model call.")
class Usage(Payload, frozen=True):
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float | None = None


@event_payload("artifact_written", "A file was written to the run's `artifacts/` directory.")
class ArtifactWritten(Payload, frozen=True):
    name: str
    bytes: int
    sha256: str


# -- RLM -------------------------------------------------------------------------------------


@event_payload(
    "rlm_policy_changed", "`rlm.policy` changed; it applies at run start or a resume boundary."
)
class RlmPolicyChanged(Payload, frozen=True):
    old_policy: str
    new_policy: str
    effective_at: Literal["run_start", "resume"]


@event_payload("repl_exec", "One RLM iteration executed a code cell in the sandboxed REPL.")
class ReplExec(Payload, frozen=True):
    iteration: int
    code_chars: int
    stdout_chars: int = 0
    stderr_chars: int = 0
    duration_ms: int = 0
    new_names: list[str] = msgspec.field(default_factory=list)
    error: str | None = None
    artifact: str | None = None


@event_payload("subcall_started", "The RLM began a sub-model call (`llm_query` or `rlm_query`).")
class SubcallStarted(Payload, frozen=True):
    subcall_id: str
    kind: Literal["llm_query", "rlm_query"]
    depth: int
    prompt_chars: int
    model: str | None = None


@event_payload("subcall_completed", "A sub-model call returned (or failed).")
class SubcallCompleted(Payload, frozen=True):
    subcall_id: str
    kind: Literal["llm_query", "rlm_query"]
    depth: int
    response_chars: int = 0
    duration_ms: int = 0
    error: str | None = None


@event_payload("budget_exceeded", "A hard budget ran out; the run ends (or pauses) with it.")
class BudgetExceeded(Payload, frozen=True):
    budget: str
    limit: float
    used: float
    action: Literal["fail", "pause"] = "fail"
    #: The best answer the run had when it stopped (an RLM's default answer), if any.
    partial_answer: str | None = None


@event_payload("context_search", "The RLM searched its externalized context.")
class ContextSearch(Payload, frozen=True):
    query_chars: int
    hits: int
    duration_ms: int = 0


@event_payload("context_peek", "The RLM peeked at part of its context.")
class ContextPeek(Payload, frozen=True):
    target: str
    length: int
    returned_chars: int


@event_payload("context_chunk_read", "The RLM read one chunk of its context.")
class ContextChunkRead(Payload, frozen=True):
    chunk_id: str
    chars: int


# -- questions, confirmations, security, GitHub ---------------------------------------------


@event_payload("question_queued", "A delegate asked a question (on the asking run and its parent).")
class QuestionQueued(Payload, frozen=True):
    question_id: str
    asked_by_run_id: str
    prompt_preview: str
    auto_pause: bool = False
    expires_at: str | None = None


@event_payload("question_answered", "A question was answered.")
class QuestionAnswered(Payload, frozen=True):
    question_id: str
    answered_by: str


@event_payload("question_expired", "A question expired unanswered; its fallback was applied.")
class QuestionExpired(Payload, frozen=True):
    question_id: str
    fallback: Literal["pause", "resume", "fail"]


@event_payload("question_dismissed", "A question was dismissed without an answer.")
class QuestionDismissed(Payload, frozen=True):
    question_id: str
    dismissed_by: str
    reason: str | None = None


@event_payload("confirmation_required", "A destructive action waits for a person's approval.")
class ConfirmationRequired(Payload, frozen=True):
    confirmation_id: str
    action: str
    expires_at: str
    params_digest: str


@event_payload("confirmation_resolved", "A pending confirmation was approved, denied or expired.")
class ConfirmationResolved(Payload, frozen=True):
    confirmation_id: str
    action: str
    resolution: Literal["approved", "denied", "expired"]
    resolved_by: str | None = None


@event_payload("security_violation", "Something was refused for security reasons.")
class SecurityViolation(Payload, frozen=True):
    kind: str
    detail: str
    tool: str | None = None


@event_payload("github_operation", "A repo-gated GitHub operation ran (or was refused).")
class GithubOperation(Payload, frozen=True):
    operation: str
    repo: str
    status: str
    detail: str | None = None


def payload_to_dict(payload: Payload) -> dict[str, Any]:
    """Return the JSON-ready dict of a payload Struct."""
    result: dict[str, Any] = msgspec.to_builtins(payload)
    return result
