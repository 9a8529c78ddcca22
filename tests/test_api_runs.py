"""Runs over real HTTP: spawn, list, show, events, control, settings, and every bad input.

One runner serves the module; its single worker is held by a never-ending run (see
``quiet_runner``), so every run a test spawns stays ``queued`` until the test moves it.
"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveRunner
from tests.test_api_auth_matrix import quiet_runner


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRunner]:
    runner = quiet_runner(tmp_path_factory.mktemp("runs"))
    try:
        yield runner
    finally:
        assert runner.stop() == 0


@pytest.fixture
def api(live: LiveRunner) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


def spawn(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/api/runs", json={"task": "a test run", **body})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()["run"]
    return run


def control(api: httpx.Client, run_id: str, action: str, **extra: Any) -> httpx.Response:
    body = {"action": action, "request_id": uuid.uuid4().hex, **extra}
    return api.post(f"/api/runs/{run_id}/control", json=body)


def assert_error(response: httpx.Response, status: int, *needles: str) -> dict[str, str]:
    """A JSON ``{error, detail}`` with ``status`` whose detail names every needle."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, str] = response.json()
    assert set(body) == {"error", "detail"}, body
    for needle in needles:
        assert needle in body["detail"], f"{needle!r} not in {body['detail']!r}"
    return body


def run_dirs(live: LiveRunner) -> set[str]:
    return {path.name for path in live.home.runs_dir.iterdir()}


def all_run_ids(api: httpx.Client) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/runs", params=params).json()
        ids |= {run["id"] for run in page["runs"]}
        cursor = page["next_cursor"]
        if not cursor:
            return ids


# -- spawn --------------------------------------------------------------------------------------


