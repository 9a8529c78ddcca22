"""The auth matrix: every route of the OpenAPI document by every kind of caller, exact statuses.

The table below is the contract. A route that appears in ``/schema/openapi.json`` but not in
:data:`TABLE` fails :func:`test_every_documented_route_is_in_the_table`: that is how a
new route added without thinking about its guard is caught (and the guard itself refuses a
handler whose ``opt`` names nobody, so such a route also answers 403 to everyone).

Status policy the table encodes (DESIGN §7):

* foreign ``Host`` → 403 and foreign ``Origin`` → 403 on every route, public ones included;
* no credential or a well-formed but unknown bearer → 401 on every route but the two public
  ones (``GET /api/health``, ``GET /ui/login``), which ignore credentials altogether;
* a session without ``X-CSRF-Token`` → 403 on every non-GET route (reads need no CSRF);
* a ``text/plain`` body → 415 on every non-GET route (GET routes answer as usual);
* a delegation token → its own run's reads, questions and ``/api/session`` only; 403 elsewhere
  (including every other run's resources);
* the MCP client (bearer + ``X-Codex-Client: mcp``) is a control client except where a
  person is needed: it may not approve or deny confirmations, nor mint UI login codes (403).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.home import Home
from tests.conftest import LiveRunner, start_runner

#: Every kind of caller the matrix tries, in the column order of :data:`EXPECTED`.
VARIANTS = (
    "none",  # no credential at all
    "wrong_token",  # a well-formed bearer this runner never issued
    "bearer",  # the control token (the CLI)
    "session_no_csrf",  # the browser's session cookie, no X-CSRF-Token
    "session_csrf",  # the browser's session cookie and X-CSRF-Token
    "foreign_host",  # valid bearer, Host: evil.example:<port>
    "foreign_origin",  # valid bearer, Origin: http://evil.example
    "text_plain",  # valid bearer, Content-Type: text/plain on a non-GET
    "mcp",  # valid bearer with X-Codex-Client: mcp (a model's requests)
    "delegate",  # the delegation token of the run the resource belongs to
    "delegate_other",  # the delegation token of an unrelated run
)

#: The expected status of every (method, path) for every variant, one row a route. Columns, in
#: VARIANTS order: none, wrong_token, bearer, session_no_csrf, session_csrf, foreign_host,
#: foreign_origin, text_plain, mcp, delegate, delegate_other.
TABLE = """
                                                       non wro bea sno scs hst org txt mcp dlg dlo
