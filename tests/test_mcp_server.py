"""``app mcp`` over real stdio with the real ``mcp`` client, against a real runner.

Every test launches ``app mcp`` as a subprocess (as Codex does) and drives real runs with the
``echo`` engine, so what is tested is the tool surface: profiles, schemas, results, the
secret guard, confirm-to-act, the question round trip, reconnects and autostart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult

from app.home import Home
from app.mcp.client import TOKEN_FILE_ENV
from app.mcp.schemas import ConfirmationInfo, QuestionInfo
from tests.conftest import APP, LiveRunner, start_runner, subprocess_env

FULL_TOOLS = {
    "delegate.spawn",
    "delegate.status",
    "delegate.pause",
    "delegate.resume",
    "delegate.cancel",
    "delegate.question.enqueue",
    "delegate.question.poll",
    "delegate.question.answer",
}
QUESTION_ONLY_TOOLS = {
    "delegate.status",
    "delegate.question.enqueue",
    "delegate.question.poll",
    "delegate.question.answer",
}
FAST = "runner.sweep_interval_s=1; ui.sse_heartbeat_s=0.5"


# -- helpers (imported by test_mcp_bad_input) ----------------------------------------------------


def server_params(
    home: Home,
    *,
    profile: str = "full",
    autostart: bool = False,
    env: dict[str, str] | None = None,
) -> StdioServerParameters:
    """How to launch ``app mcp`` for ``home`` (the env is what Codex would pass, plus ours)."""
    args = ["mcp", "--home", str(home.root), "--profile", profile]
    if not autostart:
        args.append("--no-autostart")
    base = {
        "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
        "XDG_DATA_HOME": os.environ["XDG_DATA_HOME"],
        "PYTHONPATH": subprocess_env()["PYTHONPATH"],
    }
    return StdioServerParameters(command=APP, args=args, env={**base, **(env or {})})


@asynccontextmanager
async def mcp_session(
    params: StdioServerParameters, errlog: Path, *, mode: str = "legacy"
) -> AsyncIterator[Client]:
    """A connected MCP client; the server's stderr goes to ``errlog``."""
    with errlog.open("a") as err:
        async with Client(stdio_client(params, errlog=err), mode=mode) as client:
            yield client


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful call (fails the test on a tool error)."""
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert block.type == "text"
    return block.text  # type: ignore[union-attr]


def run(main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main)


async def wait_until(
    client: Client, run_id: str, states: set[str], timeout: float = 20
) -> dict[str, Any]:
    """Follow a run with delegate.status until it is in one of ``states`` (a wait returns the
    state after the change, so the state is looked at before each wait too)."""
    deadline = time.monotonic() + timeout
    status = structured(await client.call_tool("delegate.status", {"run_id": run_id}))
    while status["state"] not in states:
        assert time.monotonic() < deadline, f"{run_id} never reached {states}: {status}"
        status = structured(
            await client.call_tool("delegate.status", {"run_id": run_id, "wait_ms": 2000})
        )
    return status


def echo_spawn(task: str = "echo me", **config: Any) -> dict[str, Any]:
    return {"task": task, "engine": "echo", "config": {f"echo.{k}": v for k, v in config.items()}}


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie nobody reaped yet is gone too


def stop_pid(pid: int, timeout: float = 20) -> None:
    """SIGINT a runner this test made the MCP server start, and wait until it is gone."""
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while not pid_gone(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


# -- tool lists and schemas ----------------------------------------------------------------------


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_tool_lists_per_profile(runner: LiveRunner, tmp_path: Path) -> None:
    with runner.client() as api:
        run_id = api.post("/api/runs", json=echo_spawn()).json()["run"]["id"]
    token_file = runner.home.run_dir(run_id) / "delegation_token"

    async def main() -> None:
        async with mcp_session(server_params(runner.home), tmp_path / "full.log") as full:
            tools = (await full.list_tools()).tools
            assert {tool.name for tool in tools} == FULL_TOOLS
            for tool in tools:
                assert tool.description and len(tool.description) > 80
                assert tool.input_schema["type"] == "object"
                assert tool.input_schema["additionalProperties"] is False
                assert tool.output_schema is not None
                assert tool.output_schema["type"] == "object"
                for node in _walk([tool.input_schema, tool.output_schema]):
                    assert "$ref" not in node, tool.name
            spawn = next(tool for tool in tools if tool.name == "delegate.spawn")
            assert spawn.input_schema["required"] == ["task"]
            assert spawn.input_schema["properties"]["engine"] == {
                "description": spawn.input_schema["properties"]["engine"]["description"],
                "enum": ["codex", "echo", "rlm"],
                "type": "string",
            }
            cancel = next(tool for tool in tools if tool.name == "delegate.cancel")
            assert cancel.annotations is not None and cancel.annotations.destructive_hint
        params = server_params(
            runner.home, profile="question_only", env={TOKEN_FILE_ENV: str(token_file)}
        )
        async with mcp_session(params, tmp_path / "child.log") as child:
            tools = (await child.list_tools()).tools
            assert {tool.name for tool in tools} == QUESTION_ONLY_TOOLS
            status = next(tool for tool in tools if tool.name == "delegate.status")
            assert "run_id" not in status.input_schema["required"]
            assert child.instructions is not None and "delegate run" in child.instructions

    run(main)


def test_the_modern_protocol_works_too(runner: LiveRunner, tmp_path: Path) -> None:
    """Clients that negotiate 2026-07-28 (no initialize handshake) get the same tools."""

    async def main() -> None:
        async with mcp_session(server_params(runner.home), tmp_path / "e.log", mode="auto") as c:
            assert {t.name for t in (await c.list_tools()).tools} == FULL_TOOLS
            spawned = structured(await c.call_tool("delegate.spawn", echo_spawn("modern")))
            assert spawned["status"] == "queued"

    run(main)


def test_views_mirror_the_runner_views() -> None:
    """The light mirrors in app.mcp.schemas keep every field of the runner's views."""
    from app.control.confirmations import ConfirmationView
    from app.control.questions import QuestionView

    for mirror, original in ((QuestionInfo, QuestionView), (ConfirmationInfo, ConfirmationView)):
        assert [(f.name, f.type) for f in msgspec.structs.fields(mirror)] == [
            (f.name, f.type) for f in msgspec.structs.fields(original)
        ]


