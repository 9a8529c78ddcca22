"""``app install-codex``: register the delegation server with Codex and install its skill.

Two files under Codex's home (``$CODEX_HOME``, default ``~/.codex``):

- ``config.toml`` gets ``[mcp_servers.delegation]`` running ``app mcp --profile full`` for
  this runner home, **disabled** (``enabled = false``): nothing changes for Codex sessions
  until one opts in with ``-c mcp_servers.delegation.enabled=true``. The file is edited with
  tomlkit, so every other table, key, comment and blank line stays as it was. Re-running is
  idempotent: the keys this command owns (``command``, ``args``) are brought up to date;
  keys a person may have changed (``enabled``, timeouts, ``env``...) are left alone once set.
- ``skills/delegation-first/SKILL.md`` holds the delegation-first guidance. Codex 0.169 loads
  every ``$CODEX_HOME/skills/<name>/SKILL.md`` (YAML front matter ``name`` and
  ``description``) and lists it to the model, which reads the body when the skill applies.

``--print`` shows the change (a unified diff per file) without writing anything.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.home import resolve_home

SERVER_KEY = "delegation"
SKILL_NAME = "delegation-first"
#: Where the guidance text ships inside the package.
SKILL_SOURCE = Path(__file__).resolve().parent.parent / "skills" / f"{SKILL_NAME}.md"
#: Keys set only when absent: a person's later choice wins over a re-install.
DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "startup_timeout_sec": 20,
    # delegate.status and delegate.question.poll may block for up to 30 s.
    "tool_timeout_sec": 120,
}
HEADER_COMMENTS = (
    "Codex Delegation Platform, written by `app install-codex`. Disabled by default;",
    "opt in per run with: codex -c mcp_servers.delegation.enabled=true",
)


class InstallError(Exception):
    """The existing Codex config cannot be edited safely; the message says why."""


@dataclass(frozen=True)
class FileChange:
    """One file's old and new text (old is None when the file does not exist yet)."""

    path: Path
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self) -> str:
        old_lines = (self.old or "").splitlines(keepends=True)
        new_lines = self.new.splitlines(keepends=True)
        return "".join(
            difflib.unified_diff(
                old_lines,
                new_lines,
                fromfile=str(self.path) if self.old is not None else "/dev/null",
                tofile=str(self.path),
            )
        )


def resolve_codex_home(explicit: Path | None = None) -> Path:
    """Codex's home: ``explicit``, else ``$CODEX_HOME``, else ``~/.codex``."""
    if explicit is not None:
        return explicit.expanduser().absolute()
    env = os.environ.get("CODEX_HOME", "").strip()
    return Path(env).expanduser().absolute() if env else Path.home() / ".codex"


def server_command(home_root: Path) -> tuple[str, list[str]]:
    """The command and arguments Codex runs: this installation's ``app mcp`` on ``home_root``."""
    script = Path(sys.executable).with_name("app")
    prefix = [] if script.is_file() else ["-m", "app.cli"]
    command = str(script) if script.is_file() else sys.executable
    return command, [*prefix, "mcp", "--profile", "full", "--home", str(home_root)]


