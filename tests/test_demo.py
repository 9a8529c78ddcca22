"""`app demo`: a replayed RLM run over this repository, on a fresh home, with no Docker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobs.rlm.sandbox.local import LocalSandbox
from tests.conftest import APP, subprocess_env

pytestmark = pytest.mark.slow


def test_the_demo_shows_the_whole_product(tmp_path: Path) -> None:
    if not LocalSandbox.check().available:
        pytest.fail("the demo needs the local sandbox, which `make run`/`make test` install")
    result = subprocess.run(
        [APP, "demo", "--home", str(tmp_path / "demo-home")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in (
        "searched the context",
        "sub-call to a model",
        "the delegate asks",
        "run paused",
        "run resumed",
        "wrote artifacts/demo-report.md",
        "answer: ",
    ):
        assert step in out, out
    artifact = next((tmp_path / "demo-home" / "runs").glob("*/artifacts/demo-report.md"))
    assert "event types" in artifact.read_text()
    # The demo started a runner for itself and stopped it again.
    assert not (tmp_path / "demo-home" / "control_endpoint.json").exists()
