"""Request and response bodies of the runner's HTTP API (msgspec Structs; OpenAPI comes from them).

Requests forbid unknown fields so a typo is an error, not a silently ignored option.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from app.wire.events import EventEnvelope
from app.wire.runs import RunSummary

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=2_000)]
RequestId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@/-]+$")
]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies."""


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response: a stable ``error`` code and a ``detail`` saying what to do."""

    error: str
    detail: str


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ok"]
    version: str


class SpawnRequest(Request, frozen=True):
    """Start a delegate run. ``config`` holds per-run overrides as dotted keys (repo-capped)."""

    task: Text
    engine: Literal["rlm", "codex", "echo"] | None = None
    repo: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    parent_run_id: Identifier | None = None
    task_id: Identifier | None = None
    mode: Literal["full", "question_only"] | None = None
    rlm_policy: Literal["always", "never"] | None = None
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class SpawnResponse(msgspec.Struct, frozen=True, kw_only=True):
    run: RunSummary
    events_url: str
    stream_url: str


class RunList(msgspec.Struct, frozen=True, kw_only=True):
    runs: list[RunSummary]
    next_cursor: str | None


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    events: list[EventEnvelope]
    #: Pass as ``after`` to get the next page.
    next_after: int
    last_seq: int


class ControlRequest(Request, frozen=True):
    action: Literal["pause", "resume", "cancel"]
    request_id: RequestId
    reason: ShortText | None = None


class LatestActionView(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    requested_by: str
    requested_at: str
    action: str
    reason: str | None


class ControlStateView(msgspec.Struct, frozen=True, kw_only=True):
    """The control.json shape."""

    run_id: str
    control_seq: int
    latest_action: LatestActionView | None
    feature_toggles: dict[str, Any]


class ControlResult(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    action: str
    request_id: str
    state: str
    #: False when this request_id was seen before (the first outcome is returned).
    applied: bool
    changed: bool
    control: ControlStateView


class ConfirmationRequiredBody(msgspec.Struct, frozen=True, kw_only=True):
    """Returned (HTTP 202) when a destructive action waits for a person's approval."""

    status: Literal["confirmation_required"]
    confirmation_id: str
    action: str
    expires_at: str
    how_to_approve: str


class QuestionCreate(Request, frozen=True):
    prompt: Text
    auto_pause: bool = False
    ttl_s: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] | None = None
    expiry_fallback: Literal["pause", "resume", "fail"] | None = None


class AnswerBody(Request, frozen=True):
    answer: Text


class DismissBody(Request, frozen=True):
    reason: ShortText | None = None


class EmptyBody(Request, frozen=True):
    """A body-less action; send ``{}``."""


class SettingsView(msgspec.Struct, frozen=True, kw_only=True):
    config: dict[str, Any]
    #: Dotted key -> the layer that set it (default, global, repo, env, run).
    sources: dict[str, str]
    files: dict[str, str]


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    principal: str
    csrf_token: str | None


class LoginCodeView(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    expires_at: str
