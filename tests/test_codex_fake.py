"""The real ``codex`` binary (tools/codex, pinned 0.169.0) against the fake Responses API.

Skipped only outside CI when codex is not installed (``make bootstrap`` installs it); with
``CI=true`` a missing binary fails. Codex runs with an isolated ``CODEX_HOME`` and every
destination except the loopback fake server turned off (tests/fakes/codex_home.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.redact import REDACTED
from app.wire.events import AgentMessage, Payload, StepFailed, ToolCalled, Usage
from jobs.engines.codex_events import CodexTurnState
from tests.fakes.codex_home import (
    CodexHome,
    CodexResult,
    ProxyTrap,
    build_codex_home,
    mcp_stdio_server,
)
from tests.fakes.responses_server import (
    FakeResponsesServer,
    RecordedRequest,
    ScriptedPolicy,
    SseReply,
    error_reply,
    function_call_reply,
    message_reply,
    shell_reply,
    stall_reply,
    usage,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[FakeResponsesServer]:
    with FakeResponsesServer() as fake:
        yield fake


@pytest.fixture
def trap() -> Iterator[ProxyTrap]:
    with ProxyTrap() as proxy:
        yield proxy


@pytest.fixture
def codex(
    tmp_path: Path, codex_bin: Path, server: FakeResponsesServer, trap: ProxyTrap
) -> Iterator[CodexHome]:
    home = build_codex_home(
        tmp_path, base_url=server.base_url, binary=codex_bin, proxy_url=trap.url
    )
    yield home
    # Nothing codex did may have gone anywhere but the fake server.
    assert trap.lines == []
    assert server.errors == []


def mapped(result: CodexResult, **state_args: object) -> tuple[CodexTurnState, list[Payload]]:
    state = CodexTurnState(model="fake-model", **state_args)  # type: ignore[arg-type]
    payloads: list[Payload] = []
    for line in result.stdout.splitlines():
        payloads.extend(state.feed_line(line))
    payloads.extend(state.finish(result.returncode, result.stderr))
    return state, payloads


def of(payloads: list[Payload], kind: type[Payload]) -> list[object]:
    return [p for p in payloads if isinstance(p, kind)]


def test_assistant_message(codex: CodexHome, server: FakeResponsesServer) -> None:
    server.set_policy([message_reply("done", usage_=usage(21, 4))])
    result = codex.run(codex.exec_args("say done"))
    assert result.returncode == 0, result.stderr
    assert result.other_lines == []
    kinds = [event["type"] for event in result.events]
    assert kinds[0] == "thread.started"
    assert "turn.started" in kinds and kinds[-1] == "turn.completed"
    [message] = [
        e["item"] for e in result.of_type("item.completed") if e["item"]["type"] == "agent_message"
    ]
    assert message["text"] == "done"
    assert result.of_type("turn.completed")[0]["usage"]["input_tokens"] == 21

    state, payloads = mapped(result)
    assert of(payloads, AgentMessage) == [AgentMessage(text="done")]
    assert of(payloads, Usage) == [Usage(model="fake-model", input_tokens=21, output_tokens=4)]
    assert state.status == "completed"
    assert state.thread_id == result.thread_id
    assert state.final_message == "done"

    [request] = server.requests
    assert request.is_model_call and request.path == "/v1/responses"
    assert request.json["stream"] is True
    assert request.json["model"] == "fake-model"
    assert request.headers["authorization"] == "Bearer fake-key-not-a-secret"
    assert "say done" in request.user_texts()


def test_shell_function_call(codex: CodexHome, server: FakeResponsesServer) -> None:
    server.set_policy(
        [shell_reply("echo hi > out.txt; cat out.txt", call_id="call_sh"), message_reply("ok")]
    )
    result = codex.run(codex.exec_args("run a command"))
    assert result.returncode == 0, result.stderr
    [command] = [
        e["item"]
        for e in result.of_type("item.completed")
        if e["item"]["type"] == "command_execution"
    ]
    assert command["exit_code"] == 0
    assert command["aggregated_output"] == "hi\n"
    assert (codex.workdir / "out.txt").read_text() == "hi\n"

    state, payloads = mapped(result)
    [called] = of(payloads, ToolCalled)
    assert isinstance(called, ToolCalled)
    assert called.tool == "shell"
    assert "echo hi > out.txt" in called.params["command"]
    assert (called.status, called.params["exit_code"]) == ("completed", 0)
    assert state.final_message == "ok"

    first, second = server.model_requests()
    assert "exec_command" in first.tool_names
    assert [call["call_id"] for call in second.function_calls()] == ["call_sh"]
    assert "hi" in second.function_call_outputs()["call_sh"]


def test_resume_continues_the_thread(codex: CodexHome, server: FakeResponsesServer) -> None:
    server.set_policy(
        [
            message_reply("first answer", usage_=usage(10, 5)),
            message_reply("second answer", usage_=usage(30, 7)),
        ]
    )
    first = codex.run(codex.exec_args("first prompt"))
    assert first.returncode == 0, first.stderr
    first_state, _ = mapped(first)
    assert first_state.thread_id is not None

    second = codex.run(codex.resume_args(first_state.thread_id, "continue"))
    assert second.returncode == 0, second.stderr
    state, payloads = mapped(second, usage_before=first_state.usage_total)
    assert state.thread_id == first_state.thread_id
    assert state.final_message == "second answer"
    assert of(payloads, Usage) == [Usage(model="fake-model", input_tokens=30, output_tokens=7)]

    resumed = server.model_requests()[1]
    assert resumed.user_texts()[-2:] == ["first prompt", "continue"]
    assert resumed.assistant_texts() == ["first answer"]


def test_no_request_leaves_loopback(
    tmp_path: Path, codex: CodexHome, server: FakeResponsesServer, trap: ProxyTrap
) -> None:
    # A tool call as well, so codex's tool and shell paths run too.
    server.set_policy([shell_reply("true"), message_reply("quiet")])
    result = codex.run(codex.exec_args("stay local"))
    assert result.returncode == 0, result.stderr
    # Every request was a model call to the fake server, and none went through a proxy
    # (the codex fixture also checks the trap on teardown).
    assert [(r.method, r.path) for r in server.requests] == [("POST", "/v1/responses")] * 2
    assert trap.lines == []
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        assert codex.env[name] == trap.url
    assert codex.env["NO_PROXY"] == "127.0.0.1,localhost"
    config = codex.config_path.read_text()
    for line in (
        "check_for_update_on_startup = false",
        'web_search = "disabled"',
        'metrics_exporter = "none"',
    ):
        assert line in config
    # The trap does catch what tries to leave: a proxied request lands there at once.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import urllib.request as u; u.urlopen('http://example.invalid/', timeout=5)",
        ],
        env={**codex.env, "PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode != 0
    assert trap.lines == ["GET http://example.invalid/ HTTP/1.1"]
    trap.lines.clear()


def test_server_error_fails_the_turn(codex: CodexHome, server: FakeResponsesServer) -> None:
    server.set_policy([error_reply(500, "boom")])
    result = codex.run(codex.exec_args("fail"))
    assert result.returncode == 1
    assert result.of_type("turn.failed")
    state, payloads = mapped(result)
    [failed] = of(payloads, StepFailed)
    assert isinstance(failed, StepFailed)
    assert state.status == "failed"
    assert state.failure == failed.error
    assert len(server.model_requests()) == 1  # no retries


def test_unknown_model_provider_fails_before_any_json(
    codex: CodexHome, server: FakeResponsesServer
) -> None:
    result = codex.run(codex.exec_args("x", "-c", 'model_provider="missing"'))
    assert result.returncode == 1
    assert result.events == []
    state, payloads = mapped(result)
    assert state.status == "failed"
    assert state.failure is not None and "Model provider `missing` not found" in state.failure
    assert of(payloads, StepFailed)
    assert server.requests == []


MCP_SERVER = textwrap.dedent(
    """
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("notes")

    @app.tool()
    def add_note(text: str, api_token: str = "") -> str:
        \"\"\"Store a note.\"\"\"
        return f"stored: {text}"

    app.run()
    """
)


def test_mcp_tool_call_is_mapped_with_params_redacted(
    tmp_path: Path, codex_bin: Path, server: FakeResponsesServer, trap: ProxyTrap
) -> None:
    script = tmp_path / "notes_mcp.py"
    script.write_text(MCP_SERVER)
    home = build_codex_home(
        tmp_path / "c",
        base_url=server.base_url,
        binary=codex_bin,
        proxy_url=trap.url,
        mcp_servers={"notes": mcp_stdio_server(sys.executable, [str(script)])},
    )

    def final(request: RecordedRequest) -> SseReply:
        return message_reply("noted: " + request.function_call_outputs()["call_mcp"])

    server.set_policy(
        ScriptedPolicy(
            [
                function_call_reply(
                    "add_note",
                    {"text": "hello", "api_token": "cdp_abcdefghijklmnopqrstu"},
                    namespace="mcp__notes",
                    call_id="call_mcp",
                ),
                final,
            ]
        )
    )
    result = home.run(home.exec_args("take a note"))
    assert result.returncode == 0, result.stderr
    assert "mcp__notes.add_note" in server.model_requests()[0].tool_names
    state, payloads = mapped(result)
    [called] = of(payloads, ToolCalled)
    assert isinstance(called, ToolCalled)
    assert (called.tool, called.server, called.status) == ("add_note", "notes", "completed")
    assert called.params == {"text": "hello", "api_token": REDACTED}
    assert state.final_message is not None and "stored: hello" in state.final_message
    assert trap.lines == []
    assert server.errors == []


def test_killing_codex_mid_turn(codex: CodexHome, server: FakeResponsesServer) -> None:
    server.set_policy([stall_reply(60)])
    proc = codex.popen(codex.exec_args("hang"))
    try:
        server.wait_for_requests(1, timeout=30)
        assert proc.stdout is not None
        state = CodexTurnState()
        for line in proc.stdout:  # thread.started, turn.started, ... then silence
            state.feed_line(line)
            if state.status == "running":
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    [failed] = state.finish(proc.returncode, "")
    assert failed == StepFailed(step=1, kind="codex", error="codex exited with code -9 mid-turn")
    started = time.monotonic()
    server.stop()  # releases the stalled stream at once
    assert time.monotonic() - started < 3
