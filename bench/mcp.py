"""The MCP delegation server's latency, measured over real stdio against a real runner.

    .venv/bin/python bench/mcp.py --json

Figures (JSON-RPC is written and read on the pipes directly, so no client library's own
overhead is counted):
- ``cold_start_s``: ``app mcp`` launched -> its ``initialize`` answer read (median of
  ``--launches``). This is what a Codex session waits for before its first turn.
- ``status_roundtrip_p50_ms`` / ``_p95_ms``: ``delegate.status`` (run, 10 latest events,
  pending questions and confirmations) on one live server.
- ``spawn_roundtrip_p50_ms`` / ``_p95_ms``: ``delegate.spawn`` of an ``echo`` run (it
  returns once the run is queued; the run executes in the background).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.home import Home  # noqa: E402
from app.localrunner import APP, start_runner, subprocess_env  # noqa: E402
from bench.stats import percentile  # noqa: E402

TARGETS = {
    "cold_start_s": "<= 1.0",
    "status_roundtrip_p50_ms": "<= 10",
    "spawn_roundtrip_p50_ms": "<= 50",
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}


class StdioSession:
    """One ``app mcp`` process spoken to in raw JSON-RPC lines."""

    def __init__(self, home: Home, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [APP, "mcp", "--home", str(home.root), "--no-autostart"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.next_id = 1

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"app mcp exited with {self.proc.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def initialize(self) -> None:
        self.send(INITIALIZE)
        self.receive()
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        self.send(
            {
                "jsonrpc": "2.0",
                "id": self.next_id,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments},
            }
        )
        reply = self.receive()
        result: dict[str, Any] = reply["result"]
        if result.get("isError"):
            raise RuntimeError(f"{name} failed: {result['content'][0]['text']}")
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def bench_cold_start(home: Home, env: dict[str, str], launches: int) -> list[float]:
    times = []
    for _ in range(launches):
        started = time.perf_counter()
        session = StdioSession(home, env)
        session.send(INITIALIZE)
        session.receive()
        times.append(time.perf_counter() - started)
        session.close()
    return times


def timed_calls(
    session: StdioSession, name: str, arguments: dict[str, Any], count: int
) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        session.call(name, arguments)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    """Run every figure and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--launches", type=int, default=7, help="cold starts to time")
    parser.add_argument("--calls", type=int, default=200, help="status calls to time")
    parser.add_argument("--spawns", type=int, default=50, help="spawn calls to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        base = Path(tmp)
        config = {"XDG_CONFIG_HOME": str(base / "config"), "XDG_DATA_HOME": str(base / "data")}
        os.environ.update(config)
        os.environ.pop("CODEX_DELEGATION_HOME", None)
        os.environ.pop("CODEX_DELEGATION_CONFIG_OVERRIDES", None)
        home = Home(base / "home")
        runner = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES="log.level=warning")
        env = subprocess_env(**config)
        try:
            cold = bench_cold_start(home, env, args.launches)
            session = StdioSession(home, env)
            session.initialize()
            spawn_args = {"task": "bench", "engine": "echo", "config": {"echo.steps": 1}}
            run_id = session.call("delegate.spawn", spawn_args)["structuredContent"]["run_id"]
            session.call("delegate.status", {"run_id": run_id, "wait_ms": 5000})
            timed_calls(session, "delegate.status", {"run_id": run_id}, 10)  # warm-up
            status = timed_calls(session, "delegate.status", {"run_id": run_id}, args.calls)
            spawn = timed_calls(session, "delegate.spawn", spawn_args, args.spawns)
            session.close()
        finally:
            runner.stop()
    figures = {
        "cold_start_s": round(statistics.median(cold), 3),
        "cold_start_max_s": round(max(cold), 3),
        "status_roundtrip_p50_ms": round(percentile(status, 0.5), 2),
        "status_roundtrip_p95_ms": round(percentile(status, 0.95), 2),
        "spawn_roundtrip_p50_ms": round(percentile(spawn, 0.5), 2),
        "spawn_roundtrip_p95_ms": round(percentile(spawn, 0.95), 2),
    }
    result = {
        "bench": "mcp",
        "figures": figures,
        "targets": TARGETS,
        "params": {"launches": args.launches, "status_calls": args.calls, "spawns": args.spawns},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "mcp": version("mcp"),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
