"""Execution latencies and throughput against a real runner over HTTP.

    .venv/bin/python bench/execution.py --json

Figures:
- ``spawn_to_started_p50_ms`` / ``_p99_ms``: client-side time from sending ``POST /api/runs``
  to receiving that run's ``run_started`` on the global SSE stream (in-process consumer).
- ``pause_after_boundary_ms``: median time from a step's end (``step_completed``) to
  ``run_paused`` when the pause was requested mid-step (server timestamps, ms resolution).
- ``cancel_group_gone_p99_ms``: time from ``POST …/control cancel`` answering to the moment
  the engine's child process group has no process left (``echo.child = true``).
- ``runs_per_s``: runs completed per second with a trivial engine step (echo, 1 step).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.clock import parse_ts  # noqa: E402
from app.home import Home  # noqa: E402
from app.localrunner import start_runner  # noqa: E402
from bench.stats import percentile  # noqa: E402
from jobs.supervise import processes_in_group  # noqa: E402

TARGETS = {
    "spawn_to_started_p50_ms": "<= 50",
    "cancel_group_gone_p99_ms": "<= 1000",
    "pause_after_boundary_ms": "<= 100",
}


class StartedWatcher:
    """Follows the global SSE stream and records when each run_started arrives."""

    def __init__(self, base_url: str, token: str) -> None:
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=None
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # The stream breaks when the runner stops at the end of the bench.
        with contextlib.suppress(httpx.HTTPError):
            self._follow()

    def _follow(self) -> None:
        with self.client.stream("GET", "/api/events/stream") as response:
            event_type = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event_type = line[7:]
                elif line.startswith("data: ") and event_type == "run_started":
                    run_id = json.loads(line[6:])["run_id"]
                    with self.cond:
                        self.seen[run_id] = time.perf_counter()
                        self.cond.notify_all()

    def wait_for(self, run_id: str, timeout: float = 10) -> float:
        with self.cond:
            self.cond.wait_for(lambda: run_id in self.seen, timeout)
            return self.seen[run_id]


def spawn(api: httpx.Client, **config: Any) -> str:
    body = {
        "task": "bench",
        "engine": "echo",
        "config": {f"echo.{k}": v for k, v in config.items()},
    }
    response = api.post("/api/runs", json=body)
    response.raise_for_status()
    run_id: str = response.json()["run"]["id"]
    return run_id


def wait_state(api: httpx.Client, run_id: str, states: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(f"/api/runs/{run_id}").json()["state"] in states:
            return
        time.sleep(0.005)
    raise SystemExit(f"{run_id} did not reach {states}")


def events(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = api.get(
        f"/api/runs/{run_id}/events", params={"limit": 1000}
    ).json()["events"]
    return result


def bench_spawn_to_started(api: httpx.Client, watcher: StartedWatcher, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        sent = time.perf_counter()
        run_id = spawn(api, steps=1)
        samples.append((watcher.wait_for(run_id) - sent) * 1000)
        wait_state(api, run_id, {"succeeded"})
    return samples


def bench_pause_after_boundary(api: httpx.Client, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        run_id = spawn(api, steps=1000, step_ms=50)
        wait_state(api, run_id, {"running"})
        time.sleep(0.075)  # mid-step
        api.post(f"/api/runs/{run_id}/control", json={"action": "pause", "request_id": "p"})
        wait_state(api, run_id, {"paused"})
        evts = events(api, run_id)
        paused = next(e for e in evts if e["type"] == "run_paused")
        boundary = [e for e in evts if e["type"] == "step_completed" and e["seq"] < paused["seq"]][
            -1
        ]
        samples.append((parse_ts(paused["ts"]) - parse_ts(boundary["ts"])).total_seconds() * 1000)
        api.post(f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "c"})
    return samples


def bench_cancel_group_gone(api: httpx.Client, home: Home, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        run_id = spawn(api, steps=100, step_ms=5000, child=True)
        pgid = None
        deadline = time.monotonic() + 10
        while pgid is None and time.monotonic() < deadline:
            pgid = _engine_pgid(home, run_id)
            time.sleep(0.01)
        if pgid is None:
            raise SystemExit(f"{run_id} never started a child")
        api.post(f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "c"})
        cancelled = time.perf_counter()
        while processes_in_group(pgid):
            if time.perf_counter() - cancelled > 10:
                raise SystemExit(f"group {pgid} survived the cancel")
            time.sleep(0.002)
        samples.append((time.perf_counter() - cancelled) * 1000)
    return samples


def _engine_pgid(home: Home, run_id: str) -> int | None:
    import sqlite3

    conn = sqlite3.connect(str(home.db_path))
    try:
        row = conn.execute("SELECT engine_pgid FROM run WHERE id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row and row[0] else None


def bench_runs_per_s(api: httpx.Client, count: int) -> float:
    started = time.perf_counter()
    run_ids = [spawn(api, steps=1) for _ in range(count)]
    for run_id in run_ids:
        wait_state(api, run_id, {"succeeded"}, timeout=120)
    return count / (time.perf_counter() - started)


def main() -> None:
    """Run every figure and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke use)")
    args = parser.parse_args()
    samples = 10 if args.quick else 50
    with tempfile.TemporaryDirectory(prefix="bench-execution-") as tmp:
        home = Home(Path(tmp) / "home")
        runner = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES="log.level=warning")
        try:
            api = httpx.Client(
                base_url=runner.base_url, headers={"Authorization": f"Bearer {runner.token}"}
            )
            watcher = StartedWatcher(runner.base_url, runner.token)
            time.sleep(0.2)
            spawn_samples = bench_spawn_to_started(api, watcher, samples)
            pause_samples = bench_pause_after_boundary(api, max(5, samples // 5))
            cancel_samples = bench_cancel_group_gone(api, home, max(5, samples // 2))
            throughput = bench_runs_per_s(api, 50 if args.quick else 200)
        finally:
            runner.stop()
    figures = {
        "spawn_to_started_p50_ms": round(statistics.median(spawn_samples), 2),
        "spawn_to_started_p99_ms": round(percentile(spawn_samples, 0.99), 2),
        "pause_after_boundary_ms": round(statistics.median(pause_samples), 2),
        "cancel_group_gone_p99_ms": round(percentile(cancel_samples, 0.99), 2),
        "runs_per_s": round(throughput, 1),
    }
    result = {
        "bench": "execution",
        "figures": figures,
        "targets": TARGETS,
        "params": {"samples": samples, "workers": 4, "engine": "echo"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
