"""Bad input never crashes ``app mcp``: every tool, called with missing, extra, wrongly typed,
oversized and random arguments, answers a tool error a model can read.

One runner and one ``app mcp`` (over real stdio, driven through a blocking portal so
hypothesis can call it synchronously) serve the whole module; the last test checks that the
same server process still works normally after everything thrown at it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult

from app.home import Home
from app.mcp.server import MAX_ARGUMENT_BYTES, TOOLS
from app.redact import is_secret_key
from tests.conftest import APP, LiveRunner, start_runner, subprocess_env

ERROR_TEXT = re.compile(r"^\[[a-z_]+\] \S")
#: Arguments that pass validation for each tool, with ids that do not exist on the runner.
VALID: dict[str, dict[str, Any]] = {
    "delegate.spawn": {"task": "t", "engine": "echo"},
    "delegate.status": {"run_id": "run_nope"},
    "delegate.pause": {"run_id": "run_nope"},
    "delegate.resume": {"run_id": "run_nope"},
    "delegate.cancel": {"run_id": "run_nope"},
    "delegate.question.enqueue": {"run_id": "run_nope", "prompt": "p"},
    "delegate.question.poll": {},
    "delegate.question.answer": {"question_id": "q_nope", "answer": "a"},
}
SCHEMAS = {spec.name: spec.inputs["full"] for spec in TOOLS}
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class SyncSession:
    """A live MCP client, called synchronously through an anyio portal."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: Client) -> None:
        self.portal = portal
        self.client = client

    def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        return self.portal.call(self.client.call_tool, name, arguments)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRunner, SyncSession]]:
    base = tmp_path_factory.mktemp("mcp-bad-input")
    home = Home(base / "home")
    xdg = {"XDG_CONFIG_HOME": str(base / "config"), "XDG_DATA_HOME": str(base / "data")}
    runner = start_runner(
        home,
        CODEX_DELEGATION_CONFIG_OVERRIDES="runner.sweep_interval_s=1",
        CODEX_DELEGATION_HOME=str(home.root),
        **xdg,
    )
    params = StdioServerParameters(
        command=APP,
        args=["mcp", "--home", str(home.root), "--no-autostart"],
        env={**xdg, "PYTHONPATH": subprocess_env()["PYTHONPATH"]},
    )
    try:
        with (
            (base / "mcp.log").open("w") as errlog,
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(
                Client(stdio_client(params, errlog=errlog), mode="legacy")
            ) as client,
        ):
            yield runner, SyncSession(portal, client)
    finally:
        assert runner.stop() == 0


@pytest.fixture
def session(live: tuple[LiveRunner, SyncSession]) -> SyncSession:
    return live[1]


def assert_tool_error(result: CallToolResult, *codes: str) -> str:
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    block = result.content[0]
    assert block.type == "text"
    text: str = block.text  # type: ignore[union-attr]
    assert ERROR_TEXT.match(text), text
    assert "Traceback" not in text
    if codes:
        assert text.split("]", maxsplit=1)[0][1:] in codes, text
    return text


def field_types(tool: str) -> dict[str, tuple[set[str], bool]]:
    """Each input field's JSON types (from the advertised schema) and whether it is required."""
    from app.mcp.schemas import tool_schema

    schema = tool_schema(SCHEMAS[tool], for_input=True)
    required = set(schema.get("required", []))
    result = {}
    for name, prop in schema["properties"].items():
        options = prop.get("anyOf", [prop])
        kinds = {option.get("type", "string") for option in options}
        if "number" in kinds:
            kinds.add("integer")
        result[name] = (kinds, name in required)
    return result


SAMPLES: dict[str, Any] = {
    "string": "text",
    "integer": 7,
    "number": 1.5,
    "boolean": True,
    "object": {"a": 1},
    "array": [1, "b"],
    "null": None,
}


