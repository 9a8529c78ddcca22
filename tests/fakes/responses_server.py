"""A local OpenAI Responses-API server, driven by a scripted policy, for the real ``codex``.

The server is a real HTTP/1.1 server on ``127.0.0.1`` (ephemeral port, background thread).
``codex exec`` talks to it through a model provider with ``wire_api = "responses"``
(see :mod:`tests.fakes.codex_home`): every model call is ``POST /v1/responses`` with
``"stream": true``, answered here as ``text/event-stream`` (``response.created``,
``response.output_item.added``/``done``, text and argument deltas, ``response.completed``
carrying ``usage``). Every request, whatever its path, is recorded for assertions.

The same scripted replies also serve plain HTTP clients (the ``openai`` LM client):
``POST /v1/responses`` with ``"stream": false`` gets the final response object as JSON (the
``response.completed``/``response.failed`` event's ``response``, with the requested model),
and ``POST /v1/chat/completions`` gets a Chat Completions object built from the same reply
(message text, ``usage`` as ``prompt_tokens``/``completion_tokens``). :class:`JsonReply`
sends any body as is (e.g. a malformed one); :class:`HttpErrorReply` can carry
``Retry-After``.

A *policy* decides each reply: any callable ``(RecordedRequest) -> Reply``, or a list of
replies taken in order (:class:`ScriptedPolicy`)::

    policy = ScriptedPolicy([
        function_call_reply("exec_command", {"cmd": "echo hi"}, call_id="call_1"),
        message_reply("done"),
    ])
    with FakeResponsesServer(policy) as server:
        ...  # point codex at server.base_url
        assert server.model_requests()[1].function_call_outputs()["call_1"]
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "fake-model"

# -- what the server saw ------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the fake server received it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any = None

    @property
    def is_model_call(self) -> bool:
        """True for ``POST .../responses`` (one model call)."""
        return self.method == "POST" and self.path.split("?")[0].endswith("/responses")

    @property
    def is_chat_call(self) -> bool:
        """True for ``POST .../chat/completions`` (one Chat Completions call)."""
        return self.method == "POST" and self.path.split("?")[0].endswith("/chat/completions")

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` array of a Chat Completions request."""
        if isinstance(self.json, dict) and isinstance(self.json.get("messages"), list):
            return [item for item in self.json["messages"] if isinstance(item, dict)]
        return []

    @property
    def input_items(self) -> list[dict[str, Any]]:
        """The ``input`` array of a Responses request (the whole conversation so far)."""
        if isinstance(self.json, dict) and isinstance(self.json.get("input"), list):
            return [item for item in self.json["input"] if isinstance(item, dict)]
        return []

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools offered to the model (namespaced tools as ``ns.name``)."""
        names: list[str] = []
        tools = self.json.get("tools", []) if isinstance(self.json, dict) else []
        for tool in tools:
            if tool.get("type") == "namespace":
                names.extend(f"{tool.get('name')}.{sub.get('name')}" for sub in tool["tools"])
            elif tool.get("name"):
                names.append(str(tool["name"]))
            else:
                names.append(str(tool.get("type")))
        return names

    def texts(self, role: str) -> list[str]:
        """Every text part of the input messages with ``role`` (``user``, ``assistant``, ...)."""
        found: list[str] = []
        for item in self.input_items:
            if item.get("type", "message") != "message" or item.get("role") != role:
                continue
            content = item.get("content")
            if isinstance(content, str):
                found.append(content)
                continue
            for part in content or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    found.append(part["text"])
        return found

    def user_texts(self) -> list[str]:
        return self.texts("user")

    def assistant_texts(self) -> list[str]:
        return self.texts("assistant")

    def function_calls(self) -> list[dict[str, Any]]:
        """The ``function_call`` items replayed in the input (earlier tool calls)."""
        return [item for item in self.input_items if item.get("type") == "function_call"]

    def function_call_outputs(self) -> dict[str, str]:
        """``call_id -> output text`` of every tool result in the input."""
        outputs: dict[str, str] = {}
        for item in self.input_items:
            if item.get("type") not in ("function_call_output", "custom_tool_call_output"):
                continue
            output = item.get("output")
            if isinstance(output, list):  # content items
                output = "".join(
                    str(part.get("text", "")) for part in output if isinstance(part, dict)
                )
            elif isinstance(output, dict):
                output = str(output.get("content", output))
            outputs[str(item.get("call_id"))] = str(output)
        return outputs


# -- replies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """Inside an :class:`SseReply`: wait this long before the next event (ends early on stop)."""

    seconds: float


@dataclass(frozen=True)
class SseReply:
    """A ``200 text/event-stream`` reply: events written in order, chunked, flushed each."""

    events: Sequence[Mapping[str, Any] | Pause]


@dataclass(frozen=True)
class HttpErrorReply:
    """A plain HTTP error with an OpenAI-shaped JSON error body."""

    status: int = 500
    message: str = "fake server error"
    code: str | None = "server_error"
    error_type: str = "server_error"
    #: Seconds sent as ``Retry-After`` (None: no header).
    retry_after: float | None = None


@dataclass(frozen=True)
class JsonReply:
    """Any JSON body (or raw bytes when ``body`` is ``bytes``) with any status."""

    body: Any
    status: int = 200


Reply = SseReply | HttpErrorReply | JsonReply
Policy = Callable[[RecordedRequest], Reply]

_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):04d}"


def usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    *,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """A Responses ``usage`` object."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def message_item(text: str, *, item_id: str | None = None) -> dict[str, Any]:
    """An assistant ``message`` output item."""
    return {
        "type": "message",
        "id": item_id or _next_id("msg"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def function_call_item(
    name: str,
    arguments: Mapping[str, Any] | str,
    *,
    call_id: str | None = None,
    namespace: str | None = None,
    item_id: str | None = None,
) -> dict[str, Any]:
    """A ``function_call`` output item (``arguments`` as a mapping is JSON-encoded)."""
    item: dict[str, Any] = {
        "type": "function_call",
        "id": item_id or _next_id("fc"),
        "status": "completed",
        "call_id": call_id or _next_id("call"),
        "name": name,
        "arguments": arguments if isinstance(arguments, str) else json.dumps(dict(arguments)),
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def reasoning_item(summary: str, *, item_id: str | None = None) -> dict[str, Any]:
    """A ``reasoning`` output item with one summary part."""
    return {
        "type": "reasoning",
        "id": item_id or _next_id("rs"),
        "summary": [{"type": "summary_text", "text": summary}],
    }


def _response(
    response_id: str, model: str, status: str, output: list[Any], use: Any
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "usage": use,
    }


def response_events(
    items: Sequence[Mapping[str, Any]],
    *,
    usage_: Mapping[str, Any] | None = None,
    response_id: str | None = None,
    model: str = DEFAULT_MODEL,
    stream_deltas: bool = True,
) -> list[dict[str, Any]]:
    """The SSE events of one successful response producing ``items``."""
    rid = response_id or _next_id("resp")
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(rid, model, "in_progress", [], None)},
        {
            "type": "response.in_progress",
            "response": _response(rid, model, "in_progress", [], None),
        },
    ]
    for index, raw in enumerate(items):
        item = dict(raw)
        added = dict(item)
        if item.get("type") == "message":
            added["content"] = []
            added["status"] = "in_progress"
        elif item.get("type") == "function_call":
            added["arguments"] = ""
            added["status"] = "in_progress"
        events.append({"type": "response.output_item.added", "output_index": index, "item": added})
        if stream_deltas and item.get("type") == "message":
            for part_index, part in enumerate(item.get("content", [])):
                text = str(part.get("text", ""))
                where = {"item_id": item["id"], "output_index": index, "content_index": part_index}
                events.append({"type": "response.content_part.added", **where, "part": part})
                events.append({"type": "response.output_text.delta", **where, "delta": text})
                events.append({"type": "response.output_text.done", **where, "text": text})
                events.append({"type": "response.content_part.done", **where, "part": part})
        if stream_deltas and item.get("type") == "function_call":
            where = {"item_id": item["id"], "output_index": index}
            args = item["arguments"]
            events.append(
                {"type": "response.function_call_arguments.delta", **where, "delta": args}
            )
            events.append(
                {"type": "response.function_call_arguments.done", **where, "arguments": args}
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    final = _response(rid, model, "completed", [dict(i) for i in items], dict(usage_ or usage()))
    events.append({"type": "response.completed", "response": final})
    return events


def items_reply(
    items: Sequence[Mapping[str, Any]],
    *,
    usage_: Mapping[str, Any] | None = None,
    model: str = DEFAULT_MODEL,
) -> SseReply:
    """A successful streamed response made of ``items``."""
    return SseReply(response_events(items, usage_=usage_, model=model))


def message_reply(text: str, *, usage_: Mapping[str, Any] | None = None) -> SseReply:
    """The model answers with one assistant message (this ends codex's turn)."""
    return items_reply([message_item(text)], usage_=usage_)


def function_call_reply(
    name: str,
    arguments: Mapping[str, Any] | str,
    *,
    call_id: str | None = None,
    namespace: str | None = None,
    preamble: str | None = None,
    usage_: Mapping[str, Any] | None = None,
) -> SseReply:
    """The model calls one tool (codex runs it and calls the model again with the output).

    ``exec_command`` with ``{"cmd": "..."}`` is codex 0.169's shell tool; an MCP tool is
    addressed by its namespace (``mcp__<server>__``) and tool name.
    """
    items: list[dict[str, Any]] = []
    if preamble:
        items.append(message_item(preamble))
    items.append(function_call_item(name, arguments, call_id=call_id, namespace=namespace))
    return items_reply(items, usage_=usage_)


def shell_reply(command: str, *, call_id: str | None = None) -> SseReply:
    """The model runs a shell command through codex's ``exec_command`` tool."""
    return function_call_reply("exec_command", {"cmd": command}, call_id=call_id)


def failed_reply(message: str = "the model failed", *, code: str = "server_error") -> SseReply:
    """A stream that starts, then ends with ``response.failed``."""
    rid = _next_id("resp")
    failed = _response(rid, DEFAULT_MODEL, "failed", [], None)
    failed["error"] = {"code": code, "message": message}
    return SseReply(
        [
            {
                "type": "response.created",
                "response": _response(rid, DEFAULT_MODEL, "in_progress", [], None),
            },
            {"type": "response.failed", "response": failed},
        ]
    )


def stall_reply(seconds: float = 3600.0) -> SseReply:
    """A stream that starts and then hangs (for cancellation tests); stop() releases it."""
    rid = _next_id("resp")
    return SseReply(
        [
            {
                "type": "response.created",
                "response": _response(rid, DEFAULT_MODEL, "in_progress", [], None),
            },
            Pause(seconds),
        ]
    )


def error_reply(
    status: int = 500,
    message: str = "fake server error",
    *,
    code: str | None = "server_error",
    retry_after: float | None = None,
) -> HttpErrorReply:
    return HttpErrorReply(status=status, message=message, code=code, retry_after=retry_after)


def final_response(reply: SseReply) -> dict[str, Any] | None:
    """The response object a streamed reply ends with (``completed`` or ``failed``)."""
    for event in reply.events:
        if isinstance(event, Mapping) and event.get("type") in (
            "response.completed",
            "response.failed",
            "response.incomplete",
        ):
            return dict(event["response"])
    return None


def chat_completion(
    text: str | None,
    *,
    usage_: Mapping[str, Any] | None = None,
    model: str = DEFAULT_MODEL,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A Chat Completions response object (``usage_`` in Responses shape is converted)."""
    use = dict(usage_ or usage())
    prompt = int(use.get("input_tokens", use.get("prompt_tokens", 0)))
    completion = int(use.get("output_tokens", use.get("completion_tokens", 0)))
    cached = int((use.get("input_tokens_details") or {}).get("cached_tokens", 0))
    return {
        "id": _next_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def chat_from_response(response: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """The Chat Completions equivalent of a final Responses object (message text only)."""
    texts = [
        str(part.get("text", ""))
        for item in response.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
    ]
    return chat_completion("".join(texts), usage_=response.get("usage"), model=model)


# -- policies -----------------------------------------------------------------------------------


class ScriptedPolicy:
    """Replies taken in order, one per model call; each may be a reply or a callable.

    When the script runs out the server answers ``500`` and records the fact in
    :attr:`FakeResponsesServer.errors` (unless ``when_exhausted`` gives a reply to repeat).
    """

    def __init__(
        self,
        replies: Iterable[Reply | Policy],
        *,
        when_exhausted: Reply | None = None,
    ) -> None:
        self._replies = list(replies)
        self._lock = threading.Lock()
        self.when_exhausted = when_exhausted
        self.used = 0

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._replies) - self.used

    def __call__(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self.used >= len(self._replies):
                if self.when_exhausted is not None:
                    return self.when_exhausted
                raise ScriptExhausted(f"no scripted reply left for model call #{self.used + 1}")
            step = self._replies[self.used]
            self.used += 1
        if isinstance(step, SseReply | HttpErrorReply | JsonReply):
            return step
        return step(request)


class ScriptExhausted(RuntimeError):
    """The scripted policy had no reply for a model call."""


# -- the server ---------------------------------------------------------------------------------


@dataclass
class _State:
    policy: Policy
    model: str
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RecordedRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the request log is :attr:`FakeResponsesServer.requests`."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with state.changed:
            request = RecordedRequest(
                index=len(state.requests),
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                json=parsed,
            )
            state.requests.append(request)
            state.changed.notify_all()
        path = self.path.split("?")[0].rstrip("/")
        if self.command == "POST" and (
            path.endswith("/responses") or path.endswith("/chat/completions")
        ):
            try:
                reply = state.policy(request)
            except Exception as exc:  # a broken script must show up in the test, not hang it
                state.errors.append(f"policy failed on request #{request.index}: {exc!r}")
                reply = HttpErrorReply(500, f"fake server policy failed: {exc}")
            streaming = isinstance(request.json, dict) and request.json.get("stream") is True
            if isinstance(reply, SseReply) and not streaming:
                self._send_collapsed(reply, request, chat=path.endswith("/chat/completions"))
            else:
                self._send(reply)
        elif self.command == "GET" and path.endswith("/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": state.model, "object": "model", "created": 0, "owned_by": "fake"}
                    ],
                },
            )
        else:
            state.errors.append(f"unexpected request: {self.command} {self.path}")
            self._send_json(
                404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
            )

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_collapsed(self, reply: SseReply, request: RecordedRequest, *, chat: bool) -> None:
        """A non-streaming answer: wait out the pauses, then send the final object as JSON."""
        stopping = self.server.state.stopping
        for event in reply.events:
            if isinstance(event, Pause) and stopping.wait(event.seconds):
                self.close_connection = True
                return
        response = final_response(reply)
        if response is None:  # a stall that ran out: hang up without an answer
            self.close_connection = True
            return
        requested = request.json.get("model") if isinstance(request.json, dict) else None
        model = str(requested or response.get("model") or DEFAULT_MODEL)
        if chat and response.get("status") == "failed":
            error = response.get("error") or {}
            message = str(error.get("message") or "the model failed")
            self._send_json(500, {"error": {"message": message, "type": "server_error"}})
        elif chat:
            self._send_json(200, chat_from_response(response, model=model))
        else:
            self._send_json(200, {**response, "model": model})

    def _send(self, reply: Reply) -> None:
        if isinstance(reply, JsonReply):
            if isinstance(reply.body, bytes):
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            else:
                self._send_json(reply.status, reply.body)
            return
        if isinstance(reply, HttpErrorReply):
            error = {"message": reply.message, "type": reply.error_type, "code": reply.code}
            headers = {}
            if reply.retry_after is not None:
                headers["Retry-After"] = f"{reply.retry_after:g}"
            self._send_json(reply.status, {"error": error}, headers)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        stopping = self.server.state.stopping
        sequence = 0
        try:
            for event in reply.events:
                if isinstance(event, Pause):
                    if stopping.wait(event.seconds):
                        self.close_connection = True
                        return
                    continue
                payload = {**event, "sequence_number": sequence}
                sequence += 1
                chunk = f"event: {event['type']}\ndata: {json.dumps(payload)}\n\n".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeResponsesServer:
    """The fake Responses API on ``127.0.0.1:<ephemeral>``; use as a context manager."""

    def __init__(
        self,
        policy: Policy | Sequence[Reply | Policy] | None = None,
        *,
        model: str = DEFAULT_MODEL,
    ) -> None:
        self._state = _State(policy=self._as_policy(policy), model=model)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _as_policy(policy: Policy | Sequence[Reply | Policy] | None) -> Policy:
        if policy is None:
            return ScriptedPolicy([], when_exhausted=message_reply("done"))
        if callable(policy):
            return policy
        return ScriptedPolicy(policy)

    # lifecycle

    def start(self) -> FakeResponsesServer:
        self._server = _Server(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-responses-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeResponsesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a model provider's ``base_url`` should be (``http://127.0.0.1:PORT/v1``)."""
        return f"{self.origin}/v1"

    # policy and observations

    @property
    def model(self) -> str:
        return self._state.model

    def set_policy(self, policy: Policy | Sequence[Reply | Policy]) -> None:
        self._state.policy = self._as_policy(policy)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._state.changed:
            return list(self._state.requests)

    def model_requests(self) -> list[RecordedRequest]:
        """Only the model calls (``POST /v1/responses``)."""
        return [request for request in self.requests if request.is_model_call]

    def chat_requests(self) -> list[RecordedRequest]:
        """Only the Chat Completions calls (``POST /v1/chat/completions``)."""
        return [request for request in self.requests if request.is_chat_call]

    @property
    def errors(self) -> list[str]:
        """Unexpected paths and policy failures (should be empty in a passing test)."""
        return list(self._state.errors)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._state.changed:
            while len(self._state.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"only {len(self._state.requests)} of {count} requests arrived"
                    )
                self._state.changed.wait(left)
            return list(self._state.requests)
