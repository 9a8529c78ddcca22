"""End to end with the real codex binary as the *parent*: a scripted model calls
``delegate.spawn`` through Codex's MCP client (our ``app mcp``), then ``delegate.status``;
the run exists in the runner and completes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.home import Home
from app.localrunner import APP
from tests.conftest import LiveRunner, start_runner
from tests.fakes.codex_home import (
    build_codex_home,
    mcp_stdio_server,
)
from tests.fakes.responses_server import (
    FakeResponsesServer,
    RecordedRequest,
    SseReply,
    function_call_reply,
    message_reply,
)
from tests.test_execution import TERMINAL, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveRunner]:
    runner = start_runner(Home(tmp_path / "runner-home"))
    try:
        yield runner
    finally:
        assert runner.stop() == 0


def _tool(request: RecordedRequest, suffix: str) -> tuple[str, str]:
    """(namespace, name) of the delegation tool whose exposed name ends with ``suffix``."""
    for full in request.tool_names:
        namespace, _, name = full.rpartition(".")
        if "delegation" in namespace and name.replace("_", ".").endswith(suffix):
            return namespace, name
    raise AssertionError(f"no delegation tool like {suffix!r} offered: {request.tool_names}")


def test_codex_spawns_a_delegate_through_our_mcp_server(
    tmp_path: Path, codex_bin: Path, live: LiveRunner
) -> None:
    seen: dict[str, str] = {}

    def policy(request: RecordedRequest) -> SseReply:
        outputs = request.function_call_outputs()
        if "spawn" not in outputs:
            namespace, name = _tool(request, "spawn")
            return function_call_reply(
                name,
                {"task": "count to three", "engine": "echo"},
                namespace=namespace,
                call_id="spawn",
            )
        if "status" not in outputs:
            spawned = outputs["spawn"]
            seen["spawn_output"] = spawned
            run_id = spawned.split("run_id", 1)[1].split('"')[2]
            seen["run_id"] = run_id
            namespace, name = _tool(request, "status")
            return function_call_reply(
                name,
                {"run_id": run_id, "wait_ms": 5000},
                namespace=namespace,
                call_id="status",
            )
        seen["status_output"] = outputs["status"]
        return message_reply("The delegate is done.")

    with FakeResponsesServer(policy) as server:
        delegation = mcp_stdio_server(
            APP,
            ["mcp", "--home", str(live.home.root), "--no-autostart"],
            env={"CODEX_DELEGATION_HOME": str(live.home.root)},
        )
        codex = build_codex_home(
            tmp_path / "codex",
            base_url=server.base_url,
            binary=codex_bin,
            mcp_servers={"delegation": delegation},
        )
        result = codex.run(codex.exec_args("Delegate this: count to three."), timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert server.errors == []
    assert "run_id" in seen, seen
    run_id = seen["run_id"]
    assert run_id.startswith("run_")
    with live.client() as api:
        run = wait_state(api, run_id, TERMINAL, timeout=30)
        assert run["state"] == "succeeded"
        assert run["task"] == "count to three"
    status = json.loads(seen["status_output"][seen["status_output"].index("{") :])
    assert status["run_id"] == run_id
    # The status call saw the run (possibly already finished).
    assert status["state"] in {"queued", "running", "succeeded"}
