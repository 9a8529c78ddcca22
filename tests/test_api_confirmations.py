"""Confirm-to-act over real HTTP: a cancel the MCP client (a model) sends waits for a person;
a person approves from the CLI, TUI or browser and the runner cancels the run itself; the MCP
client can neither approve nor deny; no nonce ever appears."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveRunner
from tests.test_api_auth_matrix import quiet_runner

MCP = {"X-Codex-Client": "mcp"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRunner]:
    runner = quiet_runner(tmp_path_factory.mktemp("confirmations"))
    try:
        yield runner
    finally:
        assert runner.stop() == 0


@pytest.fixture
def api(live: LiveRunner) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


@pytest.fixture
def mcp(live: LiveRunner) -> Iterator[httpx.Client]:
    with live.client(**MCP) as client:
        yield client


def spawn(api: httpx.Client) -> str:
    response = api.post("/api/runs", json={"task": "may be cancelled"})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run"]["id"]
    return run_id


def cancel(client: httpx.Client, run_id: str, **extra: Any) -> httpx.Response:
    body = {"action": "cancel", "request_id": uuid.uuid4().hex, **extra}
    return client.post(f"/api/runs/{run_id}/control", json=body)


def require(mcp: httpx.Client, run_id: str, **extra: Any) -> str:
    response = cancel(mcp, run_id, **extra)
    assert response.status_code == 202, response.text
    cid: str = response.json()["confirmation_id"]
    return cid


def assert_error(response: httpx.Response, status: int, *needles: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()
    assert set(body) == {"error", "detail"}, body
    for needle in needles:
        assert needle in body["detail"], f"{needle!r} not in {body['detail']!r}"
    return body


def state(api: httpx.Client, run_id: str) -> str:
    value: str = api.get(f"/api/runs/{run_id}").json()["state"]
    return value


def confirmation(api: httpx.Client, cid: str) -> dict[str, Any]:
    listed = api.get("/api/confirmations").json()["confirmations"]
    found = [item for item in listed if item["id"] == cid]
    assert len(found) == 1
    return found[0]


def test_a_models_cancel_waits_for_a_person(
    live: LiveRunner, api: httpx.Client, mcp: httpx.Client
) -> None:
    run_id = spawn(api)
    response = cancel(mcp, run_id, reason="the model changed its mind")
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"status", "confirmation_id", "action", "expires_at", "how_to_approve"}
    assert body["status"] == "confirmation_required"
    assert body["action"] == "cancel"
    assert body["confirmation_id"] in body["how_to_approve"]
    assert "nonce" not in response.text.lower()
    cid = body["confirmation_id"]
    # Nothing happened to the run yet.
    assert state(api, run_id) == "queued"
    pending = confirmation(api, cid)
    assert pending["status"] == "pending"
    assert pending["run_id"] == run_id
    assert pending["params"] == {"reason": "the model changed its mind"}
    listed = api.get("/api/confirmations", params={"status": "pending", "run_id": run_id}).json()
    assert [item["id"] for item in listed["confirmations"]] == [cid]
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    required = [event for event in events if event["type"] == "confirmation_required"]
    assert required[0]["actor"] == "mcp"
    assert required[0]["payload"]["confirmation_id"] == cid

    # Asking again for the same thing returns the same confirmation.
    assert require(mcp, run_id, reason="the model changed its mind") == cid

    # The model cannot approve (nor deny) its own request.
    assert_error(mcp.post(f"/api/confirmations/{cid}/approve", json={}), 403, "person")
    assert_error(mcp.post(f"/api/confirmations/{cid}/deny", json={}), 403, "person")
    assert confirmation(api, cid)["status"] == "pending"
    assert state(api, run_id) == "queued"

    # A person approves; the runner performs the cancel itself.
    approved = api.post(f"/api/confirmations/{cid}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["resolved_by"] == "cli"
    assert state(api, run_id) == "cancelled"
    latest = api.get(f"/api/runs/{run_id}/control").json()["latest_action"]
    assert latest["request_id"] == f"confirm:{cid}"
    assert latest["requested_by"] == "cli"
    assert latest["action"] == "cancel"
    types = [event["type"] for event in api.get(f"/api/runs/{run_id}/events").json()["events"]]
    assert {"confirmation_resolved", "cancel_requested", "run_cancelled"} <= set(types)
    # Single use.
    assert_error(api.post(f"/api/confirmations/{cid}/approve", json={}), 409, "approved")
    assert_error(api.post(f"/api/confirmations/{cid}/deny", json={}), 409, "approved")
    # The run has ended: a model asking to cancel it again gets a conflict, not a new one.
    assert_error(cancel(mcp, run_id), 409, "ended")
    for path in (run_id, f"{run_id}/events", f"{run_id}/control"):
        assert "nonce" not in api.get(f"/api/runs/{path}").text.lower()


def test_a_person_in_the_browser_or_the_tui_approves(
    live: LiveRunner, api: httpx.Client, mcp: httpx.Client
) -> None:
    first, second = spawn(api), spawn(api)
    cid_ui, cid_tui = require(mcp, first), require(mcp, second)
    browser = live.browser()
    try:
        csrf = browser.headers.pop("X-CSRF-Token")
        assert_error(browser.post(f"/api/confirmations/{cid_ui}/approve", json={}), 403, "CSRF")
        assert confirmation(api, cid_ui)["status"] == "pending"
        browser.headers["X-CSRF-Token"] = csrf
        approved = browser.post(f"/api/confirmations/{cid_ui}/approve", json={})
    finally:
        browser.close()
    assert approved.status_code == 200, approved.text
    assert approved.json()["resolved_by"] == "ui"
    assert state(api, first) == "cancelled"
    with live.client(**{"X-Codex-Client": "tui"}) as tui:
        assert tui.post(f"/api/confirmations/{cid_tui}/approve", json={}).status_code == 200
    assert confirmation(api, cid_tui)["resolved_by"] == "tui"
    assert state(api, second) == "cancelled"


def test_deny_drops_the_action(api: httpx.Client, mcp: httpx.Client) -> None:
    run_id = spawn(api)
    cid = require(mcp, run_id)
    denied = api.post(f"/api/confirmations/{cid}/deny", json={})
    assert denied.status_code == 200, denied.text
    assert denied.json()["status"] == "denied"
    assert state(api, run_id) == "queued"
    assert_error(api.post(f"/api/confirmations/{cid}/approve", json={}), 409, "denied")
    # After a denial the model may ask again, and gets a new confirmation.
    assert require(mcp, run_id) != cid


def test_a_person_cancels_directly(api: httpx.Client) -> None:
    run_id = spawn(api)
    response = cancel(api, run_id)
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"


def test_at_most_max_pending_per_run(api: httpx.Client, mcp: httpx.Client) -> None:
    run_id = spawn(api)
    for n in range(3):
        require(mcp, run_id, reason=f"reason {n}")
    assert_error(cancel(mcp, run_id, reason="one more"), 429, "confirm.max_pending")
    assert (
        len(api.get("/api/confirmations", params={"run_id": run_id}).json()["confirmations"]) == 3
    )


def test_delegates_have_no_say(live: LiveRunner, api: httpx.Client, mcp: httpx.Client) -> None:
    run_id = spawn(api)
    cid = require(mcp, run_id)
    with live.client(live.delegation_token(run_id)) as delegate:
        assert_error(delegate.get("/api/confirmations"), 403)
        assert_error(delegate.post(f"/api/confirmations/{cid}/approve", json={}), 403)
        assert_error(delegate.post(f"/api/confirmations/{cid}/deny", json={}), 403)
        assert_error(cancel(delegate, run_id), 403)
    assert confirmation(api, cid)["status"] == "pending"


def test_bad_input(api: httpx.Client, mcp: httpx.Client) -> None:
    run_id = spawn(api)
    cid = require(mcp, run_id)
    assert_error(api.post("/api/confirmations/cf_nope/approve", json={}), 404, "cf_nope")
    assert_error(api.post("/api/confirmations/cf_nope/deny", json={}), 404, "cf_nope")
    assert_error(api.post(f"/api/confirmations/{cid}/approve", json={"force": True}), 400, "force")
    assert_error(api.post(f"/api/confirmations/{cid}/approve", json=[]), 400, "object")
    no_body = api.post(
        f"/api/confirmations/{cid}/approve", headers={"Content-Type": "application/json"}
    )
    assert_error(no_body, 400, "JSON body")
    plain = api.post(
        f"/api/confirmations/{cid}/approve", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert_error(plain, 415)
    for params in ({"status": "waiting"}, {"limit": 0}, {"limit": 501}, {"run": run_id}):
        assert_error(api.get("/api/confirmations", params=params), 400)
    assert_error(cancel(mcp, "run_nope"), 404, "run_nope")
    assert_error(cancel(mcp, run_id, reason="x" * 2001), 400, "reason")
    assert confirmation(api, cid)["status"] == "pending"
    assert state(api, run_id) == "queued"


def test_an_expired_confirmation_cannot_be_approved(tmp_path: Path) -> None:
    runner = quiet_runner(tmp_path, "confirm.ttl_s=1")
    try:
        with runner.client() as api, runner.client(**MCP) as mcp:
            run_id = spawn(api)
            cid = require(mcp, run_id)
            deadline = time.monotonic() + 10
            while confirmation(api, cid)["status"] == "pending":
                assert time.monotonic() < deadline, "the sweeper never expired it"
                time.sleep(0.1)
            assert confirmation(api, cid)["status"] == "expired"
            assert_error(api.post(f"/api/confirmations/{cid}/approve", json={}), 409, "expired")
            assert state(api, run_id) == "queued"
    finally:
        assert runner.stop() == 0