GET  /api/health                                       200 200 200 200 200 403 403 200 200 200 200
GET  /ui/login                                         303 303 303 303 303 403 403 303 303 303 303
GET  /ui                                               401 401 200 200 200 403 403 200 200 403 403
GET  /schema/openapi.json                              401 401 200 200 200 403 403 200 200 403 403
GET  /api/session                                      401 401 200 200 200 403 403 200 200 200 200
GET  /api/settings                                     401 401 200 200 200 403 403 200 200 403 403
POST /api/ui/login-codes                               401 401 201 403 403 403 403 415 403 403 403
GET  /api/runs                                         401 401 200 200 200 403 403 200 200 403 403
POST /api/runs                                         401 401 201 403 201 403 403 415 201 403 403
GET  /api/runs/{run_id}                                401 401 200 200 200 403 403 200 200 200 403
GET  /api/runs/{run_id}/events                         401 401 200 200 200 403 403 200 200 200 403
GET  /api/runs/{run_id}/events/stream                  401 401 200 200 200 403 403 200 200 200 403
GET  /api/events/stream                                401 401 200 200 200 403 403 200 200 403 403
GET  /api/runs/{run_id}/control                        401 401 200 200 200 403 403 200 200 200 403
POST /api/runs/{run_id}/control                        401 401 200 403 200 403 403 415 200 403 403
POST /api/runs/{run_id}/questions                      401 401 201 403 201 403 403 415 201 201 403
GET  /api/questions                                    401 401 200 200 200 403 403 200 200 403 403
GET  /api/questions/{question_id}                      401 401 200 200 200 403 403 200 200 200 403
POST /api/questions/{question_id}/answer               401 401 200 403 200 403 403 415 200 403 403
POST /api/questions/{question_id}/dismiss              401 401 200 403 200 403 403 415 200 403 403
GET  /api/confirmations                                401 401 200 200 200 403 403 200 200 403 403
POST /api/confirmations/{confirmation_id}/approve      401 401 200 403 200 403 403 415 403 403 403
POST /api/confirmations/{confirmation_id}/deny         401 401 200 403 200 403 403 415 403 403 403
POST /api/security-violations                          401 401 201 403 403 403 403 415 201 201 201
"""


def _parse_table(text: str) -> dict[tuple[str, str], tuple[int, ...]]:
    rows: dict[tuple[str, str], tuple[int, ...]] = {}
    for line in text.strip().splitlines()[1:]:
        method, path, *statuses = line.split()
        assert (method, path) not in rows, f"{method} {path} is in TABLE twice"
        rows[(method, path)] = tuple(int(status) for status in statuses)
    return rows


EXPECTED = _parse_table(TABLE)

#: Routes that need no credential (the login code of /ui/login is itself the credential).
PUBLIC = {("GET", "/api/health"), ("GET", "/ui/login")}
#: Served by Litestar's OpenAPI router, not listed in the document it serves.
UNDOCUMENTED = {("GET", "/schema/openapi.json")}
STREAMS = {("GET", "/api/runs/{run_id}/events/stream"), ("GET", "/api/events/stream")}
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


# -- the world the matrix acts on -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One concrete request: the path with real ids, its query and body, whose resource it is."""

    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    owner_run: str | None = None


@dataclass
class World:
    """A live runner with a few resources to point path parameters at."""

    live: LiveRunner
    api: httpx.Client
    session_cookie: str
    csrf_token: str
    run_id: str
    other_run_id: str
    question_id: str
    issued_tokens: list[str] = field(default_factory=list)

    def spawn(self, task: str = "matrix run") -> str:
        response = self.api.post("/api/runs", json={"task": task})
        assert response.status_code == 201, response.text
        run_id: str = response.json()["run"]["id"]
        self.issued_tokens.append(self.live.delegation_token(run_id))
        return run_id

    def question(self, run_id: str | None = None) -> str:
        response = self.api.post(
            f"/api/runs/{run_id or self.run_id}/questions", json={"prompt": "which way?"}
        )
        assert response.status_code == 201, response.text
        qid: str = response.json()["id"]
        return qid

    def confirmation(self) -> tuple[str, str]:
        """A fresh pending confirmation (a model's cancel) on a fresh run: (id, run id)."""
        run_id = self.spawn("to be cancelled")
        response = self.api.post(
            f"/api/runs/{run_id}/control",
            json={"action": "cancel", "request_id": uuid.uuid4().hex, "reason": "matrix"},
            headers={"X-Codex-Client": "mcp"},
        )
        assert response.status_code == 202, response.text
        return response.json()["confirmation_id"], run_id

    def login_code(self) -> str:
        response = self.api.post("/api/ui/login-codes", json={})
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        return url.split("code=", 1)[1]


def _control_body() -> dict[str, str]:
    return {"action": "pause", "request_id": uuid.uuid4().hex, "reason": "matrix"}


