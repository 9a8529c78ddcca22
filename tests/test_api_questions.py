"""The question queue over real HTTP: delegates ask with their delegation token, people (or
the parent run) answer, long polls wake on the answer and are capped, auto-pause pauses and
resumes the asking run, and every bad input is a clear 4xx that writes nothing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveRunner
from tests.test_api_auth_matrix import quiet_runner

#: The runner's cap on a long poll, in ms (``questions.max_wait_ms``).
MAX_WAIT_MS = 1500


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRunner]:
    runner = quiet_runner(
        tmp_path_factory.mktemp("questions"), f"questions.max_wait_ms={MAX_WAIT_MS}"
    )
    try:
        yield runner
    finally:
        assert runner.stop() == 0


@pytest.fixture
def api(live: LiveRunner) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


def spawn(api: httpx.Client, **body: Any) -> str:
    response = api.post("/api/runs", json={"task": "asks questions", **body})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run"]["id"]
    return run_id


def ask(client: httpx.Client, run_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/api/runs/{run_id}/questions", json={"prompt": "left or right?", **body}
    )
    assert response.status_code == 201, response.text
    question: dict[str, Any] = response.json()
    return question


def delegate(live: LiveRunner, run_id: str) -> httpx.Client:
    return live.client(live.delegation_token(run_id))


def assert_error(response: httpx.Response, status: int, *needles: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()
    assert set(body) == {"error", "detail"}, body
    for needle in needles:
        assert needle in body["detail"], f"{needle!r} not in {body['detail']!r}"
    return body


def event_types(api: httpx.Client, run_id: str) -> list[str]:
    return [event["type"] for event in api.get(f"/api/runs/{run_id}/events").json()["events"]]


def test_a_delegate_asks_and_a_person_answers(live: LiveRunner, api: httpx.Client) -> None:
    run_id = spawn(api)
    with delegate(live, run_id) as child:
        question = ask(child, run_id, prompt="Which database?", ttl_s=600)
    assert question["status"] == "pending"
    assert question["run_id"] == run_id
    assert question["prompt"] == "Which database?"
    assert question["answer"] is None
    assert question["expires_at"] > question["created_at"]
    assert "question_queued" in event_types(api, run_id)
    queued = api.get(f"/api/runs/{run_id}/events").json()["events"][-1]
    assert queued["actor"] == "delegate"

    listed = api.get("/api/questions", params={"run_id": run_id, "status": "pending"}).json()
    assert [q["id"] for q in listed["questions"]] == [question["id"]]

    answered = api.post(f"/api/questions/{question['id']}/answer", json={"answer": "SQLite"})
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "answered"
    assert answered.json()["answer"] == "SQLite"
    assert answered.json()["resolved_by"] == "cli"
    with delegate(live, run_id) as child:
        seen = child.get(f"/api/questions/{question['id']}").json()
    assert seen["answer"] == "SQLite"
    assert "question_answered" in event_types(api, run_id)
    # Answered once: a second answer or a dismissal is a conflict that changes nothing.
    assert_error(
        api.post(f"/api/questions/{question['id']}/answer", json={"answer": "Postgres"}),
        409,
        "answered",
    )
    assert_error(api.post(f"/api/questions/{question['id']}/dismiss", json={}), 409, "answered")
    assert api.get(f"/api/questions/{question['id']}").json()["answer"] == "SQLite"


def test_dismiss_with_a_reason(live: LiveRunner, api: httpx.Client) -> None:
    run_id = spawn(api)
    question = ask(api, run_id)
    browser = live.browser()
    try:
        dismissed = browser.post(
            f"/api/questions/{question['id']}/dismiss", json={"reason": "moot now"}
        )
    finally:
        browser.close()
    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.json()["status"] == "dismissed"
    assert dismissed.json()["resolved_by"] == "ui"
    assert "question_dismissed" in event_types(api, run_id)


def test_long_poll_wakes_on_the_answer(api: httpx.Client, live: LiveRunner) -> None:
    run_id = spawn(api)
    question = ask(api, run_id)
    result: dict[str, Any] = {}

    def poll() -> None:
        with delegate(live, run_id) as child:
            started = time.monotonic()
            response = child.get(f"/api/questions/{question['id']}", params={"wait_ms": 60_000})
            result["elapsed"] = time.monotonic() - started
            result["body"] = response.json()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    assert api.post(f"/api/questions/{question['id']}/answer", json={"answer": "go"}).is_success
    thread.join(timeout=10)
    assert result["body"]["status"] == "answered"
    assert result["body"]["answer"] == "go"
    assert result["elapsed"] < MAX_WAIT_MS / 1000  # woken, not timed out


def test_long_poll_is_capped(api: httpx.Client) -> None:
    run_id = spawn(api)
    question = ask(api, run_id)
    started = time.monotonic()
    response = api.get(f"/api/questions/{question['id']}", params={"wait_ms": 3_600_000})
    elapsed = time.monotonic() - started
    assert response.json()["status"] == "pending"
    assert MAX_WAIT_MS / 1000 - 0.1 <= elapsed < MAX_WAIT_MS / 1000 + 2
    # A question that is no longer pending answers at once.
    api.post(f"/api/questions/{question['id']}/dismiss", json={})
    started = time.monotonic()
    api.get(f"/api/questions/{question['id']}", params={"wait_ms": 60_000})
    assert time.monotonic() - started < 1


def test_auto_pause_pauses_a_queued_run_until_answered(live: LiveRunner, api: httpx.Client) -> None:
    run_id = spawn(api)
    with delegate(live, run_id) as child:
        question = ask(child, run_id, auto_pause=True)
    assert question["auto_pause"] is True
    assert api.get(f"/api/runs/{run_id}").json()["state"] == "paused"
    latest = api.get(f"/api/runs/{run_id}/control").json()["latest_action"]
    assert latest["request_id"] == f"auto-pause:{question['id']}"
    assert latest["requested_by"] == "runner"
    api.post(f"/api/questions/{question['id']}/answer", json={"answer": "carry on"})
    assert api.get(f"/api/runs/{run_id}").json()["state"] == "queued"
    latest = api.get(f"/api/runs/{run_id}/control").json()["latest_action"]
    assert latest["request_id"] == f"auto-resume:{question['id']}"


def test_auto_pause_keeps_a_persons_pause(api: httpx.Client) -> None:
    run_id = spawn(api)
    question = ask(api, run_id, auto_pause=True)
    body = {"action": "pause", "request_id": uuid.uuid4().hex, "reason": "I said so"}
    assert api.post(f"/api/runs/{run_id}/control", json=body).status_code == 200
    api.post(f"/api/questions/{question['id']}/dismiss", json={})
    assert api.get(f"/api/runs/{run_id}").json()["state"] == "paused"


def test_parent_and_child_delegates(live: LiveRunner, api: httpx.Client) -> None:
    parent = spawn(api)
    child = spawn(api, parent_run_id=parent)
    stranger = spawn(api)
    with delegate(live, child) as as_child:
        question = ask(as_child, child)
        # A delegate asks only for its own run.
        assert_error(
            as_child.post(f"/api/runs/{parent}/questions", json={"prompt": "?"}), 403, "own run"
        )
        # It may not answer its own question: its parent (or a person) does.
        assert_error(
            as_child.post(f"/api/questions/{question['id']}/answer", json={"answer": "me"}),
            403,
        )
        # Delegates cannot see the inbox.
        assert_error(as_child.get("/api/questions"), 403)
    assert question["parent_run_id"] == parent
    assert "question_queued" in event_types(api, parent)
    with delegate(live, stranger) as as_stranger:
        assert_error(as_stranger.get(f"/api/questions/{question['id']}"), 403)
        assert_error(as_stranger.post(f"/api/questions/{question['id']}/dismiss", json={}), 403)
    with delegate(live, parent) as as_parent:
        assert as_parent.get(f"/api/questions/{question['id']}").status_code == 200
        answered = as_parent.post(f"/api/questions/{question['id']}/answer", json={"answer": "A"})
    assert answered.status_code == 200, answered.text
    assert answered.json()["resolved_by"] == "delegate"
    assert "question_answered" in event_types(api, parent)


def test_a_question_expires_and_its_fallback_applies(api: httpx.Client) -> None:
    run_id = spawn(api)
    question = ask(api, run_id, ttl_s=1, expiry_fallback="pause")
    deadline = time.monotonic() + 10
    while api.get(f"/api/questions/{question['id']}").json()["status"] == "pending":
        assert time.monotonic() < deadline, "the sweeper never expired the question"
        time.sleep(0.1)
    assert api.get(f"/api/questions/{question['id']}").json()["status"] == "expired"
    assert api.get(f"/api/runs/{run_id}").json()["state"] == "paused"
    assert_error(
        api.post(f"/api/questions/{question['id']}/answer", json={"answer": "late"}),
        409,
        "expired",
    )


def test_an_ended_run_cannot_ask(api: httpx.Client) -> None:
    run_id = spawn(api)
    body = {"action": "cancel", "request_id": uuid.uuid4().hex}
    assert api.post(f"/api/runs/{run_id}/control", json=body).status_code == 200
    assert_error(api.post(f"/api/runs/{run_id}/questions", json={"prompt": "?"}), 409, "cancelled")


ENQUEUE_REFUSALS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("no prompt", {}, ("prompt",)),
    ("empty prompt", {"prompt": ""}, ("prompt",)),
    ("blank prompt", {"prompt": "   "}, ("prompt",)),
    ("prompt too long", {"prompt": "x" * 100_001}, ("prompt",)),
    ("prompt over the queue's limit", {"prompt": "x" * 20_001}, ("prompt", "20000")),
    ("prompt not a string", {"prompt": ["a"]}, ("prompt",)),
    ("auto_pause not a bool", {"prompt": "?", "auto_pause": 1}, ("auto_pause", "bool")),
    ("ttl_s zero", {"prompt": "?", "ttl_s": 0}, ("ttl_s",)),
    ("ttl_s too long", {"prompt": "?", "ttl_s": 8 * 24 * 3600}, ("ttl_s",)),
    ("ttl_s a string", {"prompt": "?", "ttl_s": "60"}, ("ttl_s",)),
    ("fallback unknown", {"prompt": "?", "expiry_fallback": "panic"}, ("expiry_fallback",)),
    ("unknown field", {"prompt": "?", "urgent": True}, ("urgent",)),
]


@pytest.mark.parametrize(
    ("body", "needles"),
    [case[1:] for case in ENQUEUE_REFUSALS],
    ids=[case[0] for case in ENQUEUE_REFUSALS],
)
def test_enqueue_refuses_bad_input_and_writes_nothing(
    api: httpx.Client, body: Any, needles: tuple[str, ...]
) -> None:
    run_id = spawn(api)
    before = api.get(f"/api/runs/{run_id}/events").json()["last_seq"]
    assert_error(api.post(f"/api/runs/{run_id}/questions", json=body), 400, *needles)
    assert api.get(f"/api/runs/{run_id}/events").json()["last_seq"] == before
    assert api.get("/api/questions", params={"run_id": run_id}).json()["questions"] == []
    assert api.get(f"/api/runs/{run_id}").json()["state"] == "queued"


def test_answer_and_dismiss_refuse_bad_input(api: httpx.Client) -> None:
    run_id = spawn(api)
    qid = ask(api, run_id)["id"]
    for body, needle in (
        ({}, "answer"),
        ({"answer": ""}, "answer"),
        ({"answer": "  \n"}, "answer"),
        ({"answer": 42}, "answer"),
        ({"answer": "x" * 100_001}, "answer"),
        ({"answer": "ok", "by": "me"}, "by"),
    ):
        assert_error(api.post(f"/api/questions/{qid}/answer", json=body), 400, needle)
    for body, needle in (
        ({"reason": "x" * 2001}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"reason": 5}, "reason"),
        ({"why": "x"}, "why"),
    ):
        assert_error(api.post(f"/api/questions/{qid}/dismiss", json=body), 400, needle)
    assert_error(api.post(f"/api/questions/{qid}/dismiss"), 415, "application/json")
    empty = api.post(f"/api/questions/{qid}/dismiss", headers={"Content-Type": "application/json"})
    assert_error(empty, 400, "JSON body")
    assert api.get(f"/api/questions/{qid}").json()["status"] == "pending"


def test_unknown_questions_and_bad_queries(api: httpx.Client) -> None:
    assert_error(api.get("/api/questions/q_nope"), 404, "q_nope")
    assert_error(api.get("/api/questions/q_nope", params={"wait_ms": 100}), 404, "q_nope")
    assert_error(api.post("/api/questions/q_nope/answer", json={"answer": "a"}), 404, "q_nope")
    assert_error(api.post("/api/questions/q_nope/dismiss", json={}), 404, "q_nope")
    run_id = spawn(api)
    qid = ask(api, run_id)["id"]
    for params in ({"wait_ms": -1}, {"wait_ms": 3_600_001}, {"wait_ms": "soon"}, {"wait": 5}):
        assert_error(api.get(f"/api/questions/{qid}", params=params), 400)
    for params in (
        {"status": "open"},
        {"limit": 0},
        {"limit": 501},
        {"run_id": "x" * 201},
        {"state": "pending"},
    ):
        assert_error(api.get("/api/questions", params=params), 400)
