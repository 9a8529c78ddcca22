"""Shared by the config tests: write each layer's file under a tmp root, then resolve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import ENV_VAR, ResolvedConfig, resolve_config


def make(
    root: Path,
    *,
    global_toml: str | None = None,
    repo_toml: str | None = None,
    env_text: str | None = None,
    run: Any = (),
    with_repo: bool = True,
) -> ResolvedConfig:
    """Write the layer files under ``root`` and resolve; env is passed explicitly."""
    gpath = root / "xdg" / "codex-delegation" / "config.toml"
    if global_toml is not None:
        gpath.parent.mkdir(parents=True, exist_ok=True)
        gpath.write_text(global_toml)
    repo = root / "repo"
    repo.mkdir(exist_ok=True)
    if repo_toml is not None:
        (repo / ".codex").mkdir(exist_ok=True)
        (repo / ".codex" / "delegation.toml").write_text(repo_toml)
    env = {ENV_VAR: env_text} if env_text is not None else {}
    return resolve_config(
        repo=repo if with_repo else None, global_path=gpath, env=env, overrides=run
    )