def test_spawn_creates_a_queued_run_with_its_files(live: LiveRunner, api: httpx.Client) -> None:
    response = api.post("/api/runs", json={"task": "count to three", "task_id": "t-1"})
    assert response.status_code == 201, response.text
    body = response.json()
    run = body["run"]
    assert run["state"] == "queued"
    assert run["task"] == "count to three"
    assert run["task_id"] == "t-1"
    assert body["events_url"] == f"/api/runs/{run['id']}/events"
    assert body["stream_url"] == f"/api/runs/{run['id']}/events/stream"
    assert api.get(f"/api/runs/{run['id']}").json() == run
    run_dir = live.home.run_dir(run["id"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["run"]["id"] == run["id"]
    assert manifest["config_sources"]
    token_file = run_dir / "delegation_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    # The delegation token is handed over out of band only, never in a response.
    token = token_file.read_text()
    assert token not in response.text
    assert token not in api.get(f"/api/runs/{run['id']}").text
    assert token not in api.get(f"/api/runs/{run['id']}/events").text


def test_spawn_records_a_per_run_override_the_repo_allows(
    api: httpx.Client, tmp_path: Path, live: LiveRunner
) -> None:
    repo = tmp_path / "repo"
    (repo / ".codex").mkdir(parents=True)
    (repo / ".codex" / "delegation.toml").write_text('[runner]\nallowed_modes = ["prod", "dev"]\n')
    run = spawn(api, repo=str(repo), config={"runner.mode": "dev"})
    assert run["repo"] == str(repo.resolve())
    manifest = json.loads((live.home.run_dir(run["id"]) / "manifest.json").read_text())
    assert manifest["config"]["runner"]["mode"] == "dev"
    assert manifest["config_sources"]["runner.mode"] == "run"


def test_spawn_with_a_parent(api: httpx.Client) -> None:
    parent = spawn(api)
    child = spawn(api, parent_run_id=parent["id"])
    assert child["parent_run_id"] == parent["id"]


SPAWN_REFUSALS: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("no task", {}, 400, ("task",)),
    ("empty task", {"task": ""}, 400, ("task",)),
    ("task too long", {"task": "x" * 100_001}, 400, ("task", "100000")),
    ("task not a string", {"task": 5}, 400, ("task", "str")),
    ("unknown field", {"task": "t", "tsak": "t"}, 400, ("tsak",)),
    ("engine unknown", {"task": "t", "engine": "gpt"}, 400, ("engine",)),
    ("mode unknown", {"task": "t", "mode": "root"}, 400, ("mode",)),
    ("rlm_policy unknown", {"task": "t", "rlm_policy": "sometimes"}, 400, ("rlm_policy",)),
    ("config not an object", {"task": "t", "config": ["a=b"]}, 400, ("config",)),
    ("config key unknown", {"task": "t", "config": {"nope.key": 1}}, 400, ("nope.key",)),
    (
        "config value of the wrong type",
        {"task": "t", "config": {"echo.steps": "many"}},
        400,
        ("echo.steps", "integer"),
    ),
    (
        "config capped by the repo",
        {"task": "t", "config": {"runner.mode": "dev"}},
        400,
        ("runner.mode", "runner.allowed_modes"),
    ),
    (
        "config capped by the repo (environment)",
        {"task": "t", "config": {"rlm.environment": "local"}},
        400,
        ("rlm.environment", "rlm.allowed_environments"),
    ),
    (
        "repo-only key in the run layer",
        {"task": "t", "config": {"github.enabled": True}},
        400,
        ("github.enabled",),
    ),
    ("repo relative", {"task": "t", "repo": "some/dir"}, 400, ("absolute",)),
    ("repo missing", {"task": "t", "repo": "/no/such/dir"}, 400, ("/no/such/dir",)),
    ("repo with NUL", {"task": "t", "repo": "/tmp/a\x00b"}, 400, ("NUL",)),
    ("repo empty", {"task": "t", "repo": ""}, 400, ("repo",)),
    ("unknown parent", {"task": "t", "parent_run_id": "run_nope"}, 404, ("run_nope",)),
    ("parent_run_id empty", {"task": "t", "parent_run_id": ""}, 400, ("parent_run_id",)),
    ("task_id too long", {"task": "t", "task_id": "x" * 201}, 400, ("task_id",)),
    ("body an array", [], 400, ("object",)),
]


@pytest.mark.parametrize(
    ("body", "status", "needles"),
    [case[1:] for case in SPAWN_REFUSALS],
    ids=[case[0] for case in SPAWN_REFUSALS],
)
def test_spawn_refuses_bad_input_and_creates_nothing(
    live: LiveRunner, api: httpx.Client, body: Any, status: int, needles: tuple[str, ...]
) -> None:
    before_dirs, before_rows = run_dirs(live), all_run_ids(api)
    assert_error(api.post("/api/runs", json=body), status, *needles)
    assert run_dirs(live) == before_dirs
    assert all_run_ids(api) == before_rows


def test_spawn_repo_that_is_a_file_creates_nothing(
    live: LiveRunner, api: httpx.Client, tmp_path: Path
) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    before = run_dirs(live)
    assert_error(api.post("/api/runs", json={"task": "t", "repo": str(a_file)}), 400, str(a_file))
    assert run_dirs(live) == before


def test_spawn_refuses_a_repo_cap_of_the_repo_itself(
    live: LiveRunner, api: httpx.Client, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / ".codex").mkdir(parents=True)
    (repo / ".codex" / "delegation.toml").write_text('[runner]\nallowed_modes = ["prod"]\n')
    before = run_dirs(live)
    body = {"task": "t", "repo": str(repo), "config": {"runner.mode": "dev"}}
    detail = assert_error(api.post("/api/runs", json=body), 400, "runner.mode")["detail"]
    assert "delegation.toml" in detail
    assert run_dirs(live) == before


def test_spawn_refuses_malformed_bodies(live: LiveRunner, api: httpx.Client) -> None:
    before = run_dirs(live)
    headers = {"Content-Type": "application/json"}
    assert_error(api.post("/api/runs", content=b"", headers=headers), 400, "JSON body")
    assert_error(api.post("/api/runs", content=b'{"task": ', headers=headers), 400, "JSON")
    assert_error(api.post("/api/runs", content=b"\xff\xfe", headers=headers), 400)
    assert_error(api.post("/api/runs", content=b"null", headers=headers), 400, "object")
    too_big = json.dumps({"task": "x" * 1_100_000}).encode()
    assert_error(api.post("/api/runs", content=too_big, headers=headers), 413, "1 MiB")
    plain = api.post("/api/runs", content=b'{"task": "t"}', headers={"Content-Type": "text/plain"})
    assert_error(plain, 415, "application/json")
    assert run_dirs(live) == before


# -- list, show, events -------------------------------------------------------------------------


def test_list_filters_and_pages_without_gaps_or_repeats(api: httpx.Client) -> None:
    parent = spawn(api)
    children = [spawn(api, parent_run_id=parent["id"])["id"] for _ in range(5)]
    assert control(api, children[0], "pause").status_code == 200
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"parent_run_id": parent["id"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/runs", params=params).json()
        seen += [run["id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(children))  # newest first
    paused = api.get(
        "/api/runs", params={"parent_run_id": parent["id"], "state": ["paused", "cancelled"]}
    ).json()["runs"]
    assert [run["id"] for run in paused] == [children[0]]


@pytest.mark.parametrize(
    ("params", "needles"),
    [
        ({"limit": 0}, ("limit",)),
        ({"limit": 501}, ("limit",)),
        ({"limit": "ten"}, ("limit",)),
        ({"state": "sleeping"}, ("state", "sleeping")),
        ({"cursor": "not-a-cursor"}, ("cursor",)),
        ({"cursor": "YWJj"}, ("cursor",)),  # valid base64 of "abc", not a cursor
        ({"cursor": "x" * 1001}, ("cursor",)),
        ({"parent_run_id": "x" * 201}, ("parent_run_id",)),
        ({"states": "queued"}, ("states", "state")),  # a typo is an error, not ignored
    ],
)
def test_list_refuses_bad_query_parameters(
    api: httpx.Client, params: dict[str, Any], needles: tuple[str, ...]
) -> None:
    assert_error(api.get("/api/runs", params=params), 400, *needles)


def test_unknown_run_is_404_everywhere(api: httpx.Client) -> None:
    for response in (
        api.get("/api/runs/run_nope"),
        api.get("/api/runs/run_nope/events"),
        api.get("/api/runs/run_nope/control"),
        control(api, "run_nope", "pause"),
        api.post("/api/runs/run_nope/questions", json={"prompt": "?"}),
    ):
        assert_error(response, 404, "run_nope")


def test_events_page_in_seq_order(api: httpx.Client) -> None:
    run = spawn(api)
    assert control(api, run["id"], "pause", reason="hold on").status_code == 200
    assert control(api, run["id"], "resume").status_code == 200
    page = api.get(f"/api/runs/{run['id']}/events").json()
    seqs = [event["seq"] for event in page["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert page["last_seq"] == seqs[-1] == page["next_after"]
    types = [event["type"] for event in page["events"]]
    assert types[0] == "run_queued"
    assert "run_paused" in types
    assert "run_resumed" in types
    second = api.get(f"/api/runs/{run['id']}/events", params={"after": 1, "limit": 1}).json()
    assert [event["seq"] for event in second["events"]] == [2]
    assert second["next_after"] == 2
    beyond = api.get(f"/api/runs/{run['id']}/events", params={"after": 10_000}).json()
    assert beyond["events"] == []
    assert beyond["next_after"] == 10_000
    for params in ({"after": -1}, {"limit": 0}, {"limit": 1001}, {"after": "x"}, {"since": 1}):
        assert_error(api.get(f"/api/runs/{run['id']}/events", params=params), 400)


# -- control ----------------------------------------------------------------------------------


def read_control_json(live: LiveRunner, run_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((live.home.run_dir(run_id) / "control.json").read_text())
    return doc


def test_pause_resume_cancel_a_queued_run(live: LiveRunner, api: httpx.Client) -> None:
    run = spawn(api)
    rid = run["id"]
    paused = api.post(
        f"/api/runs/{rid}/control",
        json={"action": "pause", "request_id": "req-pause-1", "reason": "lunch"},
    )
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["state"] == "paused"
    assert body["applied"] is True
    assert body["changed"] is True
    mirror = read_control_json(live, rid)
    assert set(mirror) == {"run_id", "control_seq", "latest_action", "feature_toggles"}
    assert mirror["control_seq"] == 1
    latest = mirror["latest_action"]
    assert set(latest) == {"request_id", "requested_by", "requested_at", "action", "reason"}
    assert latest["request_id"] == "req-pause-1"
    assert latest["requested_by"] == "cli"
    assert latest["action"] == "pause"
    assert latest["reason"] == "lunch"
    assert body["control"] == mirror
    assert api.get(f"/api/runs/{rid}/control").json() == mirror

    # The same request again: the first outcome, nothing written.
    again = api.post(
        f"/api/runs/{rid}/control",
        json={"action": "pause", "request_id": "req-pause-1", "reason": "lunch"},
    )
    assert again.status_code == 200
    assert again.json()["applied"] is False
    assert read_control_json(live, rid)["control_seq"] == 1
    # The same request id for another action is a conflict.
    reused = api.post(
        f"/api/runs/{rid}/control", json={"action": "resume", "request_id": "req-pause-1"}
    )
    assert_error(reused, 409, "req-pause-1")

    resumed = control(api, rid, "resume")
    assert resumed.json()["state"] == "queued"
    with live.client(**{"X-Codex-Client": "tui"}) as tui:
        cancelled = control(tui, rid, "cancel", reason="not needed")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    mirror = read_control_json(live, rid)
    assert mirror["control_seq"] == 3
    assert mirror["latest_action"]["requested_by"] == "tui"
    assert mirror["latest_action"]["action"] == "cancel"
    assert api.get(f"/api/runs/{rid}").json()["state"] == "cancelled"
    # Ended: nothing more to do, and nothing is written.
    assert_error(control(api, rid, "pause"), 409, "cancelled")
    assert read_control_json(live, rid)["control_seq"] == 3
    events = api.get(f"/api/runs/{rid}/events").json()["events"]
    cancel = [event for event in events if event["type"] == "cancel_requested"]
    assert cancel[0]["actor"] == "tui"
    assert cancel[0]["payload"]["reason"] == "not needed"


def test_concurrent_repeats_of_one_request_apply_once(live: LiveRunner, api: httpx.Client) -> None:
    run = spawn(api)
    body = {"action": "pause", "request_id": "same-request", "reason": "race"}

    def send(_: int) -> dict[str, Any]:
        with live.client() as client:
            response = client.post(f"/api/runs/{run['id']}/control", json=body)
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            return result

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(8)))
    assert sum(result["applied"] for result in results) == 1
    assert {result["state"] for result in results} == {"paused"}
    assert read_control_json(live, run["id"])["control_seq"] == 1
    events = api.get(f"/api/runs/{run['id']}/events").json()["events"]
    assert [event["type"] for event in events].count("run_paused") == 1


def test_control_from_a_browser_is_recorded_as_ui(live: LiveRunner, api: httpx.Client) -> None:
    run = spawn(api)
    browser = live.browser()
    try:
        response = control(browser, run["id"], "pause")
        assert response.status_code == 200, response.text
    finally:
        browser.close()
    assert read_control_json(live, run["id"])["latest_action"]["requested_by"] == "ui"


def test_pause_by_the_mcp_client_needs_no_confirmation(live: LiveRunner, api: httpx.Client) -> None:
    run = spawn(api)
    with live.client(**{"X-Codex-Client": "mcp"}) as mcp:
        response = control(mcp, run["id"], "pause")
    assert response.status_code == 200
    assert response.json()["state"] == "paused"
    assert read_control_json(live, run["id"])["latest_action"]["requested_by"] == "mcp"


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"action": "stop", "request_id": "r1"}, ("action",)),
        ({"request_id": "r1"}, ("action",)),
        ({"action": "pause"}, ("request_id",)),
        ({"action": "pause", "request_id": ""}, ("request_id",)),
        ({"action": "pause", "request_id": "has space"}, ("request_id",)),
        ({"action": "pause", "request_id": "r" * 201}, ("request_id",)),
        ({"action": "pause", "request_id": 7}, ("request_id",)),
        ({"action": "pause", "request_id": "r1", "reason": "x" * 2001}, ("reason",)),
        ({"action": "pause", "request_id": "r1", "why": "x"}, ("why",)),
    ],
)
def test_control_refuses_bad_input_and_writes_nothing(
    live: LiveRunner, api: httpx.Client, body: dict[str, Any], needles: tuple[str, ...]
) -> None:
    run = spawn(api)
    before = api.get(f"/api/runs/{run['id']}/events").json()["last_seq"]
    assert_error(api.post(f"/api/runs/{run['id']}/control", json=body), 400, *needles)
    assert api.get(f"/api/runs/{run['id']}/control").json()["control_seq"] == 0
    assert api.get(f"/api/runs/{run['id']}/events").json()["last_seq"] == before
    assert api.get(f"/api/runs/{run['id']}").json()["state"] == "queued"
    assert not (live.home.run_dir(run["id"]) / "control.json").exists()


# -- settings, session --------------------------------------------------------------------------


def test_settings_show_config_with_sources(api: httpx.Client, tmp_path: Path) -> None:
    body = api.get("/api/settings").json()
    assert body["config"]["runner"]["mode"] == "prod"
    assert body["sources"]["runner.mode"] == "default"
    repo = tmp_path / "repo"
    (repo / ".codex").mkdir(parents=True)
    (repo / ".codex" / "delegation.toml").write_text('[runner]\nallowed_modes = ["prod", "dev"]\n')
    with_repo = api.get("/api/settings", params={"repo": str(repo)}).json()
    assert with_repo["sources"]["runner.allowed_modes"] == "repo"
    a_file = tmp_path / "file"
    a_file.write_text("")
    for repo_param, needle in (
        ("relative", "absolute"),
        (str(a_file), str(a_file)),
        ("/no/such/dir", "/no/such/dir"),
    ):
        assert_error(api.get("/api/settings", params={"repo": repo_param}), 400, needle)
    assert_error(api.get("/api/settings", params={"repo": "x" * 4097}), 400, "repo")
    broken = tmp_path / "broken"
    (broken / ".codex").mkdir(parents=True)
    (broken / ".codex" / "delegation.toml").write_text("[runner\n")
    assert_error(api.get("/api/settings", params={"repo": str(broken)}), 400, "delegation.toml")


def test_session_says_who_calls(live: LiveRunner, api: httpx.Client) -> None:
    assert api.get("/api/session").json() == {"principal": "control", "csrf_token": None}
    run = spawn(api)
    with live.client(live.delegation_token(run["id"])) as delegate:
        assert delegate.get("/api/session").json() == {"principal": "delegate", "csrf_token": None}


def test_the_control_token_never_appears_in_a_response(live: LiveRunner, api: httpx.Client) -> None:
    run = spawn(api)
    for path in (
        "/api/runs",
        f"/api/runs/{run['id']}",
        f"/api/runs/{run['id']}/events",
        f"/api/runs/{run['id']}/control",
        "/api/settings",
        "/api/session",
        "/schema/openapi.json",
    ):
        response = api.get(path)
        assert response.status_code == 200
        assert live.token not in response.text