def wrong_values(tool: str) -> list[tuple[str, Any]]:
    """(field, value) pairs whose value has a JSON type the field does not take."""
    pairs = []
    for name, (kinds, required) in field_types(tool).items():
        for kind, value in SAMPLES.items():
            if kind in kinds or (kind == "null" and not required):
                continue  # an optional field also takes null (= omitted)
            pairs.append((name, value))
    return pairs


WRONG = [(tool, name, value) for tool in VALID for name, value in wrong_values(tool)]

# -- missing, extra, wrong type, oversized -----------------------------------------------------


@pytest.mark.parametrize("tool", [t for t in VALID if VALID[t]])
def test_missing_required_arguments(session: SyncSession, tool: str) -> None:
    text = assert_tool_error(session.call(tool, {}), "invalid_arguments")
    assert "missing required field" in text and "(required)" in text


@SETTINGS
@given(
    tool=st.sampled_from(sorted(VALID)),
    key=st.text(min_size=1, max_size=30).filter(lambda k: not is_secret_key(k)),
    value=st.none() | st.integers() | st.text(max_size=20),
)
def test_extra_arguments(session: SyncSession, tool: str, key: str, value: Any) -> None:
    if key in field_types(tool):
        return
    text = assert_tool_error(session.call(tool, {**VALID[tool], key: value}), "invalid_arguments")
    assert "unknown field" in text


@pytest.mark.parametrize(("tool", "field", "value"), WRONG)
def test_wrongly_typed_arguments(session: SyncSession, tool: str, field: str, value: Any) -> None:
    text = assert_tool_error(session.call(tool, {**VALID[tool], field: value}), "invalid_arguments")
    assert f"$.{field}" in text or "Expected" in text


@pytest.mark.parametrize(
    ("tool", "arguments", "expect"),
    [
        ("delegate.spawn", {"task": "x" * 100_001}, "length <= 100000"),
        ("delegate.spawn", {"task": ""}, "length >= 1"),
        ("delegate.spawn", {"task": "t", "repo": "/" + "a" * 5000}, "length <= 4096"),
        ("delegate.spawn", {"task": "t", "config": {f"a.k{i}": i for i in range(65)}}, "<= 64"),
        ("delegate.spawn", {"task": "t", "config": {"NotDotted": 1}}, "$.config"),
        ("delegate.spawn", {"task": "t", "budgets": {"wall_clock_ms": 10**12}}, "<= 604800000"),
        ("delegate.spawn", {"task": "t", "budgets": {"max_subcall_depth": 9}}, "<= 4"),
        ("delegate.spawn", {"task": "t", "engine": "gpt-7"}, "$.engine"),
        ("delegate.status", {"run_id": "r" * 201}, "length <= 200"),
        ("delegate.status", {"run_id": "../questions"}, "matching regex"),
        ("delegate.status", {"run_id": "run_x", "wait_ms": 30_001}, "<= 30000"),
        ("delegate.status", {"run_id": "run_x", "events": 51}, "<= 50"),
        ("delegate.status", {"run_id": "run_x", "after_seq": -1}, ">= 0"),
        ("delegate.pause", {"run_id": "run_x", "reason": "r" * 2001}, "length <= 2000"),
        ("delegate.pause", {"run_id": "run_x", "request_id": "has space"}, "matching regex"),
        ("delegate.question.enqueue", {"run_id": "r", "prompt": "p", "ttl_s": 0}, ">= 1"),
        ("delegate.question.poll", {"limit": 101}, "<= 100"),
        ("delegate.question.poll", {"status": "maybe"}, "$.status"),
        ("delegate.question.answer", {"question_id": "q", "answer": "a" * 100_001}, "100000"),
        ("delegate.spawn", {"task": "t", "task_id": "x" * (MAX_ARGUMENT_BYTES + 1)}, "limit"),
    ],
)
def test_oversized_and_out_of_range_arguments(
    session: SyncSession, tool: str, arguments: dict[str, Any], expect: str
) -> None:
    text = assert_tool_error(session.call(tool, arguments), "invalid_arguments")
    assert expect in text


