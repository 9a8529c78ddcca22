"""``app mcp``: the delegation tools over stdio, on the ``mcp`` 2.x SDK's low-level server.

Tools (DESIGN §8) and the profiles that list them:

| tool | full | question_only |
|---|---|---|
| ``delegate.spawn`` | yes | |
| ``delegate.status`` | yes | own run |
| ``delegate.pause`` / ``delegate.resume`` / ``delegate.cancel`` | yes | |
| ``delegate.question.enqueue`` / ``.poll`` / ``.answer`` | yes | own run / own questions |

Every call goes through :meth:`DelegationServer.call_tool`, in this order: the name (dotted,
or Codex's ``_`` spelling), the secret-argument guard (any secret-looking key anywhere in the
arguments is refused and reported as a ``security_violation``), the profile (a tool outside
it is refused with ``delegate_mode_forbidden``, also a violation), a size cap, validation
against the tool's input Struct, then the runner call. Whatever goes wrong becomes a tool
error (``isError``) whose text says what to do; the server itself never dies of a bad call.

Results carry ``structuredContent`` (matching the advertised output schema) and a text block:
a short summary a model can act on, then the same JSON.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
import msgspec
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from app.home import Home
from app.mcp.schemas import (
    BUDGET_KEYS,
    AnswerInput,
    CancelInput,
    CancelOutput,
    ConfirmationInfo,
    ControlInput,
    ControlOutput,
    EnqueueInput,
    EventLine,
    Input,
    Output,
    OwnEnqueueInput,
    OwnStatusInput,
    PollInput,
    PollOutput,
    Profile,
    QuestionInfo,
    QuestionOutput,
    SpawnInput,
    SpawnOutput,
    StatusInput,
    StatusOutput,
    tool_schema,
)
from app.redact import find_secret_keys, redact_text

if TYPE_CHECKING:
    from app.mcp.client import RunnerClient

log = logging.getLogger("app.mcp")

SERVER_NAME = "codex-delegation"
#: Arguments larger than this (as JSON) are refused before anything else looks at them.
MAX_ARGUMENT_BYTES = 256 * 1024
#: Characters of an event's payload shown in ``delegate.status``.
DETAIL_CHARS = 240
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "budget_exceeded"})
#: Events that end a ``delegate.status`` wait: the run's state moved, or something now waits
#: for the caller (a question, a confirmation).
WAKE_EVENTS = frozenset(
    {
        "run_queued",
        "run_started",
        "pause_requested",
        "run_paused",
        "run_resumed",
        "run_completed",
        "run_failed",
        "run_cancelled",
        "budget_exceeded",
        "run_interrupted",
        "question_queued",
        "question_answered",
        "question_expired",
        "question_dismissed",
        "confirmation_required",
        "confirmation_resolved",
    }
)
#: How often a list poll (no single question to long-poll) asks the runner again.
LIST_POLL_INTERVAL_S = 0.2

INSTRUCTIONS = {
    "full": (
        "Delegation tools of the Codex Delegation Platform (a local runner supervises the "
        "runs). Hand self-contained work to a delegate run with delegate.spawn: it returns at "
        "once with a run_id. Follow runs with delegate.status (pass wait_ms to block until "
        "something changes instead of calling it in a loop). Delegates may ask you questions: "
        "find them with delegate.question.poll and reply with delegate.question.answer. "
        "delegate.pause/resume steer a run; delegate.cancel needs a person's approval."
    ),
    "question_only": (
        "You are a delegate run of the Codex Delegation Platform. When you cannot proceed "
        "without a decision, ask your parent with delegate.question.enqueue, then wait for "
        "the answer with delegate.question.poll {question_id, wait_ms}. delegate.status shows "
        "your own run. You cannot start or control runs."
    ),
}


class ToolRefused(Exception):
    """A call this server refuses itself; ``code`` names why, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[["DelegationServer", Any], Awaitable[tuple[Output, str]]]


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, description, schemas per profile and handler."""

    name: str
    title: str
    description: str
    #: The input Struct in each profile that lists the tool.
    inputs: Mapping[Profile, type[Input]]
    output: type[Output]
    handler: Handler
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    #: Per-profile description, where the profile changes what the tool does.
    descriptions: Mapping[Profile, str] = field(default_factory=dict)

    def describe(self, profile: Profile) -> str:
        return self.descriptions.get(profile, self.description)


# -- helpers -------------------------------------------------------------------------------------


def _json(output: msgspec.Struct) -> str:
    return msgspec.json.encode(output).decode()


def _preview(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _event_line(event: Mapping[str, Any]) -> EventLine:
    detail = msgspec.json.encode(event.get("payload", {})).decode()
    if len(detail) > DETAIL_CHARS:
        detail = detail[: DETAIL_CHARS - 1] + "…"
    return EventLine(
        seq=int(event["seq"]),
        ts=str(event["ts"]),
        type=str(event["type"]),
        actor=str(event["actor"]),
        detail=detail,
    )


def _question_lines(questions: list[QuestionInfo], *, answerable: bool) -> list[str]:
    lines = []
    for question in questions:
        line = f"  {question.id} (run {question.run_id}, {question.status}): "
        line += _preview(question.prompt)
        if question.answer is not None:
            line += f"\n    answer: {_preview(question.answer)}"
        lines.append(line)
    if answerable and any(q.status == "pending" for q in questions):
        lines.append("  Answer with delegate.question.answer {question_id, answer}.")
    return lines


# -- the tools -------------------------------------------------------------------------------


class DelegationServer:
    """The tools of one ``app mcp`` process: a profile, a runner connection, a little memory."""

    def __init__(
        self, client: RunnerClient, *, profile: Profile, own_run_id: str | None = None
    ) -> None:
        self.client = client
        self.profile = profile
        self.own_run_id = own_run_id
        #: Questions asked through this server: a delegate cannot list the queue itself.
        self.asked: list[str] = []
        self._tools: list[types.Tool] | None = None

    # -- MCP plumbing ----------------------------------------------------------------------------

    def tools(self) -> list[types.Tool]:
        """The tools of this profile, with their schemas (built once, on first use)."""
        if self._tools is None:
            self._tools = [
                types.Tool(
                    name=spec.name,
                    title=spec.title,
                    description=spec.describe(self.profile),
                    input_schema=tool_schema(spec.inputs[self.profile], for_input=True),
                    output_schema=tool_schema(spec.output, for_input=False),
                    annotations=types.ToolAnnotations(
                        title=spec.title,
                        read_only_hint=spec.read_only,
                        destructive_hint=spec.destructive,
                        idempotent_hint=spec.idempotent,
                        open_world_hint=False,
                    ),
                )
                for spec in TOOLS
                if self.profile in spec.inputs
            ]
        return self._tools

    async def call_tool(self, name: str, arguments: Any) -> types.CallToolResult:
        """Run one tool call; every failure becomes a tool error, never an exception."""
        try:
            return await self._call(name, arguments)
        except ToolRefused as refused:
            return self._error(refused.code, str(refused))
        except Exception as error:  # the server must outlive any bad call
            from app.mcp.client import RunnerError, RunnerUnavailable

            if isinstance(error, RunnerError):
                return self._error(error.code, error.detail)
            if isinstance(error, RunnerUnavailable):
                return self._error(error.code, str(error))
            log.exception("tool %s failed", redact_text(str(name))[:200])
            return self._error(
                "internal_error",
                f"the delegation server failed on this call ({type(error).__name__}); "
                "its stderr log has the details. Other calls keep working.",
            )

    async def _call(self, name: str, arguments: Any) -> types.CallToolResult:
        spec = lookup(name)
        shown_name = spec.name if spec is not None else _preview(str(name), 80)
        args = arguments if arguments is not None else {}
        if not isinstance(args, dict):
            raise ToolRefused("invalid_arguments", f"{shown_name} takes a JSON object of arguments")
        # First, whatever the tool: a secret must not go anywhere, not even into an error.
        secret_paths = find_secret_keys(args)
        if secret_paths:
            shown = ", ".join(_preview(path, 100) for path in secret_paths[:5])
            where = await self._violation("secret_argument", shown_name, secret_paths, args)
            raise ToolRefused(
                "secret_argument_refused",
                f"{shown_name} refused: the argument{'s' if len(secret_paths) > 1 else ''} "
                f"{shown} look{'' if len(secret_paths) > 1 else 's'} like a secret (keys "
                "named like token, nonce, password, secret, api_key... are never accepted). "
                "Credentials travel out of band: this server already authenticates to the "
                f"runner, and confirmations are approved by a person. {where} Call again "
                "without it.",
            )
        if spec is None:
            available = ", ".join(tool.name for tool in self.tools())
            raise ToolRefused(
                "unknown_tool", f"there is no tool {shown_name!r}; tools: {available}"
            )
        input_type = spec.inputs.get(self.profile)
        if input_type is None:
            where = await self._violation("profile_forbidden", spec.name, [], args)
            allowed = ", ".join(tool.name for tool in self.tools())
            raise ToolRefused(
                "delegate_mode_forbidden",
                f"{spec.name} is not available in the {self.profile} profile (a delegate "
                f"cannot start or control runs); this server offers: {allowed}. {where}",
            )
        raw = msgspec.json.encode(args)
        if len(raw) > MAX_ARGUMENT_BYTES:
            raise ToolRefused(
                "invalid_arguments",
                f"{spec.name}: the arguments are {len(raw)} bytes as JSON; the limit is "
                f"{MAX_ARGUMENT_BYTES}",
            )
        try:
            parsed = msgspec.convert(args, input_type)
        except msgspec.ValidationError as error:
            raise ToolRefused(
                "invalid_arguments",
                f"{spec.name}: {error}. It takes: {_fields_text(input_type)}.",
            ) from None
        output, text = await spec.handler(self, parsed)
        notice = self.client.take_notice()
        if notice is not None:
            output = msgspec.structs.replace(output, notice=notice)
            text = f"Note: {notice}\n{text}"
        return types.CallToolResult(
            content=[types.TextContent(text=f"{text}\n\n{_json(output)}")],
            structured_content=msgspec.to_builtins(output),
        )

    def _error(self, code: str, message: str) -> types.CallToolResult:
        notice = self.client.take_notice()
        text = f"[{code}] {redact_text(message)}"
        if notice is not None:
            text = f"Note: {notice}\n{text}"
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)

    async def _violation(self, kind: str, tool: str, paths: list[str], args: dict[str, Any]) -> str:
        """Report a refused call: stderr log always, the runner's event log when it can."""
        run_id = self.own_run_id if self.profile == "question_only" else None
        named = args.get("run_id")
        if run_id is None and isinstance(named, str) and len(named) <= 200:
            run_id = named
        log.warning(
            "security_violation: kind=%s tool=%s profile=%s run=%s paths=%s",
            kind,
            tool,
            self.profile,
            # Model-chosen text: one line each, so a crafted key cannot forge log lines.
            _preview(str(run_id), 200),
            ",".join(_preview(path, 100) for path in paths[:20]),
        )
        try:
            recorded = await self.client.record_violation(
                kind=kind, tool=tool, paths=paths, run_id=run_id
            )
        except Exception:
            log.exception("could not report the security violation to the runner")
            recorded = False
        if recorded:
            return "The attempt was recorded as a security_violation event."
        return "The attempt was logged as a security_violation by the delegation server."

    def _own_run(self, run_id: str | None) -> str:
        """The run a question_only call is about: its own (naming another is refused)."""
        own = self.own_run_id
        if own is None:
            raise ToolRefused(
                "delegate_identity_unknown",
                "this delegate's run id is unknown: the runner must set CODEX_DELEGATION_RUN_ID "
                "(or put the token file in runs/<run_id>/) for the delegation server",
            )
        if run_id is not None and run_id != own:
            raise ToolRefused(
                "delegate_mode_forbidden",
                f"a delegate can only see its own run ({own}), not {run_id}",
            )
        return own

    def _target_run(self, run_id: str | None, tool: str) -> str:
        """The run a call is about: a delegate's own, or the one the parent named."""
        if self.profile == "question_only":
            return self._own_run(run_id)
        if run_id is None:  # the full profile's Structs require it; this keeps mypy honest
            raise ToolRefused("invalid_arguments", f"{tool} needs run_id")
        return run_id

    # -- handlers ----------------------------------------------------------------------------

    async def spawn(self, args: SpawnInput) -> tuple[Output, str]:
        from app.wire.api import SpawnResponse

        config: dict[str, Any] = dict(args.config)
        if args.budgets is not None:
            for name, key in BUDGET_KEYS.items():
                value = getattr(args.budgets, name)
                if value is None:
                    continue
                if key in config and config[key] != value:
                    raise ToolRefused(
                        "invalid_arguments",
                        f"delegate.spawn: budgets.{name} and config[{key!r}] disagree; set it once",
                    )
                config[key] = value
        body: dict[str, Any] = {"task": args.task, "config": config}
        for key in ("engine", "repo", "mode", "rlm_policy", "task_id"):
            value = getattr(args, key)
            if value is not None:
                body[key] = value
        if self.own_run_id is not None:
            # A delegate with the full profile delegates further: its runs are its children.
            body["parent_run_id"] = self.own_run_id
        _, raw = await self.client.call("POST", "/api/runs", json_body=body, idempotent=False)
        created = msgspec.json.decode(raw, type=SpawnResponse)
        run = created.run
        output = SpawnOutput(
            run_id=run.id,
            status=run.state,
            engine=run.engine,
            task_id=run.task_id,
            events_url=created.events_url,
            stream_url=created.stream_url,
            created_at=run.created_at,
        )
        text = (
            f"Spawned run {run.id} ({run.state}, engine {run.engine}); it runs in the "
            f"background. Follow it with delegate.status {{run_id: {run.id!r}, wait_ms: 30000}}."
        )
        return output, text

    async def status(self, args: StatusInput | OwnStatusInput) -> tuple[Output, str]:
        run_id = self._target_run(args.run_id, "delegate.status")
        started = time.monotonic()
        first = await self._snapshot(run_id, args)
        output, waited = first, 0
        if args.wait_ms and not first.terminal:
            await self.client.wait_for_event(
                run_id,
                after=first.last_seq,
                types=WAKE_EVENTS,
                timeout_s=args.wait_ms / 1000,
            )
            output = await self._snapshot(run_id, args)
            waited = max(1, round((time.monotonic() - started) * 1000))
        output = msgspec.structs.replace(
            output, changed=output.state != first.state, waited_ms=waited
        )
        return output, _status_text(output, answerable=self.profile == "full")

    async def _snapshot(self, run_id: str, args: StatusInput | OwnStatusInput) -> StatusOutput:
        from app.wire.runs import RunSummary

        async def pending_questions() -> list[QuestionInfo]:
            if self.profile == "full":
                _, raw = await self.client.call(
                    "GET",
                    "/api/questions",
                    params={"status": "pending", "run_id": run_id, "limit": 100},
                )
                return msgspec.json.decode(raw, type=_QuestionList).questions
            asked = await self._asked_questions()
            return [q for q in asked if q.status == "pending"]

        async def pending_confirmations() -> list[ConfirmationInfo]:
            if self.profile != "full":
                return []  # confirmations are for people; a delegate cannot list them
            _, raw = await self.client.call(
                "GET",
                "/api/confirmations",
                params={"status": "pending", "run_id": run_id, "limit": 100},
            )
            return msgspec.json.decode(raw, type=_ConfirmationList).confirmations

        async def run_summary() -> RunSummary:
            _, raw = await self.client.call("GET", f"/api/runs/{run_id}")
            return msgspec.json.decode(raw, type=RunSummary)

        run, questions, confirmations = await asyncio.gather(
            run_summary(), pending_questions(), pending_confirmations()
        )
        events: list[dict[str, Any]] = []
        if args.events:
            after = (
                args.after_seq if args.after_seq is not None else max(0, run.last_seq - args.events)
            )
            events = await self._events(run_id, after=after, limit=args.events)
        answer = None
        if run.state == "succeeded":
            completed = [e for e in events if e["type"] == "run_completed"]
            if not completed:
                tail = await self._events(run_id, after=max(0, run.last_seq - 20), limit=20)
                completed = [e for e in tail if e["type"] == "run_completed"]
            if completed:
                preview = completed[-1].get("payload", {}).get("answer_preview")
                answer = preview if isinstance(preview, str) else None
        return StatusOutput(
            run_id=run.id,
            state=run.state,
            terminal=run.state in TERMINAL_STATES,
            state_reason=run.state_reason,
            engine=run.engine,
            task=_preview(run.task, 500),
            parent_run_id=run.parent_run_id,
            created_at=run.created_at,
            updated_at=run.updated_at,
            last_seq=run.last_seq,
            answer=answer,
            events=[_event_line(e) for e in events],
            pending_questions=questions,
            pending_confirmations=confirmations,
            changed=False,
            waited_ms=0,
        )

    async def _events(self, run_id: str, *, after: int, limit: int) -> list[dict[str, Any]]:
        _, raw = await self.client.call(
            "GET", f"/api/runs/{run_id}/events", params={"after": after, "limit": limit}
        )
        page: list[dict[str, Any]] = msgspec.json.decode(raw)["events"]
        return page

    async def _asked_questions(self) -> list[QuestionInfo]:
        if not self.asked:
            return []
        return list(await asyncio.gather(*(self._question(qid) for qid in self.asked)))

    async def _question(self, question_id: str, wait_ms: int = 0) -> QuestionInfo:
        params = {"wait_ms": wait_ms} if wait_ms else None
        _, raw = await self.client.call(
            "GET",
            f"/api/questions/{question_id}",
            params=params,
            timeout_s=wait_ms / 1000 + 10 if wait_ms else None,
        )
        return msgspec.json.decode(raw, type=QuestionInfo)

    async def _control(self, action: str, args: ControlInput) -> tuple[Output, str]:
        from app.mcp.client import new_request_id
        from app.wire.api import ControlResult

        body: dict[str, Any] = {"action": action, "request_id": args.request_id or new_request_id()}
        if args.reason is not None:
            body["reason"] = args.reason
        # Safe to resend: the runner answers a repeated request_id with the first outcome.
        _, raw = await self.client.call(
            "POST", f"/api/runs/{args.run_id}/control", json_body=body, idempotent=True
        )
        result = msgspec.json.decode(raw, type=ControlResult)
        output = ControlOutput(
            run_id=result.run_id,
            action=result.action,
            request_id=result.request_id,
            state=result.state,
            applied=result.applied,
            changed=result.changed,
        )
        if not result.applied:
            text = f"request {result.request_id} was handled before; the run is {result.state}."
        elif result.changed:
            text = f"{action}: run {result.run_id} is now {result.state}."
        else:
            text = f"{action}: nothing to change, run {result.run_id} is {result.state}."
        if action == "pause" and result.state == "pausing":
            text += " It stops at its next step boundary; delegate.status with wait_ms shows when."
        return output, text

    async def pause(self, args: ControlInput) -> tuple[Output, str]:
        return await self._control("pause", args)

    async def resume(self, args: ControlInput) -> tuple[Output, str]:
        return await self._control("resume", args)

    async def cancel(self, args: CancelInput) -> tuple[Output, str]:
        from app.mcp.client import new_request_id
        from app.wire.api import ConfirmationRequiredBody, ControlResult

        body: dict[str, Any] = {"action": "cancel", "request_id": new_request_id()}
        if args.reason is not None:
            body["reason"] = args.reason
        # Not resent after a broken connection: a second request could stack a second
        # confirmation only if the reason differed, but the model should look first.
        status, raw = await self.client.call(
            "POST", f"/api/runs/{args.run_id}/control", json_body=body, idempotent=False
        )
        if status == 202:
            required = msgspec.json.decode(raw, type=ConfirmationRequiredBody)
            output = CancelOutput(
                status="confirmation_required",
                run_id=args.run_id,
                action=required.action,
                confirmation_id=required.confirmation_id,
                expires_at=required.expires_at,
                how_to_approve=required.how_to_approve,
            )
            text = (
                f"Cancelling {args.run_id} needs a person's approval: confirmation "
                f"{required.confirmation_id} is pending until {required.expires_at}. "
                f"{required.how_to_approve} The run keeps going until then."
            )
            return output, text
        result = msgspec.json.decode(raw, type=ControlResult)
        output = CancelOutput(
            status="applied", run_id=result.run_id, action=result.action, state=result.state
        )
        return output, f"cancel: run {result.run_id} is now {result.state}."

    async def enqueue(self, args: EnqueueInput | OwnEnqueueInput) -> tuple[Output, str]:
        run_id = self._target_run(args.run_id, "delegate.question.enqueue")
        body: dict[str, Any] = {"prompt": args.prompt, "auto_pause": args.auto_pause}
        if args.ttl_s is not None:
            body["ttl_s"] = args.ttl_s
        if args.expiry_fallback is not None:
            body["expiry_fallback"] = args.expiry_fallback
        _, raw = await self.client.call(
            "POST", f"/api/runs/{run_id}/questions", json_body=body, idempotent=False
        )
        question = msgspec.json.decode(raw, type=QuestionInfo)
        self.asked.append(question.id)
        del self.asked[:-100]  # the most recent hundred are plenty to list
        text = (
            f"Question {question.id} is queued (expires {question.expires_at}). Wait for the "
            f"answer with delegate.question.poll {{question_id: {question.id!r}, wait_ms: 30000}}."
        )
        if question.auto_pause:
            text += " The run is paused until it is answered."
        return QuestionOutput(question=question), text

    async def poll(self, args: PollInput) -> tuple[Output, str]:
        started = time.monotonic()
        if args.question_id is not None:
            question = await self._question(args.question_id, args.wait_ms)
            waited = round((time.monotonic() - started) * 1000) if args.wait_ms else 0
            timed_out = bool(args.wait_ms) and question.status == "pending"
            output = PollOutput(questions=[question], waited_ms=waited, timed_out=timed_out)
            return output, _poll_text(output, answerable=self.profile == "full")
        if self.profile == "question_only" and args.run_id is not None:
            self._own_run(args.run_id)
        deadline = started + args.wait_ms / 1000
        while True:
            questions = await self._list_questions(args)
            if questions or time.monotonic() >= deadline:
                break
            await anyio.sleep(min(LIST_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
        waited = round((time.monotonic() - started) * 1000) if args.wait_ms else 0
        output = PollOutput(
            questions=questions, waited_ms=waited, timed_out=bool(args.wait_ms) and not questions
        )
        return output, _poll_text(output, answerable=self.profile == "full")

    async def _list_questions(self, args: PollInput) -> list[QuestionInfo]:
        if self.profile == "question_only":
            asked = await self._asked_questions()
            matching = [q for q in asked if args.status in ("any", q.status)]
            return matching[-args.limit :]
        params: dict[str, Any] = {"limit": args.limit}
        if args.status != "any":
            params["status"] = args.status
        if args.run_id is not None:
            params["run_id"] = args.run_id
        _, raw = await self.client.call("GET", "/api/questions", params=params)
        return msgspec.json.decode(raw, type=_QuestionList).questions

    async def answer(self, args: AnswerInput) -> tuple[Output, str]:
        _, raw = await self.client.call(
            "POST",
            f"/api/questions/{args.question_id}/answer",
            json_body={"answer": args.answer},
            idempotent=False,
        )
        question = msgspec.json.decode(raw, type=QuestionInfo)
        text = f"Answered {question.id}; run {question.run_id} has the answer."
        return QuestionOutput(question=question), text


class _QuestionList(msgspec.Struct, frozen=True):
    questions: list[QuestionInfo]


class _ConfirmationList(msgspec.Struct, frozen=True):
    confirmations: list[ConfirmationInfo]


def _fields_text(struct: type[msgspec.Struct]) -> str:
    info = sorted(msgspec.structs.fields(struct), key=lambda f: not f.required)
    parts = [f.encode_name + (" (required)" if f.required else "") for f in info]
    return ", ".join(parts) or "no arguments"


def _status_text(output: StatusOutput, *, answerable: bool) -> str:
    lines = [f"Run {output.run_id} is {output.state} (engine {output.engine})."]
    if output.waited_ms:
        lines.append(
            f"Waited {output.waited_ms} ms; the state "
            + ("changed." if output.changed else "did not change.")
        )
    if output.state_reason:
        lines.append(f"Reason: {output.state_reason}")
    if output.answer is not None:
        lines.append(f"Answer: {output.answer}")
    if output.events:
        lines.append("Latest events:")
        lines.extend(f"  #{e.seq} {e.type} ({e.actor}) {e.detail}" for e in output.events)
    if output.pending_questions:
        lines.append(f"Pending questions ({len(output.pending_questions)}):")
        lines.extend(_question_lines(output.pending_questions, answerable=answerable))
    if output.pending_confirmations:
        lines.append(
            f"Waiting for a person to approve ({len(output.pending_confirmations)}): "
            + ", ".join(f"{c.action} ({c.id})" for c in output.pending_confirmations)
        )
    if not output.terminal and not output.waited_ms:
        lines.append("Pass wait_ms (up to 30000) to block until it changes.")
    return "\n".join(lines)


def _poll_text(output: PollOutput, *, answerable: bool) -> str:
    if not output.questions:
        suffix = f" after waiting {output.waited_ms} ms" if output.waited_ms else ""
        return f"No matching questions{suffix}."
    lines = [f"{len(output.questions)} question(s):"]
    lines.extend(_question_lines(output.questions, answerable=answerable))
    if output.timed_out:
        lines.append(f"Still pending after {output.waited_ms} ms; poll again to keep waiting.")
    return "\n".join(lines)


# -- the tool table ---------------------------------------------------------------------------

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="delegate.spawn",
        title="Spawn a delegate run",
        description=(
            "Start a delegate run that works on a task in the background, supervised by the "
            "local runner, and return at once with its run_id (it never waits for the work). "
            "Use it to hand off self-contained work: an investigation over a repository, a "
            "long or parallel subtask. Write the task so it stands alone. Then follow the run "
            "with delegate.status (wait_ms blocks until it changes) and answer its questions "
            "with delegate.question.poll / delegate.question.answer. Returns {run_id, status, "
            "engine, events_url, stream_url, created_at}."
        ),
        inputs={"full": SpawnInput},
        output=SpawnOutput,
        handler=DelegationServer.spawn,
    ),
    ToolSpec(
        name="delegate.status",
        title="Show a delegate run",
        description=(
            "Show a run: its state (queued, running, pausing, paused, interrupted, or the "
            "final succeeded, failed, cancelled, budget_exceeded), its latest events, its "
            "answer once it succeeded, and the questions and confirmations waiting on it. With "
            "wait_ms it blocks (at most 30 s) until the state changes or a question or "
            "confirmation arrives; use that instead of calling it in a tight loop. Returns "
            "{state, terminal, answer, events[], pending_questions[], pending_confirmations[], "
            "changed, waited_ms, last_seq}."
        ),
        descriptions={
            "question_only": (
                "Show your own run: its state, latest events and your questions that are still "
                "pending. With wait_ms it blocks (at most 30 s) until something changes. "
                "Returns {state, terminal, events[], pending_questions[], changed, waited_ms}."
            )
        },
        inputs={"full": StatusInput, "question_only": OwnStatusInput},
        output=StatusOutput,
        handler=DelegationServer.status,
        read_only=True,
        idempotent=True,
    ),
    ToolSpec(
        name="delegate.pause",
        title="Pause a delegate run",
        description=(
            "Pause a run at its next step boundary: it saves a checkpoint and frees its worker, "
            "losing nothing. Use it to stop a run's progress for a while; continue it with "
            "delegate.resume. Returns {state (pausing, then paused), applied, changed}."
        ),
        inputs={"full": ControlInput},
        output=ControlOutput,
        handler=DelegationServer.pause,
        idempotent=True,
    ),
    ToolSpec(
        name="delegate.resume",
        title="Resume a delegate run",
        description=(
            "Resume a paused run from its checkpoint (or withdraw a pause that has not taken "
            "effect yet). Returns {state, applied, changed}."
        ),
        inputs={"full": ControlInput},
        output=ControlOutput,
        handler=DelegationServer.resume,
        idempotent=True,
    ),
    ToolSpec(
        name="delegate.cancel",
        title="Cancel a delegate run (needs approval)",
        description=(
            "Ask to stop a run for good. Cancelling is destructive, so it does not happen at "
            "once: this returns status confirmation_required with a confirmation_id and "
            "how_to_approve, a person approves it in the UI, the TUI or the CLI, and then the "
            "runner cancels the run itself. Calling again with the same run and reason returns "
            "the same pending confirmation. Check the outcome with delegate.status. Returns "
            "{status, confirmation_id, action, expires_at, how_to_approve}."
        ),
        inputs={"full": CancelInput},
        output=CancelOutput,
        handler=DelegationServer.cancel,
        destructive=True,
        idempotent=True,
    ),
    ToolSpec(
        name="delegate.question.enqueue",
        title="Ask a question",
        description=(
            "Queue a question on behalf of a run, for a person (or the run's parent agent) to "
            "answer. Returns the question with its id at once; wait for the answer with "
            "delegate.question.poll {question_id, wait_ms}. With auto_pause the run pauses "
            "until the question is answered. Returns {question}."
        ),
        descriptions={
            "question_only": (
                "Ask your parent (whoever delegated your task) a question when you cannot "
                "proceed without a decision or information only they have. Returns the "
                "question with its id at once; then wait for the answer with "
                "delegate.question.poll {question_id, wait_ms: 30000} (repeat while it is "
                "pending). With auto_pause your run pauses until the answer arrives. Returns "
                "{question}."
            )
        },
        inputs={"full": EnqueueInput, "question_only": OwnEnqueueInput},
        output=QuestionOutput,
        handler=DelegationServer.enqueue,
    ),
    ToolSpec(
        name="delegate.question.poll",
        title="Read or wait for questions",
        description=(
            "Read questions. With question_id: that question; with wait_ms it blocks (at most "
            "30 s) until the question is answered, dismissed or expired. Without question_id: "
            "the questions with the given status (default pending; filter by run_id), and with "
            "wait_ms it blocks until there is at least one. Use it to find what your delegates "
            "asked you, then reply with delegate.question.answer. Returns {questions[], "
            "waited_ms, timed_out}."
        ),
        descriptions={
            "question_only": (
                "Read your questions. With question_id and wait_ms: block (at most 30 s) until "
                "your question is answered, dismissed or expired, and get the answer. Without "
                "question_id: the questions you asked in this session with the given status "
                "(default pending; e.g. status answered with wait_ms waits for any answer). "
                "Returns {questions[], waited_ms, timed_out}."
            )
        },
        inputs={"full": PollInput, "question_only": PollInput},
        output=PollOutput,
        handler=DelegationServer.poll,
        read_only=True,
        idempotent=True,
    ),
    ToolSpec(
        name="delegate.question.answer",
        title="Answer a question",
        description=(
            "Answer a pending question that a delegate run asked; the run gets the answer and, "
            "if the question paused it, resumes. Find questions with delegate.question.poll or "
            "in delegate.status. Returns {question} with its new status."
        ),
        descriptions={
            "question_only": (
                "Answer a pending question that one of your own delegate runs asked (you can "
                "only answer your children's questions). Returns {question}."
            )
        },
        inputs={"full": AnswerInput, "question_only": AnswerInput},
        output=QuestionOutput,
        handler=DelegationServer.answer,
    ),
)

