"""The RLM LM clients: ``openai`` (Responses and Chat), ``codex``, ``replay``, recording.

Every HTTP call goes to the fake server on 127.0.0.1 (tests/fakes/responses_server.py); the
codex client runs the real pinned codex binary against it with an isolated ``CODEX_HOME``
(skipped outside CI when codex is not installed; a failure under ``CI=true``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.wire.events import Usage
from jobs.rlm.lm.base import LMConfigError, LMError, Message
from jobs.rlm.lm.codex import CodexModelClient, render_transcript
from jobs.rlm.lm.factory import TRAJECTORY_FILE, make_clients, resolve_replay_path
from jobs.rlm.lm.openai import OpenAIClient, is_loopback_url
from jobs.rlm.lm.replay import RecordingClient, ReplayClient, load_trajectory
from jobs.supervise import processes_in_group
from tests.fakes.codex_home import (
    CodexHome,
    ProxyTrap,
    build_codex_home,
    mcp_stdio_server,
    refusing_port,
)
from tests.fakes.responses_server import (
    FakeResponsesServer,
    JsonReply,
    error_reply,
    failed_reply,
    message_reply,
    stall_reply,
    usage,
)

KEY = "sk-test-" + "k" * 24
SYSTEM = Message("system", "You are terse.")
USER = Message("user", "What is 2+2?")


@pytest.fixture
def server() -> Iterator[FakeResponsesServer]:
    with FakeResponsesServer() as fake:
        yield fake


def client(server: FakeResponsesServer, **kwargs: object) -> OpenAIClient:
    options: dict[str, object] = {
        "default_model": "fake-model",
        "max_retries": 2,
        "backoff_s": 0.01,
        "timeout_s": 10.0,
        **kwargs,
    }
    return OpenAIClient(server.base_url, KEY, **options)  # type: ignore[arg-type]


# -- openai: Responses ---------------------------------------------------------------------------


def test_responses_text_and_usage(server: FakeResponsesServer) -> None:
    server.set_policy([message_reply("4", usage_=usage(31, 2, cached_tokens=7))])
    with client(server) as lm:
        completion = lm.complete([SYSTEM, USER])
    assert completion.text == "4"
    assert completion.model == "fake-model"
    assert (completion.input_tokens, completion.output_tokens) == (31, 2)
    assert completion.cached_input_tokens == 7
    assert completion.raw["wire_api"] == "responses" and completion.raw["attempts"] == 1
    assert completion.usage_payload() == Usage(
        model="fake-model", input_tokens=31, output_tokens=2, cached_input_tokens=7
    )
    [request] = server.requests
    assert request.path == "/v1/responses"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["stream"] is False and request.json["store"] is False
    assert request.json["model"] == "fake-model"
    assert request.json["input"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert server.errors == []


def test_responses_model_override_and_extra_body(server: FakeResponsesServer) -> None:
    server.set_policy([message_reply("a"), message_reply("b")])
    with client(server, extra_body={"temperature": 0}) as lm:
        assert lm.complete([USER], model="big-model").model == "big-model"
        assert lm.complete([USER]).model == "fake-model"
    first, second = server.requests
    assert first.json["model"] == "big-model" and first.json["temperature"] == 0
    assert second.json["model"] == "fake-model"


def test_model_discovered_from_a_single_model_server(server: FakeResponsesServer) -> None:
    server.set_policy([message_reply("hi")])
    with client(server, default_model=None) as lm:
        assert lm.complete([USER]).text == "hi"
    models, call = server.requests
    assert (models.method, models.path) == ("GET", "/v1/models")
    assert call.json["model"] == "fake-model"


def test_500_is_retried_then_fails(server: FakeResponsesServer) -> None:
    server.set_policy([error_reply(500, "upstream overloaded")] * 3)
    with client(server, max_retries=2) as lm, pytest.raises(LMError) as caught:
        lm.complete([USER])
    message = str(caught.value)
    assert "HTTP 500" in message and "upstream overloaded" in message
    assert server.base_url in message and "after 3 attempts" in message
    assert len(server.requests) == 3


def test_transient_errors_are_retried_until_success(server: FakeResponsesServer) -> None:
    server.set_policy(
        [error_reply(503), error_reply(429, "slow down", retry_after=0.05), message_reply("ok")]
    )
    started = time.monotonic()
    with client(server, max_retries=3) as lm:
        completion = lm.complete([USER])
    assert completion.text == "ok" and completion.raw["attempts"] == 3
    assert time.monotonic() - started >= 0.05  # Retry-After was honoured


def test_401_fails_at_once_with_the_provider_message(server: FakeResponsesServer) -> None:
    server.set_policy(
        [error_reply(401, f"Incorrect API key provided: {KEY}", code="invalid_api_key")]
    )
    with client(server) as lm, pytest.raises(LMError) as caught:
        lm.complete([USER])
    message = str(caught.value)
    assert "HTTP 401" in message and "Incorrect API key provided" in message
    assert "$OPENAI_API_KEY" in message and server.base_url in message
    assert KEY not in message and KEY not in repr(lm)
    assert len(server.requests) == 1


def test_404_hints_at_base_url_and_wire_api(server: FakeResponsesServer) -> None:
    server.set_policy([error_reply(404, "Not Found", code=None)])
    with client(server) as lm, pytest.raises(LMError, match=r"HTTP 404.*wire_api.*'chat'"):
        lm.complete([USER])


def test_connection_refused(server: FakeResponsesServer) -> None:
    base = f"http://127.0.0.1:{refusing_port()}/v1"
    lm = OpenAIClient(base, "", default_model="m", max_retries=1, backoff_s=0.01)
    with lm, pytest.raises(LMError) as caught:
        lm.complete([USER])
    message = str(caught.value)
    assert "could not connect" in message and base in message and "after 2 attempts" in message


def test_timeout(server: FakeResponsesServer) -> None:
    server.set_policy([stall_reply(30)])
    with client(server, timeout_s=0.5, max_retries=0) as lm, pytest.raises(LMError) as caught:
        lm.complete([USER])
    assert "no answer within 0.5s" in str(caught.value)


def test_failed_and_malformed_responses(server: FakeResponsesServer) -> None:
    server.set_policy(
        [
            failed_reply("context length exceeded"),
            JsonReply(b"<html>oops</html>"),
            JsonReply(
                {"output": [], "status": "incomplete", "incomplete_details": {"reason": "x"}}
            ),
        ]
    )
    with client(server) as lm:
        with pytest.raises(LMError, match="the model failed: context length exceeded"):
            lm.complete([USER])
        with pytest.raises(LMError, match="not JSON"):
            lm.complete([USER])
        with pytest.raises(LMError, match=r"incomplete \(x\)"):
            lm.complete([USER])


def test_missing_key() -> None:
    with pytest.raises(LMConfigError, match="set the environment variable MY_KEY"):
        OpenAIClient.from_env("https://api.example.invalid/v1", "MY_KEY", environ={})
    with pytest.raises(LMError, match="OPENAI_API_KEY"):
        OpenAIClient.from_env("https://api.example.invalid/v1", environ={})
    # A server that needs no key: loopback, or an explicitly empty api_key_env.
    OpenAIClient.from_env("http://localhost:11434/v1", "MY_KEY", environ={}).close()
    OpenAIClient.from_env("http://10.0.0.5:8000/v1", "", environ={}).close()
    with pytest.raises(LMConfigError, match="http"):
        OpenAIClient("api.openai.com/v1", KEY)
    assert is_loopback_url("http://[::1]:8080/v1") and not is_loopback_url("https://a.b/v1")


def test_loopback_without_key_sends_no_authorization(server: FakeResponsesServer) -> None:
    server.set_policy([message_reply("hi")])
    with OpenAIClient.from_env(server.base_url, "UNSET_KEY_VAR", environ={}) as lm:
        lm.default_model = "m"
        assert lm.complete([USER]).text == "hi"
    assert "authorization" not in server.requests[0].headers


# -- openai: Chat Completions --------------------------------------------------------------------


def test_chat_text_usage_and_override(server: FakeResponsesServer) -> None:
    server.set_policy(
        [message_reply("four", usage_=usage(12, 3, cached_tokens=2)), message_reply("x")]
    )
    with client(server, wire_api="chat") as lm:
        completion = lm.complete([SYSTEM, USER, Message("assistant", "?"), USER])
        other = lm.complete([USER], model="other-model")
    assert completion.text == "four" and completion.model == "fake-model"
    assert (completion.input_tokens, completion.output_tokens) == (12, 3)
    assert completion.cached_input_tokens == 2
    assert completion.raw["finish_reason"] == "stop"
    assert other.model == "other-model"
    first, second = server.chat_requests()
    assert first.path == "/v1/chat/completions" and first.json["stream"] is False
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant", "user"]
    assert second.json["model"] == "other-model"
    assert server.model_requests() == []


def test_chat_errors(server: FakeResponsesServer) -> None:
    server.set_policy(
        [error_reply(502), error_reply(502), message_reply("ok"), JsonReply({"choices": []})]
    )
    with client(server, wire_api="chat") as lm:
        assert lm.complete([USER]).raw["attempts"] == 3
        with pytest.raises(LMError, match="no choices"):
            lm.complete([USER])


# -- replay --------------------------------------------------------------------------------------


def write_lines(path: Path, *objects: object) -> Path:
    path.write_text("\n".join(json.dumps(o) for o in objects) + "\n")
    return path


@pytest.fixture
def trajectory(tmp_path: Path) -> Path:
    return write_lines(
        tmp_path / "t.jsonl",
        {"kind": "meta", "format": "rlm-trajectory", "version": 1},
        {"kind": "root", "text": "r1", "model": "root-m", "usage": {"input_tokens": 5}},
        {"kind": "sub", "text": "s1", "match": "count", "usage": {"output_tokens": 2}},
        {"kind": "root", "text": "r2", "match": {"last_user": "step 2", "any": "terse"}},
        {"kind": "sub", "error": "the sub-model failed"},
    )


def test_replay_order_and_kinds(trajectory: Path) -> None:
    root, sub = ReplayClient(trajectory, "root"), ReplayClient(trajectory, "sub")
    first = root.complete([USER])
    assert (first.text, first.model, first.input_tokens) == ("r1", "root-m", 5)
    sub_first = sub.complete([Message("user", "please count these")], model="sub-m")
    assert (sub_first.text, sub_first.model, sub_first.output_tokens) == ("s1", "sub-m", 2)
    assert root.complete([SYSTEM, Message("user", "now step 2")]).text == "r2"
    with pytest.raises(LMError, match="the sub-model failed"):
        sub.complete([USER])
    assert (root.position, sub.position, root.remaining) == (2, 2, 0)
    with pytest.raises(LMError, match=r"ran out of root calls: root call #3 .* only 2"):
        root.complete([USER])


def test_replay_match_failure_names_the_call(trajectory: Path) -> None:
    sub = ReplayClient(trajectory, "sub")
    with pytest.raises(LMError) as caught:
        sub.complete([Message("user", "something else")])
    message = str(caught.value)
    assert "sub call #1" in message and "line 3" in message and "'count'" in message
    assert "something else" in message
    assert sub.position == 0  # a divergence does not consume the answer
    root = ReplayClient(trajectory, "root", start=1)
    with pytest.raises(LMError, match="some message to contain 'terse'"):
        root.complete([Message("user", "step 2")])


def test_replay_bad_files(tmp_path: Path) -> None:
    with pytest.raises(LMConfigError, match="does not exist"):
        ReplayClient(tmp_path / "missing.jsonl", "root")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "root", "text": "a"}\n\n{"kind": "root"}\n')
    with pytest.raises(LMConfigError, match=r"line 3: needs exactly one of 'text' and 'error'"):
        load_trajectory(bad)
    bad.write_text('{"kind": "other", "text": "a"}\n')
    with pytest.raises(LMConfigError, match="line 1: kind must be"):
        load_trajectory(bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        load_trajectory(bad)


def test_record_then_replay_round_trip(server: FakeResponsesServer, tmp_path: Path) -> None:
    server.set_policy(
        [
            message_reply("plan", usage_=usage(100, 10)),
            message_reply("sub answer", usage_=usage(20, 3)),
            error_reply(400, "bad request"),
            message_reply("FINAL(42)", usage_=usage(150, 5, cached_tokens=90)),
        ]
    )
    path = tmp_path / "run" / "trajectory.jsonl"
    conversations = [
        ("root", [SYSTEM, Message("user", "task: answer")]),
        ("sub", [Message("user", f"summarise {KEY}")]),
        ("sub", [Message("user", "broken")]),
        ("root", [SYSTEM, Message("user", "task: answer"), Message("user", "go on")]),
    ]
    recorded: list[object] = []
    with client(server) as lm:
        clients = {
            "root": RecordingClient(lm, path, "root"),
            "sub": RecordingClient(lm, path, "sub"),
        }
        for kind, messages in conversations:
            try:
                recorded.append(clients[kind].complete(messages))
            except LMError as error:
                recorded.append(str(error))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"kind": "meta", "format": "rlm-trajectory", "version": 1}
    assert [line["kind"] for line in lines[1:]] == ["root", "sub", "sub", "root"]
    assert KEY not in path.read_text()  # redacted
    assert lines[4]["usage"] == {"input_tokens": 150, "output_tokens": 5, "cached_input_tokens": 90}

    replays = {"root": ReplayClient(path, "root"), "sub": ReplayClient(path, "sub")}
    for (kind, messages), original in zip(conversations, recorded, strict=True):
        if isinstance(original, str):
            with pytest.raises(LMError) as caught:
                replays[kind].complete(messages)
            assert str(caught.value) == original
            continue
        again = replays[kind].complete(messages)
        assert (again.text, again.model, again.input_tokens, again.output_tokens) == (
            original.text,  # type: ignore[attr-defined]
            original.model,  # type: ignore[attr-defined]
            original.input_tokens,  # type: ignore[attr-defined]
            original.output_tokens,  # type: ignore[attr-defined]
        )
    assert len(server.requests) == 4  # replay never touched the server


# -- factory -------------------------------------------------------------------------------------


def test_factory_openai_records(server: FakeResponsesServer, tmp_path: Path) -> None:
    server.set_policy([message_reply("root says"), message_reply("sub says")])
    config = {
        "rlm": {"lm_client": "openai", "root_model": "big", "sub_model": "small"},
        "lm": {"openai": {"base_url": server.base_url, "api_key_env": "T_KEY", "wire_api": "chat"}},
    }
    root, sub = make_clients(config, run_dir=tmp_path, env={"T_KEY": KEY})
    assert root.complete([USER]).text == "root says"
    assert sub.complete([USER]).text == "sub says"
    root.close()
    sub.close()
    assert [r.json["model"] for r in server.chat_requests()] == ["big", "small"]
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    entries = load_trajectory(tmp_path / TRAJECTORY_FILE)
    assert [(e.kind, e.text, e.model) for e in entries] == [
        ("root", "root says", "big"),
        ("sub", "sub says", "small"),
    ]


def test_factory_replay_and_bad_config(tmp_path: Path, trajectory: Path) -> None:
    repo = trajectory.parent
    root, sub = make_clients(
        {"rlm": {"lm_client": "replay", "replay_path": trajectory.name, "root_model": "r"}},
        run_dir=tmp_path / "run",
        repo=repo,
        replay_start={"root": 1},
    )
    assert isinstance(root, ReplayClient) and isinstance(sub, ReplayClient)
    assert root.position == 1 and sub.position == 0
    assert not (tmp_path / "run" / TRAJECTORY_FILE).exists()  # replays are not recorded
    assert resolve_replay_path(str(trajectory)) == trajectory
    with pytest.raises(LMConfigError, match=r"needs rlm\.replay_path"):
        make_clients({"rlm": {"lm_client": "replay"}}, run_dir=tmp_path)
    with pytest.raises(ValueError, match="is not a file"):
        make_clients(
            {"rlm": {"lm_client": "replay", "replay_path": "nope.jsonl"}}, run_dir=tmp_path
        )
    with pytest.raises(LMConfigError, match=r"rlm\.lm_client must be one of"):
        make_clients({"rlm": {"lm_client": "magic"}}, run_dir=tmp_path)
    with pytest.raises(LMConfigError, match="set the environment variable OPENAI_API_KEY"):
        make_clients({}, run_dir=tmp_path, env={})
    with pytest.raises(LMConfigError, match="was not found on PATH"):
        make_clients(
            {"rlm": {"lm_client": "codex"}, "codex": {"binary": "no-such-codex-binary"}},
            run_dir=tmp_path,
            env={"PATH": str(tmp_path)},
        )


# -- codex ---------------------------------------------------------------------------------------


def test_render_transcript() -> None:
    assert render_transcript([SYSTEM, USER]) == USER.content
    rendered = render_transcript([USER, Message("assistant", "5"), Message("user", "sure?")])
    assert '<message role="assistant">\n5\n</message>' in rendered
    assert rendered.index("What is 2+2?") < rendered.index("sure?")


@pytest.fixture
def codex_home(tmp_path: Path, codex_bin: Path, server: FakeResponsesServer) -> Iterator[CodexHome]:
    with ProxyTrap() as trap:
        # A required MCP server that cannot start: the client must disable it.
        home = build_codex_home(
            tmp_path,
            base_url=server.base_url,
            binary=codex_bin,
            proxy_url=trap.url,
            mcp_servers={"broken": mcp_stdio_server(str(tmp_path / "no-such-server"))},
        )
        yield home
        assert trap.lines == []
    assert server.errors == []


@pytest.mark.slow
def test_codex_client_answers_like_a_model(
    codex_home: CodexHome, server: FakeResponsesServer, tmp_path: Path
) -> None:
    server.set_policy([message_reply("4", usage_=usage(40, 3, cached_tokens=8))])
    seen: list[int | None] = []
    lm = CodexModelClient(
        str(codex_home.binary),
        env=codex_home.env,
        default_model="fake-model",
        on_pgid=seen.append,
        stderr_dir=tmp_path / "logs",
    )
    completion = lm.complete([SYSTEM, USER, Message("assistant", "5?"), Message("user", "sure?")])
    assert completion.text == "4" and completion.model == "fake-model"
    assert (completion.input_tokens, completion.output_tokens) == (40, 3)
    assert completion.cached_input_tokens == 8
    # Every lockdown setting is one codex 0.169 knows (unknown ones come back as warnings).
    assert not [w for w in completion.raw["warnings"] if "unrecognized" in str(w)]
    assert len(seen) == 2 and seen[0] and seen[1] is None
    assert processes_in_group(seen[0]) == []

    [request] = server.model_requests()
    assert request.json["model"] == "fake-model"
    # No tool that runs anything, no coding-agent prompt: the system message is the prompt.
    assert not {"exec_command", "shell", "apply_patch", "write_stdin"} & set(request.tool_names)
    assert not any(name.startswith("multi_agent") for name in request.tool_names)
    assert request.texts("developer") == ["You are terse."]
    [prompt] = request.user_texts()
    assert "What is 2+2?" in prompt and '<message role="assistant">\n5?\n</message>' in prompt
    assert prompt.rstrip().endswith("sure?\n</message>")
    assert list((tmp_path / "logs").glob("codex-lm-*.stderr.log"))


@pytest.mark.slow
def test_codex_client_failure_is_an_lm_error(
    codex_home: CodexHome, server: FakeResponsesServer
) -> None:
    server.set_policy([error_reply(400, "this model does not exist", code="model_not_found")])
    lm = CodexModelClient(str(codex_home.binary), env=codex_home.env)
    assert lm._configured_model() == "fake-model"  # from its config.toml
    with pytest.raises(LMError, match=r"codex failed: .*this model does not exist"):
        lm.complete([USER])


@pytest.mark.slow
def test_codex_client_timeout_and_interrupt(
    codex_home: CodexHome, server: FakeResponsesServer
) -> None:
    server.set_policy([stall_reply(60), stall_reply(60)])
    pgids: list[int | None] = []
    lm = CodexModelClient(
        str(codex_home.binary), env=codex_home.env, timeout_s=1.5, on_pgid=pgids.append
    )
    started = time.monotonic()
    with pytest.raises(LMError, match=r"did not answer within 1.5s"):
        lm.complete([USER])
    assert time.monotonic() - started < 10
    assert pgids[0] is not None and processes_in_group(pgids[0]) == []

    lm.timeout_s = 60
    timer = threading.Timer(1.0, lm.interrupt)
    timer.start()
    with pytest.raises(LMError, match="interrupted"):
        lm.complete([USER])
    timer.join()
    assert pgids[2] is not None and processes_in_group(pgids[2]) == []


def test_codex_binary_checks(tmp_path: Path) -> None:
    with pytest.raises(LMConfigError, match="not an executable file"):
        CodexModelClient(str(tmp_path / "codex"))
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\necho 'Error: config is broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    lm = CodexModelClient("codex", env={"PATH": str(tmp_path)})
    assert lm.binary == str(fake)
    with pytest.raises(LMError, match=r"codex failed: .*Error: config is broken"):
        lm.complete([USER])