# -- anything at all -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)


@SETTINGS
@given(
    tool=st.sampled_from([*sorted(VALID), "delegate", "delegate.spawn.x", "", "delegate_cancel"]),
    arguments=st.dictionaries(st.text(max_size=12), JSON, max_size=5),
)
def test_random_arguments_never_crash_the_server(
    session: SyncSession, tool: str, arguments: dict[str, Any]
) -> None:
    result = session.call(tool, arguments)
    if result.is_error:
        assert_tool_error(result)
    else:
        assert isinstance(result.structured_content, dict)


@SETTINGS
@given(
    tool=st.sampled_from(sorted(VALID)), base=st.sampled_from(["valid", "empty"]), data=st.data()
)
def test_random_values_for_real_fields(
    session: SyncSession, tool: str, base: str, data: st.DataObject
) -> None:
    """Known field names with arbitrary values: validated, refused by the runner, or served."""
    # A random but valid config could make a runaway echo run; config has its own tests.
    fields = sorted(set(field_types(tool)) - {"config"})
    arguments = dict(VALID[tool]) if base == "valid" else {}
    for name in data.draw(st.lists(st.sampled_from(fields), max_size=3, unique=True)):
        arguments[name] = data.draw(JSON)
    if tool == "delegate.spawn" and "task" in arguments:
        arguments["engine"] = "echo"  # no run that needs a model
    result = session.call(tool, arguments)
    if result.is_error:
        assert_tool_error(result)


def test_deep_nesting_is_refused_not_fatal(session: SyncSession) -> None:
    nested: Any = "leaf"
    for _ in range(150):
        nested = {"n": nested}
    assert_tool_error(session.call("delegate.spawn", {"task": "t", "x": nested}))


def test_protocol_level_garbage(live: tuple[LiveRunner, SyncSession], tmp_path: Path) -> None:
    """Raw JSON-RPC the SDK client would never send: a JSON-RPC error, and the server lives."""
    runner = live[0]
    proc = subprocess.Popen(
        [APP, "mcp", "--home", str(runner.home.root), "--no-autostart"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(CODEX_DELEGATION_HOME=str(runner.home.root)),
    )
    assert proc.stdin is not None and proc.stdout is not None

    def exchange(message: dict[str, Any] | str) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        line = message if isinstance(message, str) else json.dumps(message)
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        reply: dict[str, Any] = json.loads(proc.stdout.readline())
        return reply

    try:
        init = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        assert "result" in exchange(
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
        )
        proc.stdin.write(
            json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n"
        )
        for index, params in enumerate(
            [
                {"name": "delegate.status", "arguments": [1, 2]},
                {"name": 5, "arguments": {}},
                {"arguments": {"run_id": "x"}},
                {"name": "delegate.status", "arguments": "run_x"},
            ],
            start=2,
        ):
            reply = exchange(
                {"jsonrpc": "2.0", "id": index, "method": "tools/call", "params": params}
            )
            assert "error" in reply or reply["result"]["isError"], reply
        exchange_ok = exchange(
            {
                "jsonrpc": "2.0",
                "id": 99,
                "method": "tools/call",
                "params": {"name": "delegate.question.poll", "arguments": {}},
            }
        )
        assert exchange_ok["result"]["isError"] is False
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_the_server_still_works_after_all_that(live: tuple[LiveRunner, SyncSession]) -> None:
    runner, session = live
    spawned = session.call("delegate.spawn", {"task": "still alive", "engine": "echo"})
    assert not spawned.is_error
    run_id = spawned.structured_content["run_id"]  # type: ignore[index]
    status = session.call("delegate.status", {"run_id": run_id, "wait_ms": 5000})
    assert not status.is_error
    with runner.client() as api:
        runs = api.get("/api/runs", params={"limit": 500}).json()["runs"]
    # Only runs of valid spawns exist: echo runs (the fuzz may make a few valid ones).
    assert all(run["engine"] == "echo" for run in runs)
