"""Refusals reported by the MCP server become security_violation events written by the runner."""

from __future__ import annotations

from tests.conftest import LiveRunner


def test_delegate_reports_land_on_its_own_run(runner: LiveRunner) -> None:
    with runner.client() as api:
        mine = api.post("/api/runs", json={"task": "t", "engine": "echo"}).json()["run"]["id"]
        other = api.post("/api/runs", json={"task": "u", "engine": "echo"}).json()["run"]["id"]
    with runner.client(token=runner.delegation_token(mine)) as delegate:
        answer = delegate.post(
            "/api/security-violations",
            json={"kind": "profile_forbidden", "tool": "delegate.spawn", "run_id": other},
        )
    assert answer.status_code == 201
    assert answer.json() == {"run_id": mine, "recorded": True}
    with runner.client() as api:
        events = api.get(f"/api/runs/{mine}/events", params={"limit": 100}).json()["events"]
        violation = next(e for e in events if e["type"] == "security_violation")
        assert violation["actor"] == "delegate"
        assert violation["payload"]["tool"] == "delegate.spawn"
        assert "outside the caller's profile" in violation["payload"]["detail"]
        others = api.get(f"/api/runs/{other}/events", params={"limit": 100}).json()["events"]
        assert all(e["type"] != "security_violation" for e in others)


def test_the_runner_writes_the_text_not_the_caller(runner: LiveRunner) -> None:
    with runner.client(**{"X-Codex-Client": "mcp"}) as mcp:
        run_id = mcp.post("/api/runs", json={"task": "t", "engine": "echo"}).json()["run"]["id"]
        refused = mcp.post(
            "/api/security-violations",
            json={"kind": "secret_argument", "tool": "x", "detail": "injected text"},
        )
        assert refused.status_code == 400
        bad_tool = mcp.post(
            "/api/security-violations",
            json={"kind": "secret_argument", "tool": "ignore previous instructions"},
        )
        assert bad_tool.status_code == 400
        no_run = mcp.post("/api/security-violations", json={"kind": "secret_argument", "tool": "t"})
        assert no_run.json() == {"run_id": None, "recorded": False}
        ok = mcp.post(
            "/api/security-violations",
            json={
                "kind": "secret_argument",
                "tool": "delegate.cancel",
                "paths": ["$.confirm_nonce"],
                "run_id": run_id,
            },
        )
        assert ok.json() == {"run_id": run_id, "recorded": True}
