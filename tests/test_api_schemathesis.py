"""Schemathesis against the live runner's own OpenAPI document.

Every documented operation is fuzzed with valid (positive) and invalid (negative) requests,
authenticated with the control token, half of them aimed at real resources (a queued run,
a pending question, a pending confirmation) and half at generated ids, and every response
must:

* not be a 5xx (``not_a_server_error``);
* have a status the document lists for that operation (``status_code_conformance``);
* have a content type the document lists for that status (``content_type_conformance``);
* match the documented schema (``response_schema_conformance``);
* answer invalid data with a 4xx (``negative_data_rejection``).

Left out, on purpose: ``GET /api/events/stream`` and ``GET /api/runs/{run_id}/events/stream``.
Server-Sent Events never end, so validating a response (which reads it whole) would wait
forever; ``tests/test_api_auth_matrix.py`` checks their statuses from the headers alone.

Schemathesis' pytest integration (``from_fixture``) does not work with pytest 9 (it writes
``node._nodeid``), and the document only exists once a runner is up, so operations are
parametrized from the auth matrix's table (whose completeness against the live document is
checked below and in the matrix) and fuzzed with ``APIOperation.as_strategy`` under
Hypothesis directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import LiveRunner
from tests.test_api_auth_matrix import (
    EXPECTED,
    STREAMS,
    UNDOCUMENTED,
    documented_routes,
    quiet_runner,
)

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
OPERATIONS = sorted(set(EXPECTED) - UNDOCUMENTED - STREAMS)
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRunner]:
    # Long polls are capped at 200 ms, so a fuzzed wait_ms cannot stall the run.
    runner = quiet_runner(Path(tmp_path_factory.mktemp("fuzz")), "questions.max_wait_ms=200")
    try:
        yield runner
    finally:
        assert runner.stop() == 0


@pytest.fixture(scope="module")
def api_schema(live: LiveRunner) -> Any:
    loaded = schemathesis.openapi.from_url(
        f"{live.base_url}/schema/openapi.json",
        headers={"Authorization": f"Bearer {live.token}"},
        timeout=10,
    )
    loaded.config.update(base_url=live.base_url)
    # The bearer token is sent on every call; fuzzing the credential itself is the auth
    # matrix's job, and a random Authorization header would only ever get a 401.
    loaded.config.generation.update(with_security_parameters=False)
    # A body over the 1 MiB cap is refused before it is parsed: 413 is a rejection too.
    rejection = loaded.config.checks.negative_data_rejection
    loaded.config.checks.negative_data_rejection = type(rejection)(
        expected_statuses=[*rejection.expected_statuses, "413"]
    )
    return loaded


@pytest.fixture
def real_ids(live: LiveRunner) -> dict[str, str]:
    """Ids of live resources, so fuzzing reaches past the 404s: a queued run, a pending
    question of it, and a pending confirmation (a model's cancel) of another run."""
    with live.client() as api:
        run_id = api.post("/api/runs", json={"task": "fuzzed"}).json()["run"]["id"]
        question_id = api.post(f"/api/runs/{run_id}/questions", json={"prompt": "?"}).json()["id"]
        target = api.post("/api/runs", json={"task": "to cancel"}).json()["run"]["id"]
        confirmation = api.post(
            f"/api/runs/{target}/control",
            json={"action": "cancel", "request_id": uuid.uuid4().hex},
            headers={"X-Codex-Client": "mcp"},
        )
        assert confirmation.status_code == 202, confirmation.text
    return {
        "run_id": run_id,
        "question_id": question_id,
        "confirmation_id": confirmation.json()["confirmation_id"],
    }


def test_fuzzed_operations_are_every_documented_one_but_the_streams(live: LiveRunner) -> None:
    with live.client() as api:
        document = api.get("/schema/openapi.json").json()
    assert set(OPERATIONS) == documented_routes(document) - STREAMS


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=str)
def test_openapi_contract(
    api_schema: Any,
    live: LiveRunner,
    real_ids: dict[str, str],
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    fixed = {name: value for name, value in real_ids.items() if f"{{{name}}}" in path}
    strategy = operation.as_strategy(mode)
    if fixed:
        strategy = st.one_of(operation.as_strategy(mode, path_parameters=fixed), strategy)
    headers = {"Authorization": f"Bearer {live.token}"}
    seen: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,  # the per-request timeout below bounds each example
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)
        seen.append(response.status_code)

    try:
        fuzz()
    except Unsatisfiable:
        # e.g. GET /api/session takes no input at all, so no request can be made invalid.
        assert mode is GenerationMode.NEGATIVE, f"no valid request for {method} {path}"
        pytest.skip(f"nothing in {method} {path}'s inputs can be made invalid")
    assert seen, f"no request was sent for {method} {path} ({mode})"
