"""Spawning a delegate run: resolve its config (repo-capped), create it, issue its token."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.config import resolve_config
from app.control.errors import Unavailable
from app.control.tokens import issue_delegation_token
from app.files import write_private
from app.wire.events import Actor
from app.wire.runs import RunSummary
from db.eventlog import EventLog, Tx
from db.runs import create_run

TOKEN_FILE = "delegation_token"  # noqa: S105 - a file name, not a secret


class SpawnError(ValueError):
    """The spawn request cannot be honoured as given (HTTP 400); the message says why."""


class HomeNotWritable(Unavailable):
    """The runner cannot write the run's files (HTTP 503); nothing was created."""


def _check_repo_allowed(repo: Path | None, allowed_roots: list[str]) -> None:
    if repo is None:
        return
    roots = [Path(root) for root in allowed_roots]
    if not any(repo == root or repo.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots) or "none"
        raise SpawnError(
            f"repo {repo} is outside paths.allowed_roots ({shown}); add it to "
            "paths.allowed_roots in the repo's .codex/delegation.toml or the global config"
        )


def _check_codex_binary(binary: str) -> None:
    if shutil.which(binary) is None:
        raise SpawnError(
            f"the codex engine needs the Codex CLI, but {binary!r} was not found on PATH; "
            "install it (npm install -g @openai/codex) or set codex.binary to its path"
        )


def resolve_repo(repo: str | None) -> Path | None:
    """The repository root a run works in: an existing directory, symlinks resolved."""
    if repo is None:
        return None
    if "\x00" in repo:
        raise SpawnError("repo must not contain a NUL character")
    path = Path(repo).expanduser()
    if not path.is_absolute():
        raise SpawnError(f"repo must be an absolute path, got {repo!r}")
    resolved = path.resolve()
    if not resolved.is_dir():
        raise SpawnError(f"repo {repo!r} is not an existing directory")
    return resolved


def spawn_run(
    log: EventLog,
    *,
    task: str,
    actor: Actor,
    repo: str | None = None,
    parent_run_id: str | None = None,
    task_id: str | None = None,
    engine: str | None = None,
    mode: str | None = None,
    rlm_policy: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> RunSummary:
    """Create a queued run from a spawn request; raises SpawnError/ConfigError/UnknownRun.

    The explicit arguments win over the same keys in ``overrides``; every value passes the
    repo caps of the run's repository. When no engine is named, ``rlm.policy = always`` picks
    the RLM engine and ``never`` the codex engine (DESIGN §9).
    """
    repo_path = resolve_repo(repo)
    layered: dict[str, Any] = dict(overrides or {})
    for key, value in (
        ("delegate.engine", engine),
        ("delegate.mode", mode),
        ("rlm.policy", rlm_policy),
    ):
        if value is not None:
            layered[key] = value
    config = resolve_config(repo=repo_path, overrides=layered, env=env)
    if engine is None and "delegate.engine" not in layered:
        engine = "rlm" if config.get("rlm.policy") == "always" else "codex"
    else:
        engine = str(config.get("delegate.engine"))
    _check_repo_allowed(repo_path, config.get("paths.allowed_roots"))
    if engine == "codex":
        _check_codex_binary(str(config.get("codex.binary")))
    sources = {key: item.layer for key, item in config.provenance().items()}
    profile = str(config.get("delegate.mode"))

    def give_token(tx: Tx, run_id: str) -> None:
        # Inside the creating transaction: the run is never visible without its token.
        token = issue_delegation_token(log, run_id, profile=profile)
        write_private(log.home.run_dir(run_id) / TOKEN_FILE, token)

    try:
        run = create_run(
            log,
            task=task,
            engine=engine,
            actor=actor,
            repo=repo_path,
            parent_run_id=parent_run_id,
            task_id=task_id,
            config=config.as_dict(),
            config_sources=sources,
            on_create=give_token,
        )
    except OSError as error:
        raise HomeNotWritable(
            f"cannot create the run's files under {log.home.runs_dir}: "
            f"{error.strerror or error}; "
            "make the runner's home writable (or start it with another --home)"
        ) from None
    return run