_BY_NAME = {spec.name: spec for spec in TOOLS}
#: Codex and other clients that cannot use dots in function names call ``delegate_spawn``.
_ALIASES = {spec.name.replace(".", "_"): spec for spec in TOOLS}


def lookup(name: Any) -> ToolSpec | None:
    """The tool called ``name`` (dotted as listed, or with ``_`` for the dots)."""
    if not isinstance(name, str):
        return None
    return _BY_NAME.get(name) or _ALIASES.get(name)


def profile_tools(profile: Profile) -> list[str]:
    """Names of the tools a profile lists."""
    return [spec.name for spec in TOOLS if profile in spec.inputs]


# -- the process -------------------------------------------------------------------------------


def build_server(delegation: DelegationServer) -> Server[Any]:
    """The SDK's low-level server wired to ``delegation``'s tools."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        server_version = version("codex-delegation")
    except PackageNotFoundError:  # a checkout that was never installed
        server_version = "0.0.0"

    async def list_tools(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=delegation.tools())

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await delegation.call_tool(params.name, params.arguments)

    return Server(
        SERVER_NAME,
        version=server_version,
        title="Codex Delegation Platform",
        instructions=INSTRUCTIONS[delegation.profile],
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def main(*, home: Home, profile: Profile, autostart: bool) -> int:
    """Serve the tools on stdin/stdout until the client hangs up; return an exit code."""
    from app.logs import configure_logging
    from app.mcp.client import RunnerClient, delegation_token_file, own_run_id

    configure_logging("warning")
    log.setLevel(logging.INFO)
    token_file = delegation_token_file()
    if profile == "question_only" and token_file is None:
        print(
            "app mcp: the question_only profile authenticates as a delegate: the runner must "
            "set CODEX_DELEGATION_TOKEN_FILE to the run's delegation token file",
            file=sys.stderr,
        )
        return 2
    client = RunnerClient(
        home,
        token_file=token_file if profile == "question_only" else None,
        autostart=autostart and profile == "full",
    )
    delegation = DelegationServer(client, profile=profile, own_run_id=own_run_id(token_file))
    server = build_server(delegation)

    async def serve() -> None:
        try:
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        finally:
            await client.aclose()

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        return 130
    return 0
