"""The ``app`` console script, run as a real subprocess."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.cli import PENDING_VERBS
from tests.conftest import APP, subprocess_env


def run_app(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APP, *args],
        check=False,
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=60,
    )


def test_help_lists_every_verb() -> None:
    result = run_app("--help")
    assert result.returncode == 0
    for verb in (
        "desktop",
        "serve",
        "tui",
        "mcp",
        "worker",
        "runs",
        "spawn",
        "config",
        "db",
        "sandbox",
        "install-codex",
        "demo",
    ):
        assert verb in result.stdout


@pytest.mark.parametrize("verb", sorted(PENDING_VERBS))
def test_pending_verbs_say_so_and_fail(verb: str, tmp_path: Path) -> None:
    result = run_app(*verb.split(), "--home", str(tmp_path))
    assert result.returncode == 3
    assert result.stdout == ""
    assert "not available yet" in result.stderr
    assert PENDING_VERBS[verb] in result.stderr


def test_bare_app_is_the_desktop_verb() -> None:
    result = run_app()
    assert result.returncode == 3
    assert "desktop" in result.stderr


def test_unknown_verb_is_a_usage_error() -> None:
    result = run_app("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_db_migrate_and_status_with_home_after_the_verb(tmp_path: Path) -> None:
    home = tmp_path / "h"
    missing = run_app("db", "status", "--home", str(home))
    assert missing.returncode == 1 and "app db migrate" in missing.stdout
    first = run_app("db", "migrate", "--home", str(home))
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    again = run_app("db", "migrate", "--home", str(home))
    assert "nothing to apply" in again.stdout
    status = run_app("db", "status", "--home", str(home))
    assert status.returncode == 0
    assert status.stdout.startswith("0001_initial  applied ")


def test_home_env_var_wins_over_the_flag(tmp_path: Path) -> None:
    result = run_app(
        "db",
        "migrate",
        "--home",
        str(tmp_path / "flag"),
        CODEX_DELEGATION_HOME=str(tmp_path / "env"),
    )
    assert result.returncode == 0
    assert (tmp_path / "env" / "app.db").exists()
    assert not (tmp_path / "flag").exists()


def test_db_reconcile(tmp_path: Path) -> None:
    assert run_app("db", "migrate", "--home", str(tmp_path)).returncode == 0
    result = run_app("db", "reconcile", "--verify", "--home", str(tmp_path))
    assert result.returncode == 0
    assert "checked 0 runs; repaired 0" in result.stdout


def start_serve(home: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [APP, "serve", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Ctrl-C" in line or not line:
            break
    assert f"home: {home}" in "".join(lines)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    home = tmp_path / "home"
    proc = start_serve(home)
    assert (home / "app.db").exists()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "runner stopped" in out
    assert "Traceback" not in err


def test_second_runner_on_the_same_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_serve(home)
    try:
        second = run_app("serve", "--home", str(home))
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr
        assert "already owns" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    # Once the first is gone (even by SIGKILL) the home can be taken over.
    third = start_serve(home)
    third.kill()
    third.communicate(timeout=30)
    fourth = start_serve(home)
    fourth.send_signal(signal.SIGINT)
    fourth.communicate(timeout=30)
    assert fourth.returncode == 0