#: (method, path) -> how to build a request that would succeed for an allowed caller.
BUILDERS: dict[tuple[str, str], Callable[[World], Target]] = {
    ("GET", "/api/health"): lambda w: Target("/api/health"),
    ("GET", "/ui/login"): lambda w: Target("/ui/login", params={"code": w.login_code()}),
    ("GET", "/ui"): lambda w: Target("/ui"),
    ("GET", "/schema/openapi.json"): lambda w: Target("/schema/openapi.json"),
    ("GET", "/api/session"): lambda w: Target("/api/session", owner_run=w.run_id),
    ("GET", "/api/settings"): lambda w: Target("/api/settings"),
    ("POST", "/api/ui/login-codes"): lambda w: Target("/api/ui/login-codes", body={}),
    ("GET", "/api/runs"): lambda w: Target("/api/runs", params={"limit": "5"}),
    ("POST", "/api/runs"): lambda w: Target("/api/runs", body={"task": "spawned by the matrix"}),
    ("GET", "/api/runs/{run_id}"): lambda w: Target(f"/api/runs/{w.run_id}", owner_run=w.run_id),
    ("GET", "/api/runs/{run_id}/events"): lambda w: Target(
        f"/api/runs/{w.run_id}/events", params={"after": "0", "limit": "10"}, owner_run=w.run_id
    ),
    ("GET", "/api/runs/{run_id}/events/stream"): lambda w: Target(
        f"/api/runs/{w.run_id}/events/stream", owner_run=w.run_id
    ),
    ("GET", "/api/events/stream"): lambda w: Target("/api/events/stream"),
    ("GET", "/api/runs/{run_id}/control"): lambda w: Target(
        f"/api/runs/{w.run_id}/control", owner_run=w.run_id
    ),
    ("POST", "/api/runs/{run_id}/control"): lambda w: Target(
        f"/api/runs/{w.run_id}/control", body=_control_body(), owner_run=w.run_id
    ),
    ("POST", "/api/runs/{run_id}/questions"): lambda w: Target(
        f"/api/runs/{w.run_id}/questions", body={"prompt": "matrix?"}, owner_run=w.run_id
    ),
    ("GET", "/api/questions"): lambda w: Target("/api/questions", params={"limit": "5"}),
    ("GET", "/api/questions/{question_id}"): lambda w: Target(
        f"/api/questions/{w.question_id}", params={"wait_ms": "0"}, owner_run=w.run_id
    ),
    ("POST", "/api/questions/{question_id}/answer"): lambda w: Target(
        f"/api/questions/{w.question()}/answer", body={"answer": "left"}, owner_run=w.run_id
    ),
    ("POST", "/api/questions/{question_id}/dismiss"): lambda w: Target(
        f"/api/questions/{w.question()}/dismiss", body={"reason": "moot"}, owner_run=w.run_id
    ),
    ("GET", "/api/confirmations"): lambda w: Target("/api/confirmations"),
    ("POST", "/api/confirmations/{confirmation_id}/approve"): lambda w: _confirmation(w, "approve"),
    ("POST", "/api/confirmations/{confirmation_id}/deny"): lambda w: _confirmation(w, "deny"),
    ("POST", "/api/security-violations"): lambda w: Target(
        "/api/security-violations",
        body={"kind": "secret_argument", "tool": "delegate.spawn", "paths": ["$.token"]},
        owner_run=w.run_id,
    ),
}


def _confirmation(world: World, verb: str) -> Target:
    cid, run_id = world.confirmation()
    return Target(f"/api/confirmations/{cid}/{verb}", body={}, owner_run=run_id)


#: Holds the runner's only worker forever, so every other run stays queued until moved.
BLOCKER = {
    "task": "hold the only worker",
    "engine": "echo",
    "config": {"echo.steps": 1_000_000, "echo.step_ms": 1000},
}