# -- runs ----------------------------------------------------------------------------------------


def test_spawn_returns_at_once_and_status_follows_the_run(
    runner: LiveRunner, tmp_path: Path
) -> None:
    async def main() -> None:
        async with mcp_session(server_params(runner.home), tmp_path / "e.log") as client:
            started = time.monotonic()
            result = await client.call_tool(
                "delegate.spawn", echo_spawn("the answer", steps=8, step_ms=100)
            )
            assert time.monotonic() - started < 3.0, "spawn must not wait for the run"
            spawned = structured(result)
            run_id = spawned["run_id"]
            assert spawned["status"] == "queued" and spawned["engine"] == "echo"
            assert spawned["events_url"] == f"/api/runs/{run_id}/events"
            assert f"delegate.status {{run_id: '{run_id}'" in text_of(result)
            first = structured(await client.call_tool("delegate.status", {"run_id": run_id}))
            assert first["state"] in {"queued", "running"} and first["waited_ms"] == 0
            assert first["events"][0]["type"] == "run_queued"
            assert first["events"][0]["actor"] == "mcp"
            done = await wait_until(client, run_id, {"succeeded"})
            assert done["terminal"] and done["answer"] == "the answer"
            assert done["events"][-1]["type"] == "run_completed"
            # Following from a seq returns only what came after it.
            tail = structured(
                await client.call_tool(
                    "delegate.status",
                    {"run_id": run_id, "after_seq": done["last_seq"] - 2, "events": 50},
                )
            )
            assert [e["seq"] for e in tail["events"]] == [
                done["last_seq"] - 1,
                done["last_seq"],
            ]
            text = text_of(await client.call_tool("delegate.status", {"run_id": run_id}))
            assert text.startswith(f"Run {run_id} is succeeded")
            assert "Answer: the answer" in text
            # Codex's spelling of the dotted names works as well.
            alias = await client.call_tool("delegate_status", {"run_id": run_id, "events": 0})
            assert structured(alias)["events"] == []

    run(main)


