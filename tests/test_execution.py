"""Execution over a real runner: Huey consumer, run loop, control at step boundaries, recovery.

Uses the diagnostic ``echo`` engine (no model) so that what is tested is the supervision.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.home import Home
from db.mirror import read_mirror
from jobs.supervise import processes_in_group
from tests.conftest import APP, LiveRunner, start_runner, subprocess_env

TERMINAL = {"succeeded", "failed", "cancelled", "budget_exceeded"}
FAST = "runner.sweep_interval_s=1; ui.sse_heartbeat_s=0.5"


def spawn(api: httpx.Client, task: str = "echo me", **config: Any) -> str:
    body = {"task": task, "engine": "echo", "config": {f"echo.{k}": v for k, v in config.items()}}
    response = api.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run"]["id"]
    return run_id


def wait_state(
    api: httpx.Client, run_id: str, states: set[str], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        if run["state"] in states:
            return run
        time.sleep(0.02)
    raise AssertionError(f"{run_id} never reached {states}: {run}")


def events(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    page: list[dict[str, Any]] = api.get(
        f"/api/runs/{run_id}/events", params={"limit": 1000}
    ).json()["events"]
    return page


def types(api: httpx.Client, run_id: str) -> list[str]:
    return [event["type"] for event in events(api, run_id)]


@pytest.fixture
def api(runner: LiveRunner) -> Iterator[httpx.Client]:
    with runner.client() as client:
        yield client


def test_a_spawned_run_executes_to_completion(runner: LiveRunner, api: httpx.Client) -> None:
    run_id = spawn(api, "the answer", steps=3)
    run = wait_state(api, run_id, TERMINAL)
    assert run["state"] == "succeeded"
    assert types(api, run_id) == [
        "run_queued",
        "run_started",
        "step_started",
        "step_completed",
        "step_started",
        "step_completed",
        "step_started",
        "agent_message",
        "step_completed",
        "run_completed",
    ]
    completed = events(api, run_id)[-1]
    assert completed["payload"]["answer_preview"] == "the answer"
    assert read_mirror(runner.home.events_mirror(run_id)) == list(range(1, 11))


def test_pause_at_a_boundary_then_resume_from_the_checkpoint(api: httpx.Client) -> None:
    run_id = spawn(api, steps=12, step_ms=50)
    wait_state(api, run_id, {"running"})
    time.sleep(0.15)
    paused_at = time.monotonic()
    assert (
        api.post(
            f"/api/runs/{run_id}/control", json={"action": "pause", "request_id": "p1"}
        ).json()["state"]
        == "pausing"
    )
    wait_state(api, run_id, {"paused"})
    assert time.monotonic() - paused_at < 1.0
    steps_before = types(api, run_id).count("step_completed")
    assert 0 < steps_before < 12
    time.sleep(0.3)
    assert types(api, run_id).count("step_completed") == steps_before, "a paused run must not step"
    api.post(f"/api/runs/{run_id}/control", json={"action": "resume", "request_id": "r1"})
    assert wait_state(api, run_id, TERMINAL)["state"] == "succeeded"
    seen = types(api, run_id)
    assert seen.count("step_completed") == 12, "resume continues from the checkpoint"
    assert seen.count("run_started") == 2
    second_start = [e for e in events(api, run_id) if e["type"] == "run_started"][1]
    assert second_start["payload"]["from_checkpoint"] is True
    assert second_start["payload"]["attempt"] == 2


def test_cancel_mid_step_stops_at_once(api: httpx.Client) -> None:
    run_id = spawn(api, steps=5, step_ms=5000)
    wait_state(api, run_id, {"running"})
    time.sleep(0.2)
    started = time.monotonic()
    api.post(f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "c1"})
    wait_state(api, run_id, {"cancelled"})
    # The worker is released quickly: the next run starts while the cancelled step would
    # still have had seconds to go.
    follow = spawn(api, steps=1)
    assert wait_state(api, follow, TERMINAL)["state"] == "succeeded"
    assert time.monotonic() - started < 2.0
    assert "run_completed" not in types(api, run_id)


def _engine_pgid(home: Home, run_id: str) -> int | None:
    import sqlite3

    conn = sqlite3.connect(str(home.db_path))
    try:
        row = conn.execute("SELECT engine_pgid FROM run WHERE id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row and row[0] else None


def _wait_pgid(home: Home, run_id: str) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pgid = _engine_pgid(home, run_id)
        if pgid:
            return pgid
        time.sleep(0.01)
    raise AssertionError(f"{run_id} never started a child")


def test_cancel_kills_the_engines_process_group(runner: LiveRunner, api: httpx.Client) -> None:
    run_id = spawn(api, steps=3, step_ms=30_000, child=True)
    pgid = _wait_pgid(runner.home, run_id)
    assert processes_in_group(pgid)
    api.post(f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "c"})
    deadline = time.monotonic() + 2
    while processes_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert processes_in_group(pgid) == [], "the cancelled run's processes must be gone"
    assert wait_state(api, run_id, TERMINAL)["state"] == "cancelled"


def test_wall_clock_budget(api: httpx.Client) -> None:
    body = {
        "task": "slow",
        "engine": "echo",
        "config": {"echo.steps": 100, "echo.step_ms": 100, "delegate.wall_clock_timeout_ms": 300},
    }
    run_id = api.post("/api/runs", json=body).json()["run"]["id"]
    run = wait_state(api, run_id, TERMINAL)
    assert run["state"] == "budget_exceeded"
    exceeded = next(e for e in events(api, run_id) if e["type"] == "budget_exceeded")
    assert exceeded["payload"]["budget"] == "delegate.wall_clock_timeout_ms"
    assert exceeded["payload"]["used"] >= 300


def test_an_unavailable_engine_fails_the_run_with_guidance(tmp_path: Path) -> None:
    # The default sandbox is docker, which this runner cannot use (no engine answers at its
    # DOCKER_HOST): fail fast, with guidance, never silently unsandboxed.
    live = start_runner(
        Home(tmp_path / "runner-home"),
        DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock",
        CODEX_DELEGATION_CONFIG_OVERRIDES=FAST,
    )
    try:
        with live.client() as api:
            body = {"task": "think", "engine": "rlm"}
            run_id = api.post("/api/runs", json=body).json()["run"]["id"]
            run = wait_state(api, run_id, TERMINAL)
    finally:
        assert live.stop() == 0
    assert run["state"] == "failed"
    assert "no Docker engine answers" in run["state_reason"]
    assert "allowed_environments" in run["state_reason"]


def test_unknown_engine_is_refused_at_spawn(runner: LiveRunner, api: httpx.Client) -> None:
    response = api.post("/api/runs", json={"task": "x", "engine": "gpt-7"})
    assert response.status_code == 400
    assert "engine" in response.json()["detail"]
    assert api.get("/api/runs").json()["runs"] == []
    assert list(runner.home.runs_dir.iterdir()) == []


def _no_overlapping_attempts(evts: list[dict[str, Any]]) -> None:
    """Between two run_started events the run must have paused or been interrupted."""
    running = False
    for event in evts:
        if event["type"] == "run_started":
            assert not running, "a run was executed twice at once"
            running = True
        elif event["type"] in (
            "run_paused",
            "run_interrupted",
            *[f"run_{s}" for s in ("completed", "failed", "cancelled")],
            "budget_exceeded",
        ):
            running = False


def test_kill_9_of_the_runner_with_runs_in_flight(tmp_path: Path) -> None:
    home = Home(tmp_path / "crash-home")
    first = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES=FAST + "; runner.lease_ttl_s=3")
    with first.client() as api:
        run_ids = [spawn(api, f"task {i}", steps=8, step_ms=150, child=True) for i in range(12)]
        # Wait (bounded) until the workers are in the middle of steps: four running, the
        # rest queued, and child processes alive — a loaded machine may take a while.
        deadline = time.monotonic() + 20
        pgids: list[int] = []
        while time.monotonic() < deadline and len(pgids) < 2:
            time.sleep(0.05)
            pgids = [pgid for r in run_ids if (pgid := _engine_pgid(home, r))]
        states = {api.get(f"/api/runs/{r}").json()["state"] for r in run_ids}
        assert "running" in states
    assert pgids, "running runs have child processes"
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    deadline = time.monotonic() + 5
    while any(processes_in_group(p) for p in pgids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pgids if processes_in_group(p)] == [], "no orphan survives the runner"
    second = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES=FAST)
    try:
        with second.client() as api:
            for run_id in run_ids:
                run = wait_state(api, run_id, TERMINAL, timeout=60)
                assert run["state"] == "succeeded", run
                evts = events(api, run_id)
                assert [e["seq"] for e in evts] == list(range(1, len(evts) + 1))
                _no_overlapping_attempts(evts)
                assert [e["type"] for e in evts].count("run_completed") == 1
                assert read_mirror(home.events_mirror(run_id)) == [e["seq"] for e in evts]
            interrupted = [r for r in run_ids if "run_interrupted" in types(api, r)]
            assert interrupted, "runs that were running when the runner died are interrupted"
    finally:
        assert second.stop() == 0


def test_standalone_worker_executes_runs(tmp_path: Path) -> None:
    home = Home(tmp_path / "worker-home")
    live = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES=FAST + "; queue.workers=0")
    worker = subprocess.Popen(
        [APP, "worker", "--home", str(home.root), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(CODEX_DELEGATION_CONFIG_OVERRIDES=FAST),
    )
    try:
        assert worker.stdout is not None
        assert "worker" in worker.stdout.readline()
        with live.client() as api:
            run_id = spawn(api, "from the worker", steps=2)
            run = wait_state(api, run_id, TERMINAL)
            assert run["state"] == "succeeded"
            started = next(e for e in events(api, run_id) if e["type"] == "run_started")
            assert started["payload"]["worker_id"].split(":")[1] == str(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert live.stop() == 0


def test_repo_outside_allowed_roots_is_refused(
    tmp_path: Path, runner: LiveRunner, api: httpx.Client
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "codex-delegation"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text(f'[paths]\nallowed_roots = ["{allowed}"]\n')
    refused = api.post("/api/runs", json={"task": "x", "engine": "echo", "repo": str(elsewhere)})
    assert refused.status_code == 400
    assert "outside paths.allowed_roots" in refused.json()["detail"]
    accepted = api.post("/api/runs", json={"task": "x", "engine": "echo", "repo": str(allowed)})
    assert accepted.status_code == 201, accepted.text
    assert len(api.get("/api/runs").json()["runs"]) == 1


def test_missing_codex_binary_is_refused_at_spawn(runner: LiveRunner, api: httpx.Client) -> None:
    body = {"task": "x", "engine": "codex", "config": {"codex.binary": "/nonexistent/codex"}}
    refused = api.post("/api/runs", json=body)
    assert refused.status_code == 400
    assert "/nonexistent/codex" in refused.json()["detail"]
    assert api.get("/api/runs").json()["runs"] == []


def test_unwritable_home_is_a_clear_error_with_nothing_created(
    runner: LiveRunner, api: httpx.Client
) -> None:
    # As root, permissions do not stop writes: make runs/ unusable instead.
    runner.home.runs_dir.rmdir()
    runner.home.runs_dir.write_text("not a directory")
    refused = api.post("/api/runs", json={"task": "x", "engine": "echo"})
    assert refused.status_code == 503
    assert "make the runner's home writable" in refused.json()["detail"]
    assert api.get("/api/runs").json()["runs"] == []
    runner.home.runs_dir.unlink()
    runner.home.runs_dir.mkdir()
