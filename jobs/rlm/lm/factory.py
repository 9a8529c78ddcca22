"""Build a run's root and sub LM clients from its effective config.

Keys read (nested config, as in ``manifest.json``):

``rlm.lm_client``
    ``openai`` | ``codex`` | ``replay``.
``rlm.root_model`` / ``rlm.sub_model``
    The root loop's model and the sub-calls' model; empty = the client's default. An empty
    ``sub_model`` means "the same as ``root_model``".
``rlm.replay_path``
    The trajectory for ``replay``. A relative path is looked up against the run's repo root
    (when the run has a repo), then the current working directory; the first existing file
    wins.
``lm.openai.base_url`` / ``lm.openai.api_key_env`` / ``lm.openai.wire_api``
    For ``openai`` (the key is read from the named environment variable).
``codex.binary`` and the other ``codex.*`` keys
    For ``codex``: the executable, and ``-c`` overrides passed through to it.

Real clients (``openai``, ``codex``) are wrapped in a :class:`RecordingClient` writing
``<run_dir>/trajectory.jsonl`` (unless ``record=False``), so any run can be replayed offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jobs.rlm.lm.base import LMClient, LMConfigError
from jobs.rlm.lm.codex import CodexModelClient
from jobs.rlm.lm.openai import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_BASE_URL,
    WIRE_APIS,
    OpenAIClient,
)
from jobs.rlm.lm.replay import RecordingClient, ReplayClient

LM_CLIENTS = ("openai", "codex", "replay")
#: Where a run's model calls are recorded, relative to its run directory.
TRAJECTORY_FILE = "trajectory.jsonl"


def _setting(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _text(config: Mapping[str, Any], dotted: str, default: str = "") -> str:
    value = _setting(config, dotted, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise LMConfigError(f"{dotted} must be a string, not {type(value).__name__}")
    return value.strip()


def resolve_replay_path(value: str, *, repo: Path | None = None, cwd: Path | None = None) -> Path:
    """``rlm.replay_path`` as an existing file: absolute, or relative to ``repo`` then ``cwd``."""
    if not value:
        raise LMConfigError(
            "rlm.lm_client = 'replay' needs rlm.replay_path: the trajectory file to replay "
            "(e.g. runs/<id>/trajectory.jsonl of a recorded run)"
        )
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        bases = [base for base in (repo, cwd or Path.cwd()) if base is not None]
        candidates = [base / path for base in bases]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise LMConfigError(f"rlm.replay_path {value!r} is not a file (looked at {tried})")


def make_clients(
    config: Mapping[str, Any],
    *,
    run_dir: Path,
    repo: Path | None = None,
    env: Mapping[str, str] | None = None,
    record: bool = True,
    replay_start: Mapping[str, int] | None = None,
    on_pgid: Callable[[int | None], None] | None = None,
) -> tuple[LMClient, LMClient]:
    """``(root, sub)`` clients for a run (see the module docstring for the keys).

    ``env`` is where API keys are read and what a codex child gets (default: this process's
    environment). ``replay_start`` (``{"root": n, "sub": m}``) continues a replay from
    checkpointed positions. ``on_pgid`` is told the process group of a running codex child.
    Raises :class:`LMConfigError` (a ``ValueError`` and an ``LMError``) on bad config.
    """
    kind = _text(config, "rlm.lm_client", "openai")
    root_model = _text(config, "rlm.root_model") or None
    sub_model = _text(config, "rlm.sub_model") or root_model
    environ = dict(os.environ if env is None else env)
    root: LMClient
    sub: LMClient
    if kind == "replay":
        path = resolve_replay_path(_text(config, "rlm.replay_path"), repo=repo)
        starts = dict(replay_start or {})
        root = ReplayClient(path, "root", start=starts.get("root", 0), default_model=root_model)
        sub = ReplayClient(path, "sub", start=starts.get("sub", 0), default_model=sub_model)
        return root, sub
    if kind == "openai":
        wire_api = _text(config, "lm.openai.wire_api", "responses")
        if wire_api not in WIRE_APIS:
            raise LMConfigError(
                f"lm.openai.wire_api must be one of {', '.join(WIRE_APIS)}, not {wire_api!r}"
            )
        base_url = _text(config, "lm.openai.base_url", DEFAULT_BASE_URL) or DEFAULT_BASE_URL
        key_env = _text(config, "lm.openai.api_key_env", DEFAULT_API_KEY_ENV)
        root = OpenAIClient.from_env(
            base_url,
            key_env,
            environ=environ,
            wire_api="chat" if wire_api == "chat" else "responses",
            default_model=root_model,
        )
        sub = OpenAIClient.from_env(
            base_url,
            key_env,
            environ=environ,
            wire_api="chat" if wire_api == "chat" else "responses",
            default_model=sub_model,
        )
    elif kind == "codex":
        binary = _text(config, "codex.binary", "codex") or "codex"
        passthrough = dict(_setting(config, "codex", {}) or {})
        passthrough.pop("binary", None)
        logs = run_dir / "logs"
        root = CodexModelClient(
            binary,
            env=environ,
            extra_config=passthrough,
            default_model=root_model,
            on_pgid=on_pgid,
            stderr_dir=logs,
            log_name="codex-lm-root",
        )
        sub = CodexModelClient(
            binary,
            env=environ,
            extra_config=passthrough,
            default_model=sub_model,
            on_pgid=on_pgid,
            stderr_dir=logs,
            log_name="codex-lm-sub",
        )
    else:
        raise LMConfigError(f"rlm.lm_client must be one of {', '.join(LM_CLIENTS)}, not {kind!r}")
    if record:
        trajectory = run_dir / TRAJECTORY_FILE
        return RecordingClient(root, trajectory, "root"), RecordingClient(sub, trajectory, "sub")
    return root, sub
