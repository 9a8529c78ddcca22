"""Shared fixtures: every test gets its own home on a real SQLite file."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.home import Home
from db.store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
APP = str(Path(sys.executable).with_name("app"))


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


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: the test's env plus the project on sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env
