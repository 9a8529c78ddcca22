"""CLI verbs that are clients of a live runner (`app runs/spawn/questions/confirmations`)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import APP, LiveRunner, subprocess_env


def app(runner: LiveRunner, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APP, *args, "--home", str(runner.home.root)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )


def test_spawn_wait_list_show_events(runner: LiveRunner) -> None:
    spawned = app(runner, "spawn", "say hi", "--engine", "echo", "-c", "echo.steps=2", "--wait")
    assert spawned.returncode == 0, spawned.stderr
    run_id, state = spawned.stdout.split()
    assert state == "succeeded"
    listed = app(runner, "runs", "list")
    assert run_id in listed.stdout and "succeeded" in listed.stdout
    shown = json.loads(app(runner, "runs", "show", run_id, "--json").stdout)
    assert shown["task"] == "say hi"
    events = app(runner, "runs", "events", run_id)
    assert "run_completed" in events.stdout


def test_pause_resume_cancel_from_the_cli(runner: LiveRunner) -> None:
    spawned = app(
        runner,
        "spawn",
        "slow",
        "--engine",
        "echo",
        "-c",
        "echo.steps=100",
        "-c",
        "echo.step_ms=100",
    )
    run_id = spawned.stdout.split()[0]
    assert app(runner, "runs", "pause", run_id).stdout.split()[1] in ("pausing", "paused")
    assert app(runner, "runs", "cancel", run_id).stdout.split()[1] == "cancelled"
    refused = app(runner, "runs", "resume", run_id)
    assert refused.returncode == 1
    assert "has ended" in refused.stderr


def test_approving_a_models_cancel_from_the_cli(runner: LiveRunner) -> None:
    with runner.client(**{"X-Codex-Client": "mcp"}) as mcp:
        run_id = mcp.post(
            "/api/runs",
            json={
                "task": "t",
                "engine": "echo",
                "config": {"echo.steps": 100, "echo.step_ms": 100},
            },
        ).json()["run"]["id"]
        pending = mcp.post(
            f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "m"}
        )
        assert pending.status_code == 202
        confirmation_id = pending.json()["confirmation_id"]
    listed = app(runner, "confirmations")
    assert confirmation_id in listed.stdout
    approved = app(runner, "confirmations", "approve", confirmation_id)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.split() == [confirmation_id, "approved"]
    assert json.loads(app(runner, "runs", "show", run_id, "--json").stdout)["state"] == "cancelled"


def test_answering_a_question_from_the_cli(runner: LiveRunner) -> None:
    with runner.client() as api:
        run_id = api.post(
            "/api/runs",
            json={
                "task": "t",
                "engine": "echo",
                "config": {"echo.steps": 100, "echo.step_ms": 100},
            },
        ).json()["run"]["id"]
    with runner.client(token=runner.delegation_token(run_id)) as delegate:
        question = delegate.post(
            f"/api/runs/{run_id}/questions", json={"prompt": "left or right?"}
        ).json()
    assert question["id"] in app(runner, "questions").stdout
    answered = app(runner, "questions", "answer", question["id"], "left")
    assert answered.stdout.split() == [question["id"], "answered"]
    with runner.client() as api:
        api.post(f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "c"})


@pytest.mark.parametrize("verb", ["runs", "questions", "confirmations"])
def test_no_runner_is_a_clear_error(tmp_path: object, verb: str) -> None:
    result = subprocess.run(
        [APP, verb, "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert result.returncode == 1
    assert "no runner is up" in result.stderr
    assert "app serve" in result.stderr
