"""The runner answers over real HTTP; the fixture others build on works."""

from __future__ import annotations

import json
import stat

from tests.conftest import LiveRunner


def test_endpoint_files_are_private_and_removed_on_exit(runner: LiveRunner) -> None:
    for path in (runner.home.endpoint_path, runner.home.auth_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    endpoint = json.loads(runner.home.endpoint_path.read_text())
    assert endpoint["pid"] == runner.proc.pid
    assert set(endpoint) == {"base_url", "token_path", "pid", "started_at"}
    with runner.client() as api:
        assert api.get("/api/health").json()["status"] == "ok"
    assert runner.stop() == 0
    assert not runner.home.endpoint_path.exists()
    assert not runner.home.auth_path.exists()


def test_browser_session_round_trip(runner: LiveRunner) -> None:
    browser = runner.browser()
    try:
        assert browser.get("/api/session").json()["principal"] == "session"
        created = browser.post("/api/runs", json={"task": "from the browser"})
        assert created.status_code == 201, created.text
        del browser.headers["X-CSRF-Token"]
        refused = browser.post("/api/runs", json={"task": "no csrf"})
        assert refused.status_code == 403
        assert refused.json()["error"] == "csrf_failed"
    finally:
        browser.close()
