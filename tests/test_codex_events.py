"""The codex JSONL mapper on lines recorded from the real codex 0.169 (tests/fakes/codex_jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.redact import REDACTED
from app.wire.events import (
    AgentMessage,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
    ToolCalled,
    Usage,
)
from jobs.engines.codex_events import (
    MAX_MESSAGE_CHARS,
    MAX_PARAM_CHARS,
    CodexTurnState,
    CodexUsage,
    map_codex_line,
)

RECORDED = Path(__file__).parent / "fakes" / "codex_jsonl"


def lines(name: str) -> list[str]:
    return (RECORDED / f"{name}.jsonl").read_text().splitlines()


def run(name: str, **state_args: Any) -> tuple[CodexTurnState, list[Payload]]:
    ticks = iter(range(0, 1000, 1))
    state = CodexTurnState(step=3, model="fake-model", clock=lambda: next(ticks), **state_args)
    payloads: list[Payload] = []
    for line in lines(name):
        payloads.extend(state.feed_line(line))
    return state, payloads


def of(payloads: list[Payload], kind: type[Payload]) -> list[Any]:
    return [p for p in payloads if isinstance(p, kind)]


def test_every_recording_is_codex_jsonl() -> None:
    files = sorted(RECORDED.glob("*.jsonl"))
    assert len(files) >= 8
    for path in files:
        for line in path.read_text().splitlines():
            assert isinstance(json.loads(line)["type"], str), (path.name, line)


def test_agent_message_turn() -> None:
    state, payloads = run("message")
    assert [type(p) for p in payloads] == [StepStarted, AgentMessage, Usage, StepCompleted]
    assert payloads[0] == StepStarted(step=3, kind="codex")
    assert payloads[1] == AgentMessage(text="done")
    assert payloads[2] == Usage(
        model="fake-model", input_tokens=12, output_tokens=3, cached_input_tokens=4
    )
    assert isinstance(payloads[3], StepCompleted)
    assert payloads[3].step == 3
    assert payloads[3].duration_ms == 1000  # one fake clock tick from turn.started
    assert state.status == "completed"
    assert state.failure is None
    assert state.thread_id and len(state.thread_id) == 36
    assert state.final_message == "done"
    assert state.usage_total == CodexUsage(input_tokens=12, cached_input_tokens=4, output_tokens=3)
    assert state.errors == []
    # The fallback-metadata notice is an `error` *item*: a warning, not a failure.
    assert state.warnings and "Model metadata" in state.warnings[0]
    assert not state.ignored
    assert state.finish(0) == []


def test_shell_command_becomes_tool_called() -> None:
    state, payloads = run("shell")
    tools = of(payloads, ToolCalled)
    assert tools == [
        ToolCalled(
            tool="shell",
            params={"command": "/bin/bash -lc 'echo hi'", "exit_code": 0},
            call_id="item_1",
            status="completed",
        )
    ]
    assert of(payloads, AgentMessage) == [AgentMessage(text="ran it")]
    # Two model calls (10 + 10 input tokens) in one turn.
    assert of(payloads, Usage)[0].input_tokens == 20
    assert state.in_flight == {}


def test_tools_recording_maps_each_item_kind_and_redacts_params() -> None:
    state, payloads = run("tools")
    tools = of(payloads, ToolCalled)
    assert [(t.tool, t.server, t.status) for t in tools] == [
        ("apply_patch", None, "completed"),
        ("shell", None, "failed"),
        ("echo_note", "probe", "completed"),
        ("explode", "probe", "failed"),
    ]
    assert tools[0].params == {
        "changes": [{"path": "/tmp/codex-test/work/hello.txt", "kind": "add"}]
    }
    assert tools[1].params["exit_code"] == 2
    # Secret-looking keys and values never reach an event.
    assert tools[2].params == {"text": "hello", "api_token": REDACTED}
    assert tools[3].params == {"reason": "because", "password": REDACTED}
    encoded = msgspec.json.encode(payloads).decode()
    assert "hunter2" not in encoded
    assert "sk-abcdefghij" not in encoded
    assert state.reasoning == ["Thinking about files", "Done now"]
    assert state.final_message == "finished"
    assert state.status == "completed"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("http_500", "high demand"),
        ("stream_failed", "model exploded"),
        ("connection_refused", "Connection failed"),
    ],
)
def test_failed_turns(name: str, message: str) -> None:
    state, payloads = run(name)
    assert [type(p) for p in payloads] == [StepStarted, StepFailed]
    [failed] = of(payloads, StepFailed)
    assert message in failed.error
    assert state.status == "failed"
    assert state.failure is not None and message in state.failure
    # The `error` line and `turn.failed` carry the same message: recorded once.
    assert len(state.errors) == 1
    assert state.usage_total is None
    assert state.finish(1) == []


def test_resumed_thread_reports_only_this_turns_usage() -> None:
    first, _ = run("resume_first")
    assert first.usage_total is not None
    second, payloads = run("resume_resumed", usage_before=first.usage_total)
    assert second.thread_id == first.thread_id
    # codex reports the thread's running total (10+100 in, 5+50 out) ...
    assert second.usage_total == CodexUsage(
        input_tokens=110, cached_input_tokens=20, output_tokens=55
    )
    # ... and the event carries this turn's share.
    assert of(payloads, Usage) == [
        Usage(model="fake-model", input_tokens=100, output_tokens=50, cached_input_tokens=20)
    ]
    assert second.usage_turn == CodexUsage(
        input_tokens=100, cached_input_tokens=20, output_tokens=50
    )
    # Without the baseline the total is reported as is.
    _, raw = run("resume_resumed")
    assert of(raw, Usage)[0].input_tokens == 110


def test_step_events_can_be_left_to_the_run_loop() -> None:
    _, payloads = run("message", step_events=False)
    assert [type(p) for p in payloads] == [AgentMessage, Usage]
    state, payloads = run("http_500", step_events=False)
    assert payloads == []
    assert state.failure is not None and "high demand" in state.failure


def test_configuration_error_before_any_json_fails_the_turn() -> None:
    state = CodexTurnState(step=1)
    payloads = state.finish(
        1, "Reading additional input from stdin...\nError: Model provider `nope` not found\n"
    )
    assert payloads == [
        StepFailed(
            step=1,
            kind="codex",
            error="codex exited with code 1 before starting a turn: "
            "Error: Model provider `nope` not found",
        )
    ]
    assert state.status == "failed"
    assert state.thread_id is None


def test_killed_mid_command_reports_the_command_interrupted() -> None:
    state = CodexTurnState(step=2)
    shell = lines("shell")
    started = [line for line in shell if '"item.started"' in line]
    for line in shell[: shell.index(started[0]) + 1]:
        state.feed_line(line)
    assert state.status == "running"
    assert list(state.in_flight) == ["item_1"]
    payloads = state.finish(-9, "")
    assert payloads[0] == ToolCalled(
        tool="shell",
        params={"command": "/bin/bash -lc 'echo hi'"},
        call_id="item_1",
        status="interrupted",
    )
    assert payloads[1] == StepFailed(
        step=2, kind="codex", error="codex exited with code -9 mid-turn"
    )


def test_unknown_and_malformed_lines_are_counted_never_raised() -> None:
    state = CodexTurnState()
    for line in [
        "not json at all",
        "[1, 2]",
        "",
        json.dumps({"type": "session.configured", "x": 1}),
        json.dumps({"type": "item.completed", "item": {"id": "i9", "type": "hologram"}}),
        json.dumps({"type": "item.completed", "item": "oops"}),
        json.dumps({"no_type": True}),
    ]:
        assert state.feed_line(line) == []
    assert state.ignored == {
        "non_json": 1,
        "non_object": 1,
        "session.configured": 1,
        "item:hologram": 1,
        "item.completed:malformed": 1,
        "None": 1,
    }


def test_other_item_kinds() -> None:
    state = CodexTurnState()
    todo = {"id": "t1", "type": "todo_list", "items": [{"text": "a", "completed": False}]}
    assert state.feed({"type": "item.started", "item": todo}) == []
    assert state.plan == [{"text": "a", "completed": False}]
    done = {**todo, "items": [{"text": "a", "completed": True}]}
    assert state.feed({"type": "item.completed", "item": done}) == []
    assert state.plan == [{"text": "a", "completed": True}]
    search = {"id": "w1", "type": "web_search", "query": "codex docs"}
    assert state.feed({"type": "item.completed", "item": search}) == [
        ToolCalled(
            tool="web_search", params={"query": "codex docs"}, call_id="w1", status="completed"
        )
    ]
    collab = {
        "id": "c1",
        "type": "collab_tool_call",
        "tool": "spawn_agent",
        "sender_thread_id": "t-1",
        "receiver_thread_ids": ["t-2"],
        "prompt": "secret plan",
        "status": "completed",
    }
    [called] = map_codex_line({"type": "item.completed", "item": collab})
    assert isinstance(called, ToolCalled)
    assert (called.tool, called.server) == ("spawn_agent", "codex")
    assert called.params == {"sender_thread_id": "t-1", "receiver_thread_ids": ["t-2"]}
    assert not state.ignored


def test_long_texts_are_clipped_and_credentials_masked() -> None:
    text = "x" * (MAX_MESSAGE_CHARS + 10)
    [message] = map_codex_line(
        {"type": "item.completed", "item": {"id": "m", "type": "agent_message", "text": text}}
    )
    assert isinstance(message, AgentMessage)
    assert message.truncated and len(message.text) == MAX_MESSAGE_CHARS
    command = "curl -H 'Authorization: Bearer abcdefghijklmnop' " + "y" * 5000
    [called] = map_codex_line(
        {
            "type": "item.completed",
            "item": {"id": "c", "type": "command_execution", "command": command, "exit_code": 0},
        }
    )
    assert isinstance(called, ToolCalled)
    assert "abcdefghijklmnop" not in called.params["command"]
    assert REDACTED in called.params["command"]
    assert len(called.params["command"]) == MAX_PARAM_CHARS
    state = CodexTurnState()
    state.feed({"type": "turn.failed", "error": {"message": "bad key sk-" + "a" * 30}})
    assert state.failure == f"bad key {REDACTED}"


def test_usage_difference_never_goes_negative() -> None:
    before = CodexUsage(input_tokens=500, output_tokens=50)
    [usage, _] = map_codex_line(
        {"type": "turn.completed", "usage": {"input_tokens": 20, "output_tokens": 5}},
        usage_before=before,
    )
    assert usage == Usage(input_tokens=20, output_tokens=5)