def test_status_wait_blocks_until_the_state_changes(runner: LiveRunner, tmp_path: Path) -> None:
    async def main() -> None:
        async with mcp_session(server_params(runner.home), tmp_path / "e.log") as client:
            run_id = structured(
                await client.call_tool("delegate.spawn", echo_spawn(steps=5, step_ms=400))
            )["run_id"]
            await wait_until(client, run_id, {"running"})
            started = time.monotonic()
            status = structured(
                await client.call_tool(
                    "delegate.status", {"run_id": run_id, "wait_ms": 10_000, "events": 0}
                )
            )
            elapsed = time.monotonic() - started
            assert status["state"] == "succeeded" and status["changed"]
            assert 0.2 < elapsed < 8, elapsed
            assert status["waited_ms"] > 0
            # A terminal run answers at once, however long the caller offers to wait.
            started = time.monotonic()
            again = structured(
                await client.call_tool("delegate.status", {"run_id": run_id, "wait_ms": 10_000})
            )
            assert time.monotonic() - started < 2 and not again["changed"]

    run(main)


def test_budgets_and_config_reach_the_run(runner: LiveRunner, tmp_path: Path) -> None:
    async def main() -> None:
        async with mcp_session(server_params(runner.home), tmp_path / "e.log") as client:
            args = echo_spawn(steps=100, step_ms=100) | {"budgets": {"wall_clock_ms": 1000}}
            run_id = structured(await client.call_tool("delegate.spawn", args))["run_id"]
            ended = await wait_until(
                client, run_id, {"succeeded", "failed", "cancelled", "budget_exceeded"}
            )
            assert ended["state"] == "budget_exceeded"
            clash = await client.call_tool(
                "delegate.spawn",
                {
                    "task": "x",
                    "engine": "echo",
                    "budgets": {"wall_clock_ms": 1000},
                    "config": {"delegate.wall_clock_timeout_ms": 5000},
                },
            )
            assert clash.is_error and "disagree" in text_of(clash)
            capped = await client.call_tool(
                "delegate.spawn",
                {"task": "x", "engine": "echo", "config": {"runner.allowed_modes": ["dev"]}},
            )
            assert capped.is_error and "runner.allowed_modes" in text_of(capped)

    run(main)


def test_pause_resume_and_cancel_with_confirmation(runner: LiveRunner, tmp_path: Path) -> None:
    async def main() -> None:
        async with mcp_session(server_params(runner.home), tmp_path / "e.log") as client:
            run_id = structured(
                await client.call_tool("delegate.spawn", echo_spawn(steps=400, step_ms=50))
            )["run_id"]
            await wait_until(client, run_id, {"running"})

            paused = structured(
                await client.call_tool("delegate.pause", {"run_id": run_id, "reason": "hold"})
            )
            assert paused["state"] in {"pausing", "paused"} and paused["applied"]
            await wait_until(client, run_id, {"paused"})
            again = structured(
                await client.call_tool(
                    "delegate.pause", {"run_id": run_id, "request_id": paused["request_id"]}
                )
            )
            assert again["applied"] is False, "a repeated request_id is not applied twice"

            resumed = structured(await client.call_tool("delegate.resume", {"run_id": run_id}))
            assert resumed["changed"] and resumed["state"] in {"queued", "running"}
            await wait_until(client, run_id, {"running"})

            # A model's cancel becomes a confirmation a person must approve.
            first = await client.call_tool(
                "delegate.cancel", {"run_id": run_id, "reason": "no longer needed"}
            )
            required = structured(first)
            assert required["status"] == "confirmation_required"
            assert required["action"] == "cancel" and required["expires_at"]
            assert "approve" in required["how_to_approve"]
            assert "nonce" not in json.dumps(required).lower()
            assert "needs a person's approval" in text_of(first)
            dedup = structured(
                await client.call_tool(
                    "delegate.cancel", {"run_id": run_id, "reason": "no longer needed"}
                )
            )
            assert dedup["confirmation_id"] == required["confirmation_id"]
            status = structured(await client.call_tool("delegate.status", {"run_id": run_id}))
            assert status["state"] == "running", "nothing is cancelled before the approval"
            assert [c["id"] for c in status["pending_confirmations"]] == [
                required["confirmation_id"]
            ]

            # A person approves (the CLI here); the runner cancels the run itself.
            with runner.client() as person:
                response = person.post(
                    f"/api/confirmations/{required['confirmation_id']}/approve", json={}
                )
                assert response.status_code == 200, response.text
            ended = await wait_until(client, run_id, {"cancelled"})
            assert ended["pending_confirmations"] == []
            assert "confirmation_resolved" in {e["type"] for e in ended["events"]}

            late = await client.call_tool("delegate.pause", {"run_id": run_id})
            assert late.is_error and text_of(late).startswith("[")

    run(main)


