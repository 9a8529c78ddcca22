"""Map ``codex exec --json`` output (one JSON object a line) to our event payloads.

Codex 0.169 prints, for one ``exec`` (one turn):

* ``thread.started {thread_id}`` — the id ``codex exec resume <thread_id>`` continues;
* ``turn.started``, then ``item.started`` / ``item.updated`` / ``item.completed`` with an
  ``item`` of type ``agent_message``, ``reasoning``, ``command_execution``, ``file_change``,
  ``mcp_tool_call``, ``web_search``, ``todo_list``, ``collab_tool_call`` or ``error`` (a
  non-fatal warning, e.g. unknown model metadata);
* ``turn.completed {usage}`` — usage is the thread's running total (it includes earlier
  turns, also across ``exec resume``), so the per-turn figure is a difference; or
  ``error {message}`` followed by ``turn.failed {error: {message}}``.

A configuration error ends codex before any JSON (exit code 1, message on stderr):
:meth:`CodexTurnState.finish` turns that into a failure.

:func:`map_codex_line` is the pure mapping of one object; :class:`CodexTurnState` feeds
lines through it and keeps what an engine needs (thread id, status, final message, errors,
usage totals for the next resume). Tool parameters are redacted here (the event log
redacts again). Unknown kinds are counted in :attr:`CodexTurnState.ignored`, never raised.

==========================================  =================================================
codex line                                  payloads
==========================================  =================================================
``thread.started``                          none (``state.thread_id``)
``turn.started``                            ``StepStarted`` (when ``step_events``)
``turn.completed``                          ``Usage`` (this turn's share) + ``StepCompleted``
``turn.failed``                             ``StepFailed`` (when ``step_events``)
``error``                                   none (``state.errors``)
``item.completed`` agent_message            ``AgentMessage``
``item.completed`` command_execution        ``ToolCalled(tool="shell", params={command,
                                            exit_code})``
``item.completed`` file_change              ``ToolCalled(tool="apply_patch",
                                            params={changes: [{path, kind}]})``
``item.completed`` mcp_tool_call            ``ToolCalled(tool, server, params=arguments)``
``item.completed`` web_search               ``ToolCalled(tool="web_search", params={query})``
``item.completed`` collab_tool_call         ``ToolCalled(tool, server="codex")``
``item.completed`` reasoning / todo_list    none (``state.reasoning`` / ``state.plan``)
``item.completed`` error                    none (``state.warnings``)
``item.started`` / ``item.updated``         none (tracked as in flight)
anything else                               none (``state.ignored``)
==========================================  =================================================

The run loop emits its own ``step_*`` events around ``Engine.step``; an engine that lets it
do so builds ``CodexTurnState(step_events=False)`` and raises ``EngineFailed`` with
:attr:`CodexTurnState.failure` instead.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app.redact import redact, redact_text
from app.wire.events import (
    AgentMessage,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
    ToolCalled,
    Usage,
)

STEP_KIND = "codex"
#: Longest agent message kept in an event (the full text stays in ``state.final_message``).
MAX_MESSAGE_CHARS = 16_000
#: Longest string kept in a tool parameter (commands can carry whole patches).
MAX_PARAM_CHARS = 2_000
#: Longest error text kept.
MAX_ERROR_CHARS = 2_000

TurnStatus = Literal["pending", "running", "completed", "failed"]


@dataclass(frozen=True)
class CodexUsage:
    """Token counts as codex reports them in ``turn.completed`` (a thread's running total)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0

    @classmethod
    def from_json(cls, raw: Any) -> CodexUsage:
        if not isinstance(raw, Mapping):
            return cls()
        return cls(
            input_tokens=_int(raw.get("input_tokens")),
            cached_input_tokens=_int(raw.get("cached_input_tokens")),
            output_tokens=_int(raw.get("output_tokens")),
            reasoning_output_tokens=_int(raw.get("reasoning_output_tokens")),
        )

    def minus(self, earlier: CodexUsage | None) -> CodexUsage:
        """This total less an earlier one; the total itself when the counter went back."""
        if earlier is None:
            return self
        delta = CodexUsage(
            input_tokens=self.input_tokens - earlier.input_tokens,
            cached_input_tokens=self.cached_input_tokens - earlier.cached_input_tokens,
            output_tokens=self.output_tokens - earlier.output_tokens,
            reasoning_output_tokens=self.reasoning_output_tokens - earlier.reasoning_output_tokens,
        )
        if min(delta.to_json().values()) < 0:
            return self
        return delta

    def to_json(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_output_tokens": self.reasoning_output_tokens,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _clip(value, MAX_PARAM_CHARS)
    if isinstance(value, dict):
        return {key: _clip_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clip_strings(item) for item in value]
    return value


def safe_params(params: Any) -> dict[str, Any]:
    """Tool parameters fit for an event: secrets redacted, long strings clipped, a dict."""
    if not isinstance(params, Mapping):
        params = {} if params is None else {"value": params}
    cleaned = _clip_strings(redact(dict(params)))
    return cleaned if isinstance(cleaned, dict) else {}


def error_text(raw: Any) -> str:
    """The message of a codex ``error``/``turn.failed`` payload, redacted and clipped."""
    if isinstance(raw, Mapping):
        raw = raw.get("message", raw)
    if not isinstance(raw, str):
        raw = json.dumps(raw, default=str)
    return _clip(redact_text(raw.strip()) or "codex reported an error", MAX_ERROR_CHARS)


def _status(item: Mapping[str, Any], default: str = "completed") -> str:
    status = item.get("status")
    return status if isinstance(status, str) and status else default


def map_item(item: Mapping[str, Any]) -> list[Payload]:
    """The payloads of one completed codex item (see the module's table)."""
    kind = item.get("type")
    call_id = item.get("id") if isinstance(item.get("id"), str) else None
    if kind == "agent_message":
        text = str(item.get("text") or "")
        return [
            AgentMessage(
                text=_clip(text, MAX_MESSAGE_CHARS), truncated=len(text) > MAX_MESSAGE_CHARS
            )
        ]
    if kind == "command_execution":
        params: dict[str, Any] = {"command": item.get("command")}
        if item.get("exit_code") is not None:
            params["exit_code"] = item.get("exit_code")
        return [
            ToolCalled(
                tool="shell", params=safe_params(params), call_id=call_id, status=_status(item)
            )
        ]
    if kind == "file_change":
        changes = [
            {"path": change.get("path"), "kind": change.get("kind")}
            for change in item.get("changes") or []
            if isinstance(change, Mapping)
        ]
        return [
            ToolCalled(
                tool="apply_patch",
                params=safe_params({"changes": changes}),
                call_id=call_id,
                status=_status(item),
            )
        ]
    if kind == "mcp_tool_call":
        return [
            ToolCalled(
                tool=str(item.get("tool") or "unknown"),
                server=str(item["server"]) if item.get("server") else None,
                params=safe_params(item.get("arguments")),
                call_id=call_id,
                status=_status(item),
            )
        ]
    if kind == "web_search":
        return [
            ToolCalled(
                tool="web_search",
                params=safe_params({"query": item.get("query")}),
                call_id=call_id,
                status=_status(item),
            )
        ]
    if kind == "collab_tool_call":
        params = {
            key: item.get(key) for key in ("sender_thread_id", "receiver_thread_ids") if key in item
        }
        return [
            ToolCalled(
                tool=str(item.get("tool") or "collab"),
                server="codex",
                params=safe_params(params),
                call_id=call_id,
                status=_status(item),
            )
        ]
    return []


#: Item types that are understood but produce no event.
SILENT_ITEMS = frozenset({"reasoning", "todo_list", "error"})
MAPPED_ITEMS = frozenset(
    {
        "agent_message",
        "command_execution",
        "file_change",
        "mcp_tool_call",
        "web_search",
        "collab_tool_call",
    }
)


def map_codex_line(
    obj: Mapping[str, Any],
    *,
    step: int = 1,
    model: str | None = None,
    usage_before: CodexUsage | None = None,
    duration_ms: int = 0,
    step_events: bool = True,
) -> list[Payload]:
    """The payloads of one codex JSONL object (pure; see the module's table).

    ``usage_before`` is the thread's usage total before this turn (None for a new thread):
    ``Usage`` carries only this turn's share.
    """
    kind = obj.get("type")
    if kind == "turn.started":
        return [StepStarted(step=step, kind=STEP_KIND)] if step_events else []
    if kind == "turn.completed":
        turn = CodexUsage.from_json(obj.get("usage")).minus(usage_before)
        payloads: list[Payload] = [
            Usage(
                model=model,
                input_tokens=turn.input_tokens,
                output_tokens=turn.output_tokens,
                cached_input_tokens=turn.cached_input_tokens,
            )
        ]
        if step_events:
            payloads.append(StepCompleted(step=step, kind=STEP_KIND, duration_ms=duration_ms))
        return payloads
    if kind == "turn.failed":
        if not step_events:
            return []
        return [StepFailed(step=step, kind=STEP_KIND, error=error_text(obj.get("error")))]
    if kind == "item.completed" and isinstance(obj.get("item"), Mapping):
        return map_item(obj["item"])
    return []


@dataclass
class CodexTurnState:
    """What one ``codex exec`` process said, fed line by line."""

    step: int = 1
    model: str | None = None
    #: The thread's usage total before this process (from the previous checkpoint).
    usage_before: CodexUsage | None = None
    step_events: bool = True
    clock: Callable[[], float] = time.monotonic

    thread_id: str | None = None
    status: TurnStatus = "pending"
    #: The last agent message (the turn's answer), unclipped.
    final_message: str | None = None
    messages: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    plan: list[dict[str, Any]] = field(default_factory=list)
    #: Fatal errors (``error`` lines, ``turn.failed``, a failed start), redacted.
    errors: list[str] = field(default_factory=list)
    #: Non-fatal ``error`` items (e.g. "Model metadata for `x` not found").
    warnings: list[str] = field(default_factory=list)
    #: The thread's usage total after this turn (store it for the next resume).
    usage_total: CodexUsage | None = None
    #: This process's share of the usage.
    usage_turn: CodexUsage | None = None
    #: Items started and not (yet) completed, by item id.
    in_flight: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Unknown line and item kinds, counted.
    ignored: Counter[str] = field(default_factory=Counter)
    lines: int = 0
    _turn_started_at: float | None = None

    @property
    def failure(self) -> str | None:
        """Why the turn failed, in words (None unless it failed)."""
        if self.status != "failed":
            return None
        return self.errors[-1] if self.errors else "codex failed"

    def feed_line(self, line: str | bytes) -> list[Payload]:
        """Feed one stdout line; blank lines are skipped, non-JSON lines are counted."""
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if not text.strip():
            return []
        try:
            obj = json.loads(text)
        except ValueError:
            self.ignored["non_json"] += 1
            return []
        if not isinstance(obj, dict):
            self.ignored["non_object"] += 1
            return []
        return self.feed(obj)

    def feed(self, obj: Mapping[str, Any]) -> list[Payload]:
        """Feed one parsed JSONL object; return the payloads to append."""
        self.lines += 1
        kind = obj.get("type")
        duration_ms = 0
        if kind == "thread.started":
            if isinstance(obj.get("thread_id"), str):
                self.thread_id = obj["thread_id"]
        elif kind == "turn.started":
            self.status = "running"
            self._turn_started_at = self.clock()
        elif kind == "turn.completed":
            self.status = "completed"
            total = CodexUsage.from_json(obj.get("usage"))
            self.usage_turn = total.minus(self.usage_before)
            self.usage_total = total
            if self._turn_started_at is not None:
                duration_ms = max(0, int((self.clock() - self._turn_started_at) * 1000))
        elif kind == "turn.failed":
            self.status = "failed"
            message = error_text(obj.get("error"))
            if not self.errors or self.errors[-1] != message:
                self.errors.append(message)
        elif kind == "error":
            self.errors.append(error_text(obj.get("message", obj)))
        elif kind in ("item.started", "item.updated", "item.completed"):
            self._track_item(str(kind), obj.get("item"))
        else:
            self.ignored[str(kind)] += 1
        return map_codex_line(
            obj,
            step=self.step,
            model=self.model,
            usage_before=self.usage_before,
            duration_ms=duration_ms,
            step_events=self.step_events,
        )

    def _track_item(self, kind: str, item: Any) -> None:
        if not isinstance(item, Mapping):
            self.ignored[f"{kind}:malformed"] += 1
            return
        item_type = str(item.get("type"))
        item_id = str(item.get("id"))
        if item_type not in MAPPED_ITEMS and item_type not in SILENT_ITEMS:
            self.ignored[f"item:{item_type}"] += 1
        if kind != "item.completed":
            self.in_flight[item_id] = dict(item)
            if item_type == "todo_list":
                self._set_plan(item)
            return
        self.in_flight.pop(item_id, None)
        if item_type == "agent_message":
            text = str(item.get("text") or "")
            self.messages.append(text)
            self.final_message = text
        elif item_type == "reasoning":
            self.reasoning.append(_clip(str(item.get("text") or ""), MAX_MESSAGE_CHARS))
        elif item_type == "todo_list":
            self._set_plan(item)
        elif item_type == "error":
            self.warnings.append(error_text(item.get("message")))

    def _set_plan(self, item: Mapping[str, Any]) -> None:
        self.plan = [dict(entry) for entry in item.get("items") or [] if isinstance(entry, dict)]

    def finish(self, exit_code: int | None, stderr: str = "") -> list[Payload]:
        """Close the turn when the process ended; return the payloads still owed.

        Tool items still in flight are reported as ``interrupted``. A process that ended
        without ``turn.completed`` (killed, crashed, or a configuration error before any
        JSON) fails the turn with its last error, or the last line of ``stderr``.
        """
        payloads: list[Payload] = []
        for item in self.in_flight.values():
            if item.get("type") in MAPPED_ITEMS and item.get("type") != "agent_message":
                payloads.extend(map_item({**item, "status": "interrupted"}))
        self.in_flight.clear()
        if self.status == "completed":
            if exit_code not in (0, None):
                self.warnings.append(f"codex exited with code {exit_code} after its turn")
            return payloads
        if self.status != "failed":
            reason = self._exit_reason(exit_code, stderr)
            self.errors.append(reason)
            self.status = "failed"
            if self.step_events:
                payloads.append(StepFailed(step=self.step, kind=STEP_KIND, error=reason))
        return payloads

    def _exit_reason(self, exit_code: int | None, stderr: str) -> str:
        if self.errors:
            return self.errors[-1]
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        # codex prints "Reading additional input from stdin..." and log lines before errors.
        meaningful = [line for line in lines if not line.startswith("Reading additional input")]
        # A Rust error report ("Error: ..." then "Stack backtrace:" and frames): keep the error.
        errors = [line for line in meaningful if line.startswith("Error:")]
        if errors:
            meaningful = errors
        where = "before starting a turn" if self._turn_started_at is None else "mid-turn"
        reason = f"codex exited with code {exit_code} {where}"
        if meaningful:
            reason += f": {meaningful[-1]}"
        return error_text(reason)