def quiet_runner(base: Path, overrides: str = "") -> LiveRunner:
    """A live runner on a fully private environment (module fixtures run before the autouse
    per-test isolation, so it is passed explicitly) with one worker, which a never-ending
    ``echo`` run occupies: runs spawned afterwards stay ``queued`` until a test moves them."""
    live = start_runner(
        Home(base / "home"),
        CODEX_DELEGATION_HOME=str(base / "home"),
        XDG_CONFIG_HOME=str(base / "config"),
        XDG_DATA_HOME=str(base / "data"),
        CODEX_DELEGATION_CONFIG_OVERRIDES=(
            f"runner.sweep_interval_s=1; ui.sse_heartbeat_s=0.2; queue.workers=1; {overrides}"
        ).strip("; "),
    )
    try:
        with live.client() as api:
            response = api.post("/api/runs", json=BLOCKER)
            assert response.status_code == 201, response.text
            blocker = response.json()["run"]["id"]
            deadline = time.monotonic() + 10
            while api.get(f"/api/runs/{blocker}").json()["state"] != "running":
                assert time.monotonic() < deadline, "the blocker run never started"
                time.sleep(0.02)
    except BaseException:
        live.stop()
        raise
    return live


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = quiet_runner(tmp_path_factory.mktemp("matrix"))
    api = live.client()
    browser = live.browser()
    try:
        session_cookie = browser.cookies["cdp_session"]
        csrf = str(browser.headers["X-CSRF-Token"])
        world = World(
            live=live,
            api=api,
            session_cookie=session_cookie,
            csrf_token=csrf,
            run_id="",
            other_run_id="",
            question_id="",
        )
        world.run_id = world.spawn("the matrix's run")
        world.other_run_id = world.spawn("somebody else's run")
        world.question_id = world.question()
        yield world
    finally:
        browser.close()
        api.close()
        assert live.stop() == 0


@pytest.fixture(scope="module")
def document(world: World) -> dict[str, Any]:
    response = world.api.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


# -- sending one variant ------------------------------------------------------------------------


def _headers(world: World, variant: str, method: str, target: Target) -> dict[str, str]:
    live = world.live
    bearer = {"Authorization": f"Bearer {live.token}"}
    headers: dict[str, str] = {}
    if method != "GET":
        headers["Content-Type"] = "application/json"
    if variant == "none":
        pass
    elif variant == "wrong_token":
        headers["Authorization"] = "Bearer cdp_" + uuid.uuid4().hex + uuid.uuid4().hex
    elif variant == "bearer":
        headers |= bearer
    elif variant == "session_no_csrf":
        headers["Cookie"] = f"cdp_session={world.session_cookie}"
    elif variant == "session_csrf":
        headers["Cookie"] = f"cdp_session={world.session_cookie}"
        headers["X-CSRF-Token"] = world.csrf_token
    elif variant == "foreign_host":
        headers |= bearer
        headers["Host"] = "evil.example:" + live.host.rsplit(":", 1)[1]
    elif variant == "foreign_origin":
        headers |= bearer
        headers["Origin"] = "http://evil.example"
    elif variant == "text_plain":
        headers |= bearer
        if method != "GET":
            headers["Content-Type"] = "text/plain"
    elif variant == "mcp":
        headers |= bearer
        headers["X-Codex-Client"] = "mcp"
    elif variant == "delegate":
        owner = target.owner_run or world.run_id
        headers["Authorization"] = f"Bearer {live.delegation_token(owner)}"
    elif variant == "delegate_other":
        headers["Authorization"] = f"Bearer {live.delegation_token(world.other_run_id)}"
    else:  # pragma: no cover - a typo in VARIANTS
        raise AssertionError(variant)
    return headers


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    text: str


def send(world: World, variant: str, method: str, target: Target) -> Answer:
    """Send one request as ``variant``; streams are read only up to their headers."""
    headers = _headers(world, variant, method, target)
    content = None if target.body is None else json.dumps(target.body).encode()
    with httpx.Client(base_url=world.live.base_url, timeout=30) as client:
        request = client.build_request(
            method, target.path, params=target.params, headers=headers, content=content
        )
        response = client.send(request, stream=True)
        try:
            if response.status_code == 200 and response.headers.get("content-type", "").startswith(
                "text/event-stream"
            ):
                text = ""  # an endless stream: the status line and headers are the answer
            else:
                text = response.read().decode()
        finally:
            response.close()
    return Answer(response.status_code, response.headers, text)


def check_error_shape(answer: Answer, where: str) -> None:
    """Every error is JSON ``{error, detail}``, both non-empty strings, and never cached."""
    assert answer.headers.get("content-type", "").startswith("application/json"), where
    body = json.loads(answer.text)
    assert set(body) == {"error", "detail"}, f"{where}: {body}"
    assert isinstance(body["error"], str) and body["error"], where
    assert isinstance(body["detail"], str) and body["detail"], where
    assert "Traceback" not in answer.text, where