def test_question_round_trip_between_child_and_parent(runner: LiveRunner, tmp_path: Path) -> None:
    """A delegate (question_only) asks; the parent (full) polls and answers; the delegate
    gets the answer and its run resumes."""

    async def main() -> None:
        async with mcp_session(server_params(runner.home), tmp_path / "parent.log") as parent:
            run_id = structured(
                await parent.call_tool("delegate.spawn", echo_spawn("asked", steps=400, step_ms=50))
            )["run_id"]
            await wait_until(parent, run_id, {"running"})
            token_file = runner.home.run_dir(run_id) / "delegation_token"
            params = server_params(
                runner.home, profile="question_only", env={TOKEN_FILE_ENV: str(token_file)}
            )
            async with mcp_session(params, tmp_path / "child.log") as child:
                own = structured(await child.call_tool("delegate.status", {}))
                assert own["run_id"] == run_id
                asked = structured(
                    await child.call_tool(
                        "delegate.question.enqueue",
                        {"prompt": "Blue or green?", "auto_pause": True},
                    )
                )["question"]
                assert asked["run_id"] == run_id and asked["status"] == "pending"
                await wait_until(parent, run_id, {"paused"})

                answers: list[dict[str, Any]] = []

                async def child_waits() -> None:
                    polled = await child.call_tool(
                        "delegate.question.poll", {"question_id": asked["id"], "wait_ms": 20_000}
                    )
                    answers.append(structured(polled))

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(child_waits)
                    seen = structured(
                        await parent.call_tool("delegate.question.poll", {"wait_ms": 5000})
                    )
                    assert [q["id"] for q in seen["questions"]] == [asked["id"]]
                    status = structured(
                        await parent.call_tool("delegate.status", {"run_id": run_id})
                    )
                    assert [q["id"] for q in status["pending_questions"]] == [asked["id"]]
                    answered = structured(
                        await parent.call_tool(
                            "delegate.question.answer",
                            {"question_id": asked["id"], "answer": "green"},
                        )
                    )["question"]
                    assert answered["status"] == "answered"
                polled = answers[0]
                assert polled["timed_out"] is False
                assert polled["questions"][0]["answer"] == "green"
                mine = structured(
                    await child.call_tool("delegate.question.poll", {"status": "answered"})
                )
                assert [q["id"] for q in mine["questions"]] == [asked["id"]]
            # Answering lifted the question's own pause: the run goes on from its checkpoint.
            await wait_until(parent, run_id, {"running"})
            with runner.client() as api:
                page = api.get(f"/api/runs/{run_id}/events", params={"limit": 1000}).json()
            seen_types = [e["type"] for e in page["events"]]
            assert "question_answered" in seen_types
            assert seen_types.index("run_resumed") > seen_types.index("run_paused")

    run(main)


