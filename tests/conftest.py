"""Shared fixtures: every test gets its own home on a real SQLite file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.home import Home
from app.localrunner import APP, ROOT, LiveRunner, start_runner, subprocess_env
from db.store import Store, open_store

__all__ = ["APP", "ROOT", "LiveRunner", "start_runner", "subprocess_env"]


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep tests away from the developer's real home, config and overrides."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.delenv("CODEX_DELEGATION_HOME", raising=False)
    monkeypatch.delenv("CODEX_DELEGATION_CONFIG_OVERRIDES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "data"))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def store(home: Home) -> Iterator[Store]:
    opened = open_store(home)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    """The pinned codex binary (tools/codex); missing: a skip outside CI, a failure in CI."""
    import subprocess

    from tests.fakes.codex_home import CODEX_BIN, CODEX_VERSION, find_codex

    found = find_codex()
    message = f"codex {CODEX_VERSION} is not installed at {CODEX_BIN}: run `make bootstrap`"
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    version = subprocess.run(
        [str(found), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert version.stdout.strip() == f"codex-cli {CODEX_VERSION}", version
    return found


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[LiveRunner]:
    """A live runner with fast sweeps and heartbeats, stopped (and checked) at teardown."""
    live = start_runner(
        Home(tmp_path / "runner-home"),
        CODEX_DELEGATION_CONFIG_OVERRIDES="runner.sweep_interval_s=1; ui.sse_heartbeat_s=0.5",
    )
    try:
        yield live
    finally:
        assert live.stop() == 0
