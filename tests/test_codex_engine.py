"""The codex engine end to end: a real runner, the real codex binary, the fake Responses API.

The runner is started with the isolated codex environment (its own CODEX_HOME pointing at
the loopback fake server, proxies dead, telemetry off); its codex children inherit it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.home import Home
from db.mirror import read_mirror
from jobs.supervise import processes_in_group
from tests.conftest import LiveRunner, start_runner
from tests.fakes.codex_home import build_codex_home
from tests.fakes.responses_server import (
    FakeResponsesServer,
    RecordedRequest,
    SseReply,
    message_reply,
    shell_reply,
    stall_reply,
)
from tests.test_execution import TERMINAL, events, types, wait_state

pytestmark = pytest.mark.slow


class Script:
    """A policy the test can change while the runner is up."""

    def __init__(self) -> None:
        self.replies: list[SseReply] = []

    def __call__(self, request: RecordedRequest) -> SseReply:
        if not self.replies:
            return message_reply("nothing more to do")
        return self.replies.pop(0)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[FakeResponsesServer]:
    with FakeResponsesServer(script) as fake:
        yield fake


@pytest.fixture
def codex_runner(
    tmp_path: Path, codex_bin: Path, server: FakeResponsesServer
) -> Iterator[LiveRunner]:
    codex_home = build_codex_home(tmp_path / "codex", base_url=server.base_url, binary=codex_bin)
    env = {k: v for k, v in codex_home.env.items() if k != "PATH"}
    live = start_runner(
        Home(tmp_path / "runner-home"),
        CODEX_DELEGATION_CONFIG_OVERRIDES="runner.sweep_interval_s=1; ui.sse_heartbeat_s=0.5",
        **env,
    )
    try:
        yield live
    finally:
        assert live.stop() == 0


def spawn_codex(
    api: httpx.Client, codex_bin: Path, task: str, *, with_mcp: bool = False, **config: Any
) -> str:
    settings: dict[str, Any] = {"codex.binary": str(codex_bin), **config}
    if not with_mcp:
        # Most tests leave out the child's own delegation MCP server (a second process).
        settings["delegate.tool_profile"] = []
    body = {"task": task, "engine": "codex", "config": settings}
    response = api.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run"]["id"]
    return run_id


def test_a_codex_run_from_spawn_to_completion(
    codex_runner: LiveRunner, codex_bin: Path, script: Script, server: FakeResponsesServer
) -> None:
    script.replies = [shell_reply("echo hello-from-codex", call_id="c1"), message_reply("all done")]
    with codex_runner.client() as api:
        run_id = spawn_codex(api, codex_bin, "say hello", with_mcp=True)
        run = wait_state(api, run_id, TERMINAL, timeout=90)
        assert run["state"] == "succeeded", run
        seen = types(api, run_id)
        for expected in ("run_started", "agent_message", "tool_called", "usage", "run_completed"):
            assert expected in seen, seen
        assert seen.index("run_started") < seen.index("tool_called") < seen.index("run_completed")
        tool = next(e for e in events(api, run_id) if e["type"] == "tool_called")
        assert tool["payload"]["tool"] == "shell"
        assert "hello-from-codex" in tool["payload"]["params"]["command"]
        completed = events(api, run_id)[-1]
        assert completed["payload"]["answer_preview"] == "all done"
        assert read_mirror(codex_runner.home.events_mirror(run_id)) == [
            e["seq"] for e in events(api, run_id)
        ]
    logs = list((codex_runner.home.run_dir(run_id) / "logs").glob("codex-turn-*.stderr.log"))
    assert logs, "codex's stderr is kept in the run's logs"
    assert all(r.path == "/v1/responses" for r in server.requests)
    # The child saw its delegation tools (question_only: status and questions, no spawn).
    offered = server.model_requests()[0].tool_names
    delegation = sorted(name for name in offered if "delegation" in name)
    assert delegation, offered
    assert not any("spawn" in name for name in delegation), delegation


def test_pause_between_turns_and_resume_in_the_same_thread(
    codex_runner: LiveRunner, codex_bin: Path, script: Script, server: FakeResponsesServer
) -> None:
    script.replies = [shell_reply("sleep 2", call_id="slow"), message_reply("first turn done")]
    with codex_runner.client() as api:
        run_id = spawn_codex(api, codex_bin, "a long task")
        server.wait_for_requests(1, timeout=60)
        pause = api.post(f"/api/runs/{run_id}/control", json={"action": "pause", "request_id": "p"})
        assert pause.json()["state"] == "pausing"
        wait_state(api, run_id, {"paused"}, timeout=60)
        assert "run_completed" not in types(api, run_id)
        requests_before = len(server.model_requests())
        script.replies = [message_reply("second turn done")]
        api.post(f"/api/runs/{run_id}/control", json={"action": "resume", "request_id": "r"})
        run = wait_state(api, run_id, TERMINAL, timeout=60)
        assert run["state"] == "succeeded", run
        assert events(api, run_id)[-1]["payload"]["answer_preview"] == "second turn done"
    resumed = server.model_requests()[requests_before]
    # The same thread: the second turn's request carries the first turn's conversation.
    assert any("a long task" in text for text in resumed.user_texts())
    assert any("first turn done" in text for text in resumed.assistant_texts())


def test_cancel_mid_turn_leaves_no_process(
    codex_runner: LiveRunner, codex_bin: Path, script: Script, server: FakeResponsesServer
) -> None:
    script.replies = [stall_reply(120)]
    with codex_runner.client() as api:
        run_id = spawn_codex(api, codex_bin, "stall")
        server.wait_for_requests(1, timeout=60)
        deadline = time.monotonic() + 10
        pgid = None
        while pgid is None and time.monotonic() < deadline:
            pgid = _engine_pgid(codex_runner.home, run_id)
            time.sleep(0.02)
        assert pgid is not None and processes_in_group(pgid)
        api.post(f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "c"})
        deadline = time.monotonic() + 3
        while processes_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_in_group(pgid) == []
        assert wait_state(api, run_id, TERMINAL)["state"] == "cancelled"


def test_a_child_that_fails_to_start_fails_the_run_with_codexs_error(
    codex_runner: LiveRunner, codex_bin: Path
) -> None:
    with codex_runner.client() as api:
        run_id = spawn_codex(api, codex_bin, "x", **{"codex.model_provider": "nope"})
        run = wait_state(api, run_id, TERMINAL, timeout=60)
        assert run["state"] == "failed"
        assert "nope" in run["state_reason"], run["state_reason"]


def _engine_pgid(home: Home, run_id: str) -> int | None:
    import sqlite3

    conn = sqlite3.connect(str(home.db_path))
    try:
        row = conn.execute("SELECT engine_pgid FROM run WHERE id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row and row[0] else None