def test_question_only_is_scoped_to_its_own_run(runner: LiveRunner, tmp_path: Path) -> None:
    with runner.client() as api:
        mine = api.post("/api/runs", json=echo_spawn(steps=50, step_ms=50)).json()["run"]["id"]
        other = api.post("/api/runs", json=echo_spawn()).json()["run"]["id"]
    errlog = tmp_path / "child.log"
    params = server_params(
        runner.home,
        profile="question_only",
        env={TOKEN_FILE_ENV: str(runner.home.run_dir(mine) / "delegation_token")},
    )

    async def main() -> None:
        async with mcp_session(params, errlog) as child:
            for name, args in (
                ("delegate.spawn", echo_spawn()),
                ("delegate.cancel", {"run_id": mine}),
                ("delegate.pause", {"run_id": mine}),
            ):
                refused = await child.call_tool(name, args)
                assert refused.is_error
                assert text_of(refused).startswith("[delegate_mode_forbidden]")
                assert "security_violation" in text_of(refused)
            foreign = await child.call_tool("delegate.status", {"run_id": other})
            assert foreign.is_error and "only see its own run" in text_of(foreign)
            foreign_q = await child.call_tool(
                "delegate.question.enqueue", {"run_id": other, "prompt": "?"}
            )
            assert foreign_q.is_error
            assert structured(await child.call_tool("delegate.status", {}))["run_id"] == mine

    run(main)
    log = errlog.read_text()
    assert log.count("security_violation: kind=profile_forbidden") == 3
    assert "tool=delegate.spawn profile=question_only" in log


def test_question_only_needs_the_token_file(runner: LiveRunner) -> None:
    result = subprocess.run(
        [APP, "mcp", "--home", str(runner.home.root), "--profile", "question_only"],
        input="",
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert TOKEN_FILE_ENV in result.stderr


# -- secrets -------------------------------------------------------------------------------------

SECRET = "cdpd_s3cr3t-value-that-must-not-leak"


SECRET_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("delegate.spawn", {"task": "x", "config": {"confirm_nonce": SECRET}}, "$.config"),
    ("delegate.status", {"run_id": "run_x", "delegation_token": SECRET}, "$.delegation"),
    ("delegate.cancel", {"run_id": "run_x", "Confirm-Nonce": SECRET}, "$.Confirm-Nonce"),
    ("delegate.pause", {"run_id": "run_x", "Delegation.Token": SECRET}, "$.Delegation"),
    ("delegate.question.answer", {"question_id": "q", "x": [{"TOKEN": SECRET}]}, "$.x[0]"),
    ("delegate.spawn", {"task": "x", "config": {"github.api_key": SECRET}}, "api_key"),
    ("delegate_status", {"run_id": "run_x", "auth": {"password": SECRET}}, "$.auth"),
    ("nope.unknown", {"token": SECRET}, "$.token"),
]


def test_secret_looking_arguments_are_refused(runner: LiveRunner, tmp_path: Path) -> None:
    with runner.client() as api:
        run_id = api.post("/api/runs", json=echo_spawn(steps=50, step_ms=50)).json()["run"]["id"]
    full_log, child_log = tmp_path / "full.log", tmp_path / "child.log"
    child_params = server_params(
        runner.home,
        profile="question_only",
        env={TOKEN_FILE_ENV: str(runner.home.run_dir(run_id) / "delegation_token")},
    )

    async def check(client: Client, tool: str, arguments: dict[str, Any], path: str) -> None:
        result = await client.call_tool(tool, arguments)
        assert result.is_error, tool
        text = text_of(result)
        assert SECRET not in text
        assert text.startswith("[secret_argument_refused]"), text
        assert path in text and "security_violation" in text

    async def main() -> None:
        async with mcp_session(server_params(runner.home), full_log) as client:
            for tool, arguments, path in SECRET_CASES:
                await check(client, tool, arguments, path)
        async with mcp_session(child_params, child_log) as child:
            await check(
                child,
                "delegate.question.enqueue",
                {"prompt": "may I?", "delegation_token": SECRET},
                "$.delegation_token",
            )

    run(main)
    with runner.client() as api:
        assert [r["id"] for r in api.get("/api/runs").json()["runs"]] == [run_id]
        questions = api.get("/api/questions").json()["questions"]
        assert questions == [], "nothing reached the runner"
    log = full_log.read_text()
    assert SECRET not in log
    for tool, _, _ in SECRET_CASES:
        shown = "delegate.status" if tool == "delegate_status" else tool
        assert f"security_violation: kind=secret_argument tool={shown} profile=full" in log
    child = child_log.read_text()
    assert SECRET not in child
    assert (
        "security_violation: kind=secret_argument tool=delegate.question.enqueue "
        f"profile=question_only run={run_id}"
    ) in child


# -- connection ----------------------------------------------------------------------------------


