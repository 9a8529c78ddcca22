"""Where things live on disk (DESIGN §3): the home directory and each run's directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "CODEX_DELEGATION_HOME"


@dataclass(frozen=True)
class Home:
    """The runner's home: database, queue, run directories and endpoint files."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "app.db"

    @property
    def queue_db_path(self) -> Path:
        return self.root / "queue.db"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def endpoint_path(self) -> Path:
        return self.root / "control_endpoint.json"

    @property
    def auth_path(self) -> Path:
        return self.root / "control_auth.json"

    @property
    def lock_path(self) -> Path:
        return self.root / "runner.lock"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def events_mirror(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "events.jsonl"

    def ensure(self) -> Home:
        """Create the home and ``runs/`` (private to the user) and return self."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runs_dir.mkdir(exist_ok=True, mode=0o700)
        return self


def resolve_home(cli_home: str | os.PathLike[str] | None = None) -> Home:
    """Pick the home: ``$CODEX_DELEGATION_HOME``, else ``--home``, else the XDG data dir."""
    env_home = os.environ.get(HOME_ENV)
    if env_home:
        return Home(Path(env_home).expanduser().absolute())
    if cli_home:
        return Home(Path(cli_home).expanduser().absolute())
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Home(Path(xdg).expanduser().absolute() / "codex-delegation")