def check_no_secret(world: World, method: str, path: str, answer: Answer) -> None:
    """No response carries the control token or a delegation token; a login code only comes
    from the route that issues it, and a session id only in /ui/login's cookie."""
    blob = answer.text + "\n" + "\n".join(f"{k}: {v}" for k, v in answer.headers.multi_items())
    where = f"{method} {path}"
    assert world.live.token not in blob, f"{where} leaked the control token"
    for token in world.issued_tokens:
        assert token not in blob, f"{where} leaked a delegation token"
    if (method, path) != ("POST", "/api/ui/login-codes"):
        assert "cdpl_" not in blob, f"{where} leaked a login code"
    if (method, path) != ("GET", "/ui/login"):
        assert "cdps_" not in blob, f"{where} leaked a session id"


# -- the tests ----------------------------------------------------------------------------------


def test_every_documented_route_is_in_the_table(document: dict[str, Any]) -> None:
    documented = documented_routes(document)
    missing = sorted(documented - set(EXPECTED))
    assert not missing, (
        f"routes in /schema/openapi.json with no row in TABLE: {missing}. Add each to "
        "TABLE (and BUILDERS) in tests/test_api_auth_matrix.py with the status every kind "
        "of caller must get; give the handler an access(...) opt if it has none."
    )
    stale = sorted(set(EXPECTED) - documented - UNDOCUMENTED)
    assert not stale, f"TABLE rows for routes the API no longer documents: {stale}"
    assert set(BUILDERS) == set(EXPECTED)
    assert all(len(row) == len(VARIANTS) for row in EXPECTED.values())


def test_every_non_public_route_answers_401_without_a_credential(
    world: World, document: dict[str, Any]
) -> None:
    """Walks the document itself (not the table), so a brand-new route is covered too."""
    for method, path in sorted(documented_routes(document) | UNDOCUMENTED):
        if (method, path) in PUBLIC:
            continue
        concrete = (
            path.replace("{run_id}", world.run_id)
            .replace("{question_id}", world.question_id)
            .replace("{confirmation_id}", "cf_unknown")
        )
        target = Target(concrete, body={} if method != "GET" else None)
        for variant in ("none", "wrong_token"):
            answer = send(world, variant, method, target)
            assert answer.status == 401, f"{variant} {method} {path}: {answer.status}"
            check_error_shape(answer, f"{variant} {method} {path}")
            assert answer.headers.get("www-authenticate", "").startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED), ids=str)
def test_auth_matrix(world: World, method: str, path: str) -> None:
    expected = dict(zip(VARIANTS, EXPECTED[(method, path)], strict=True))
    mismatches = []
    for variant in VARIANTS:
        target = BUILDERS[(method, path)](world)
        answer = send(world, variant, method, target)
        where = f"{variant} {method} {target.path}"
        if answer.status != expected[variant]:
            mismatches.append(f"{where}: expected {expected[variant]}, got {answer.status}")
            continue
        if answer.status >= 400:
            check_error_shape(answer, where)
        check_no_secret(world, method, path, answer)
        for name in ("x-content-type-options", "x-frame-options"):
            assert name in answer.headers, f"{where}: security header {name} missing"
    assert not mismatches, "\n".join(mismatches)


def test_foreign_host_and_origin_errors_say_why(world: World) -> None:
    target = Target("/api/health")
    answer = send(world, "foreign_host", "GET", target)
    assert json.loads(answer.text)["error"] == "host_not_allowed"
    answer = send(world, "foreign_origin", "GET", target)
    assert json.loads(answer.text)["error"] == "origin_not_allowed"
    # A same-origin Origin (what a browser sends on the runner's own page) is fine.
    with world.live.client(Origin=world.live.base_url) as api:
        assert api.get("/api/runs").status_code == 200
        assert api.post("/api/runs", json={"task": "same origin"}).status_code == 201


