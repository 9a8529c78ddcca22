"""``app install-codex``: the Codex config entry (disabled, idempotent, the rest of the file
kept byte for byte) and the delegation-first skill."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from app.mcp import install
from tests.conftest import APP, subprocess_env

EXISTING = """\
# My Codex settings
model = "gpt-5"   # the default model

[mcp_servers.notes]
command = "notes-server"  # keep me
args = ["--fast"]

# trailing comment
[profiles.work]
approval_policy = "never"
"""

CODEX = shutil.which("codex") or "/tmp/codextest/node_modules/.bin/codex"


def run_install(codex_home: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APP, "install-codex", "--home", str(home), *extra],
        capture_output=True,
        text=True,
        env=subprocess_env(CODEX_HOME=str(codex_home)),
        timeout=60,
        check=False,
    )


def entry(codex_home: Path) -> dict[str, object]:
    config = tomllib.loads((codex_home / "config.toml").read_text())
    server: dict[str, object] = config["mcp_servers"]["delegation"]
    return server


def test_fresh_install_registers_a_disabled_server_and_the_skill(tmp_path: Path) -> None:
    codex_home, home = tmp_path / "codex", tmp_path / "runner-home"
    result = run_install(codex_home, home)
    assert result.returncode == 0, result.stderr
    assert f"created: {codex_home / 'config.toml'}" in result.stdout
    assert "codex -c mcp_servers.delegation.enabled=true" in result.stdout
    server = entry(codex_home)
    assert server["enabled"] is False
    assert server["command"] == APP
    assert server["args"] == ["mcp", "--profile", "full", "--home", str(home)]
    assert server["tool_timeout_sec"] == 120
    assert (codex_home / "config.toml").stat().st_mode & 0o777 == 0o600
    skill = (codex_home / "skills" / "delegation-first" / "SKILL.md").read_text()
    assert skill == install.SKILL_SOURCE.read_text()
    front = skill.split("---")[1]
    assert "name: delegation-first" in front and "description: " in front
    for tool in ("delegate.spawn", "delegate.status", "delegate.question.answer"):
        assert tool in skill


def test_existing_config_is_kept_and_reinstall_is_idempotent(tmp_path: Path) -> None:
    codex_home, home = tmp_path / "codex", tmp_path / "h"
    codex_home.mkdir()
    config = codex_home / "config.toml"
    config.write_text(EXISTING)
    config.chmod(0o640)
    assert run_install(codex_home, home).returncode == 0
    text = config.read_text()
    assert text.startswith(EXISTING), "everything that was there stays, comments included"
    assert "[mcp_servers.delegation]" in text[len(EXISTING) :]
    assert config.stat().st_mode & 0o777 == 0o640, "the file keeps its mode"
    parsed = tomllib.loads(text)
    assert parsed["mcp_servers"]["notes"] == {"command": "notes-server", "args": ["--fast"]}
    assert parsed["profiles"]["work"] == {"approval_policy": "never"}

    again = run_install(codex_home, home)
    assert again.returncode == 0
    assert f"unchanged: {config}" in again.stdout
    assert config.read_text() == text


def test_a_persons_choices_survive_a_reinstall(tmp_path: Path) -> None:
    codex_home, home = tmp_path / "codex", tmp_path / "h"
    assert install.main(codex_home=codex_home, home=str(home), print_only=False) == 0
    config = codex_home / "config.toml"
    edited = config.read_text().replace("enabled = false", "enabled = true")
    edited = edited.replace("tool_timeout_sec = 120", "tool_timeout_sec = 600  # slow repos")
    config.write_text(edited)
    # Installed from elsewhere: the command and args this command owns are updated.
    moved = tmp_path / "other-home"
    assert install.main(codex_home=codex_home, home=str(moved), print_only=False) == 0
    server = entry(codex_home)
    assert server["enabled"] is True
    assert server["tool_timeout_sec"] == 600
    assert "# slow repos" in config.read_text()
    assert server["args"] == ["mcp", "--profile", "full", "--home", str(moved)]


def test_print_shows_the_change_and_writes_nothing(tmp_path: Path) -> None:
    codex_home, home = tmp_path / "codex", tmp_path / "h"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(EXISTING)
    result = run_install(codex_home, home, "--print")
    assert result.returncode == 0, result.stderr
    assert f"+++ {codex_home / 'config.toml'}" in result.stdout
    assert "+[mcp_servers.delegation]" in result.stdout
    assert "+enabled = false" in result.stdout
    assert "+++ " + str(codex_home / "skills" / "delegation-first" / "SKILL.md") in result.stdout
    assert (codex_home / "config.toml").read_text() == EXISTING
    assert not (codex_home / "skills").exists()
    assert run_install(codex_home, home).returncode == 0
    assert "nothing to change" in run_install(codex_home, home, "--print").stdout


def test_codex_home_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "ch"))
    assert install.resolve_codex_home() == tmp_path / "ch"
    monkeypatch.delenv("CODEX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert install.resolve_codex_home() == tmp_path / ".codex"
    assert install.resolve_codex_home(tmp_path / "x") == tmp_path / "x"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model = \n", "is not valid TOML"),
        ('mcp_servers = { x = { command = "y" } }\n', "inline table"),
        ('[mcp_servers]\ndelegation = "oops"\n', "is not a table"),
    ],
)
def test_configs_it_cannot_edit_safely_are_left_alone(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codex_home = tmp_path / "codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(content)
    assert install.main(codex_home=codex_home, home=str(tmp_path), print_only=False) == 1
    assert message in capsys.readouterr().err
    assert (codex_home / "config.toml").read_text() == content
    assert not (codex_home / "skills").exists()


def test_without_the_console_script_it_runs_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3"))
    command, args = install.server_command(tmp_path / "h")
    assert command == str(tmp_path / "bin" / "python3")
    assert args[:3] == ["-m", "app.cli", "mcp"]


@pytest.mark.skipif(not os.access(CODEX, os.X_OK), reason="the codex CLI is not installed")
def test_codex_reads_the_entry_as_a_disabled_stdio_server(tmp_path: Path) -> None:
    codex_home, home = tmp_path / "codex", tmp_path / "h"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(EXISTING)
    assert run_install(codex_home, home).returncode == 0
    result = subprocess.run(
        [CODEX, "mcp", "get", "delegation", "--json"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODEX_HOME": str(codex_home)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["enabled"] is False
    assert described["transport"]["command"] == APP
    assert described["transport"]["args"][:3] == ["mcp", "--profile", "full"]