def _serve_on_port(home: Home, port: int) -> subprocess.Popen[str]:
    """``app serve`` on a fixed port (a restart that keeps the address, new token)."""
    proc = subprocess.Popen(
        [APP, "serve", "--home", str(home.root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(CODEX_DELEGATION_CONFIG_OVERRIDES=FAST),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Ctrl-C" in line:
            return proc
    raise RuntimeError(f"runner exited early with {proc.wait()}")


def test_the_server_survives_runner_restarts(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    errlog = tmp_path / "e.log"
    first = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES=FAST)
    later: list[LiveRunner] = []
    same_port: list[subprocess.Popen[str]] = []

    async def main() -> None:
        async with mcp_session(server_params(home), errlog) as client:
            run_id = structured(await client.call_tool("delegate.spawn", echo_spawn()))["run_id"]
            await wait_until(client, run_id, {"succeeded"})
            assert first.stop() == 0
            down = await client.call_tool("delegate.status", {"run_id": run_id})
            assert down.is_error and text_of(down).startswith("[runner_unavailable]")
            assert "app serve" in text_of(down)
            # A new runner: new port, new control token. The next call just works.
            later.append(start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES=FAST))
            assert structured(await client.call_tool("delegate.status", {"run_id": run_id}))[
                "state"
            ] == ("succeeded")
            # Restarted on the same port: the old token now gets 401, is re-read, and works.
            assert later[0].stop() == 0
            same_port.append(_serve_on_port(home, int(later[0].base_url.rsplit(":", 1)[1])))
            assert structured(await client.call_tool("delegate.status", {"run_id": run_id}))[
                "answer"
            ] == ("echo me")

    try:
        run(main)
    finally:
        first.stop()
        for live in later:
            live.stop()
        for proc in same_port:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    log = errlog.read_text()
    assert "runner unreachable" in log
    assert "runner answered 401; reading its endpoint and token again" in log


def test_autostart_starts_a_detached_runner_and_says_so(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")

    async def main() -> None:
        async with mcp_session(server_params(home, autostart=True), tmp_path / "e.log") as c:
            first = await c.call_tool("delegate.spawn", echo_spawn("auto"))
            spawned = structured(first)
            assert spawned["notice"] and "one was started" in spawned["notice"]
            assert text_of(first).startswith("Note: No runner was up")
            done = await wait_until(c, spawned["run_id"], {"succeeded"})
            assert done["notice"] is None, "the notice is given once"

    pid = 0
    try:
        run(main)
        endpoint = json.loads(home.endpoint_path.read_text())
        pid = int(endpoint["pid"])
        assert not pid_gone(pid), "the runner outlives the MCP session"
        assert os.getsid(pid) == pid, "it runs in its own session"
        assert "Press Ctrl-C to stop." in (home.root / "logs" / "runner.log").read_text()
        assert (home.root / "logs" / "runner.log").stat().st_mode & 0o777 == 0o600
    finally:
        if pid:
            stop_pid(pid)


def test_no_autostart_without_a_runner_is_a_readable_error(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")

    async def main() -> None:
        async with mcp_session(server_params(home), tmp_path / "e.log") as client:
            assert {t.name for t in (await client.list_tools()).tools} == FULL_TOOLS
            result = await client.call_tool("delegate.status", {"run_id": "run_x"})
            assert result.is_error
            assert text_of(result) == (
                f"[runner_unavailable] no runner is up for {home.root}; start it with "
                f"`app serve --home {home.root}` (autostart is off)"
            )

    run(main)
    assert not home.endpoint_path.exists()


def test_a_runner_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    config_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "codex-delegation"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text("[rlm]\nmax_iterations = 'many'\n")

    async def main() -> None:
        async with mcp_session(server_params(home, autostart=True), tmp_path / "e.log") as c:
            started = time.monotonic()
            result = await c.call_tool("delegate.spawn", echo_spawn())
            assert time.monotonic() - started < 15, "a failed start is reported, not waited out"
            text = text_of(result)
            assert result.is_error and text.startswith("[runner_unavailable]")
            assert "did not come up (exit code 2)" in text
            assert "rlm.max_iterations" in text, "the log's last lines say why"

    run(main)