def test_unknown_paths_are_guarded_then_json_404(world: World) -> None:
    for path in ("/api/nope", "/schema/swagger", "/ui/nope", "/"):
        anonymous = send(world, "none", "GET", Target(path))
        assert anonymous.status == 401, path
        known = send(world, "bearer", "GET", Target(path))
        assert known.status == 404, f"{path}: {known.status}"
        check_error_shape(known, path)


def test_wrong_method_is_a_json_405(world: World) -> None:
    answer = send(world, "bearer", "DELETE", Target(f"/api/runs/{world.run_id}", body={}))
    assert answer.status == 405
    check_error_shape(answer, "DELETE /api/runs/{id}")


def test_who_may_call_is_decided_before_the_input_is_read(world: World) -> None:
    """A caller without the right learns nothing about what input a route accepts."""
    bad = Target("/api/runs", params={"bogus": "1"}, body={"nonsense": True})
    assert send(world, "none", "POST", bad).status == 401
    assert send(world, "delegate", "POST", bad).status == 403
    assert send(world, "delegate", "GET", bad).status == 403
    assert send(world, "bearer", "POST", bad).status == 400


def test_options_is_guarded_then_a_json_405(world: World) -> None:
    assert send(world, "none", "OPTIONS", Target("/api/runs")).status == 401
    assert send(world, "foreign_host", "OPTIONS", Target("/api/runs")).status == 403
    answer = send(world, "bearer", "OPTIONS", Target("/api/runs"))
    assert answer.status == 405
    check_error_shape(answer, "OPTIONS /api/runs")
    assert "openapi.json" in json.loads(answer.text)["detail"]


def test_unknown_client_header_and_malformed_authorization_are_401(world: World) -> None:
    with world.live.client(**{"X-Codex-Client": "robot"}) as api:
        response = api.get("/api/runs")
    assert response.status_code == 401
    assert "robot" in response.json()["detail"]
    for value in ("Basic abc", "Bearer", "Token abc", world.live.token):
        response = httpx.get(
            f"{world.live.base_url}/api/runs", headers={"Authorization": value}, timeout=10
        )
        assert response.status_code == 401, value
        assert world.live.token not in response.text


def test_non_ascii_header_values_are_refused_not_crashed_on(world: World) -> None:
    """Header values are bytes; none may turn the security layer into a 500."""
    base = world.live.base_url
    cookie = f"cdp_session={world.session_cookie}"
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("POST", {"Cookie": cookie, "X-CSRF-Token": b"\xff\xfe"}, 403),
        ("GET", {"Authorization": b"Bearer \xe9\xe9"}, 401),
        ("GET", {"Cookie": b"cdp_session=\xe9"}, 401),
        ("GET", {"Host": b"\xe9"}, 403),
        ("GET", {"Origin": b"http://\xe9", "Authorization": f"Bearer {world.live.token}"}, 403),
        ("GET", {"Authorization": f"Bearer {world.live.token}", "X-Codex-Client": b"\xe9"}, 401),
    ]
    for method, headers, status in cases:
        response = httpx.request(
            method,
            f"{base}/api/runs",
            headers={"Content-Type": "application/json", **headers},
            content=b'{"task": "x"}' if method == "POST" else None,
            timeout=10,
        )
        assert response.status_code == status, (headers, response.text)
        assert set(response.json()) == {"error", "detail"}


def test_session_with_a_stale_cookie_is_401(world: World) -> None:
    response = httpx.get(
        f"{world.live.base_url}/api/runs",
        headers={"Cookie": "cdp_session=cdps_not-a-session"},
        timeout=10,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "session_expired"


def test_login_code_is_single_use(world: World) -> None:
    code = world.login_code()
    first = send(world, "none", "GET", Target("/ui/login", params={"code": code}))
    assert first.status == 303
    again = send(world, "none", "GET", Target("/ui/login", params={"code": code}))
    assert again.status == 401
    check_error_shape(again, "reused login code")
    missing = send(world, "none", "GET", Target("/ui/login"))
    assert missing.status == 400
    check_error_shape(missing, "login without code")