def plan_config(text: str | None, *, command: str, args: list[str], path: Path) -> str:
    """The new ``config.toml`` text with the delegation server registered.

    A first install appends the table at the end, so every byte that was there stays where it
    was (tomlkit would otherwise slot it in next to the other ``mcp_servers`` tables, between
    a table and the comment that introduces the next one). A re-install edits the existing
    table in place.
    """
    import tomlkit
    from tomlkit.container import OutOfOrderTableProxy
    from tomlkit.exceptions import TOMLKitError
    from tomlkit.items import Table

    original = text or ""
    try:
        doc = tomlkit.parse(original)
    except TOMLKitError as error:
        raise InstallError(f"{path} is not valid TOML ({error}); fix it first") from None
    servers = doc.get("mcp_servers")
    # Out of order: [mcp_servers.*] tables split by other tables (our own append does that).
    if servers is not None and not isinstance(servers, Table | OutOfOrderTableProxy):
        raise InstallError(
            f"{path}: mcp_servers is not a table (an inline table?); "
            f"add [mcp_servers.{SERVER_KEY}] by hand or rewrite it as [mcp_servers.<name>] tables"
        )
    entry = None if servers is None else servers.get(SERVER_KEY)
    if entry is None:
        fresh = tomlkit.document()
        table = tomlkit.table()
        for line in HEADER_COMMENTS:
            table.add(tomlkit.comment(line))
        table["command"] = command
        table["args"] = args
        for key, value in DEFAULTS.items():
            table[key] = value
        wrapper = tomlkit.table(is_super_table=True)
        wrapper[SERVER_KEY] = table
        fresh["mcp_servers"] = wrapper
        separator = "" if not original.strip() else "\n" if original.endswith("\n") else "\n\n"
        rendered = original + separator + tomlkit.dumps(fresh)
        try:
            tomlkit.parse(rendered)
        except TOMLKitError as error:  # e.g. a dotted mcp_servers.delegation.x key elsewhere
            raise InstallError(f"{path}: cannot add [mcp_servers.{SERVER_KEY}]: {error}") from None
        return rendered
    if not isinstance(entry, Table):
        raise InstallError(
            f"{path}: mcp_servers.{SERVER_KEY} is not a table; remove it and run again"
        )
    if entry.get("command") != command:
        entry["command"] = command
    if list(entry.get("args", [])) != args:
        entry["args"] = args
    for key, value in DEFAULTS.items():
        if key not in entry:
            entry[key] = value
    rendered = tomlkit.dumps(doc)
    return rendered if rendered.endswith("\n") else rendered + "\n"


def plan(codex_dir: Path, home_root: Path) -> list[FileChange]:
    """What installing would change, file by file."""
    config_path = codex_dir / "config.toml"
    old_config = config_path.read_text() if config_path.exists() else None
    command, args = server_command(home_root)
    new_config = plan_config(old_config, command=command, args=args, path=config_path)
    skill_path = codex_dir / "skills" / SKILL_NAME / "SKILL.md"
    old_skill = skill_path.read_text() if skill_path.exists() else None
    return [
        FileChange(config_path, old_config, new_config),
        FileChange(skill_path, old_skill, SKILL_SOURCE.read_text()),
    ]


def write(change: FileChange) -> None:
    """Replace the file atomically, keeping an existing file's mode (new files are 0600:
    Codex's config may hold provider settings worth keeping private)."""
    change.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = change.path.stat().st_mode & 0o777 if change.path.exists() else 0o600
    tmp = change.path.with_name(f".{change.path.name}.install-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, change.new.encode())
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    tmp.replace(change.path)


def main(*, codex_home: Path | None, home: str | None, print_only: bool) -> int:
    """Install (or with ``print_only`` show) the registration and the skill; an exit code."""
    codex_dir = resolve_codex_home(codex_home)
    home_root = resolve_home(home).root
    try:
        changes = plan(codex_dir, home_root)
    except (InstallError, OSError) as error:
        print(f"app install-codex: {error}", file=sys.stderr)
        return 1
    pending = [change for change in changes if change.changed]
    if print_only:
        for change in pending:
            print(change.diff(), end="")
        if not pending:
            print("nothing to change: the delegation server and skill are installed")
        return 0
    for change in pending:
        try:
            write(change)
        except OSError as error:
            print(f"app install-codex: cannot write {change.path}: {error}", file=sys.stderr)
            return 1
    for change in changes:
        verb = "unchanged" if not change.changed else "created" if change.old is None else "updated"
        print(f"{verb}: {change.path}")
    print(
        f"The MCP server '{SERVER_KEY}' (runner home {home_root}) is registered disabled; "
        f"enable it for a session with: codex -c mcp_servers.{SERVER_KEY}.enabled=true"
    )
    return 0
