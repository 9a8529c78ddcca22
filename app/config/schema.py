"""The config key table (DESIGN §6): every closed key, its type, default, limits and cap role.

This module is data only. ``resolver.py`` enforces it and ``scripts/gen_config_doc.py`` renders
it into ``docs/config.md``, so the table here is the single source of truth for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

ValueType = Literal["str", "int", "float", "bool", "list[str]", "list[path]"]
"""How a key's value is checked. ``list[path]`` is a list of path strings, resolved on load."""

CapRule = Literal["member", "subset", "and", "intersect"]
"""How a capped key is limited by the repo: ``member`` (value must be in the cap list; outside
is an error), ``subset`` (list is intersected with the cap list), ``and`` (boolean AND with the
repo file's value), ``intersect`` (path lists intersected with the repo file's list)."""

LAYERS: tuple[str, ...] = ("default", "global", "repo", "env", "run")
"""Layer names, lowest precedence first."""

ENV_VAR = "CODEX_DELEGATION_CONFIG_OVERRIDES"
"""Environment variable holding ``key=value`` overrides separated by ``;`` or newlines."""

GLOBAL_CONFIG_RELPATH = PurePosixPath("codex-delegation/config.toml")
"""Global config file, relative to ``$XDG_CONFIG_HOME`` (default ``~/.config``)."""

REPO_CONFIG_RELPATH = PurePosixPath(".codex/delegation.toml")
"""Repo config file, relative to the repo root."""

PASSTHROUGH_TABLE = "codex"
"""The one open table: any key under it (except the closed ``codex.binary``) is accepted."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One closed config key.

    ``choices`` restricts a ``str`` value, or each item of a ``list[str]`` value.
    ``repo_only`` keys may be set only in the repo file; ``is_cap`` marks keys that cap others.
    ``capped_by``/``cap_rule`` say which key limits this one and how.
    """

    key: str
    type: ValueType
    default: object
    description: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    min_items: int = 0
    repo_only: bool = False
    is_cap: bool = False
    capped_by: str | None = None
    cap_rule: CapRule | None = None
    default_doc: str | None = None  # shown in docs when the default depends on the run


KEYS: tuple[KeySpec, ...] = (
    # runner ---------------------------------------------------------------------------------
    KeySpec(
        "runner.mode",
        "str",
        "prod",
        "Runner mode. `dev` relaxes sandbox requirements (e.g. allows the local sandbox).",
        choices=("prod", "dev"),
        capped_by="runner.allowed_modes",
        cap_rule="member",
    ),
    KeySpec(
        "runner.allowed_modes",
        "list[str]",
        ["prod"],
        "Repo cap: the runner modes this repo permits.",
        choices=("prod", "dev"),
        min_items=1,
        repo_only=True,
        is_cap=True,
    ),
    KeySpec(
        "runner.lease_ttl_s",
        "int",
        30,
        "Seconds a worker's run lease lasts before the sweeper may reclaim the run.",
        minimum=1,
    ),
    KeySpec(
        "runner.sweep_interval_s",
        "int",
        10,
        "Seconds between sweeps for runs whose lease expired and for expired questions "
        "and confirmations.",
        minimum=1,
    ),
    # rlm ------------------------------------------------------------------------------------
    KeySpec(
        "rlm.policy",
        "str",
        "always",
        "Whether delegated runs use the RLM engine. Changes apply at run start or a resume "
        "boundary only (emits `rlm_policy_changed`).",
        choices=("always", "never"),
    ),
    KeySpec(
        "rlm.environment",
        "str",
        "docker",
        "Sandbox for the RLM REPL: `docker`, or `local` (bubblewrap namespace sandbox).",
        choices=("docker", "local"),
        capped_by="rlm.allowed_environments",
        cap_rule="member",
    ),
    KeySpec(
        "rlm.allowed_environments",
        "list[str]",
        ["docker"],
        "Repo cap: the sandbox environments this repo permits.",
        choices=("docker", "local"),
        min_items=1,
        repo_only=True,
        is_cap=True,
    ),
    KeySpec("rlm.max_iterations", "int", 50, "Maximum RLM iterations per run.", minimum=1),
    KeySpec(
        "rlm.max_subcalls",
        "int",
        200,
        "Maximum `llm_query`/`rlm_query` sub-calls per run.",
        minimum=0,
    ),
    KeySpec(
        "rlm.max_subcall_depth",
        "int",
        1,
        "Maximum `rlm_query` recursion depth (values above 1 need the deep-recursion gate).",
        minimum=1,
        maximum=4,
    ),
    KeySpec(
        "rlm.wall_clock_timeout_ms",
        "int",
        1_800_000,
        "Wall-clock limit for a whole RLM run, in milliseconds.",
        minimum=1,
    ),
    KeySpec(
        "rlm.cell_timeout_ms", "int", 60_000, "Time limit for one REPL cell, in ms.", minimum=1
    ),
    KeySpec(
        "rlm.max_output_chars",
        "int",
        20_000,
        "REPL output beyond this many characters is truncated before the model sees it.",
        minimum=1,
    ),
    KeySpec("rlm.budget_tokens", "int", 0, "Token budget per run; 0 = no limit.", minimum=0),
    KeySpec("rlm.budget_usd", "float", 0.0, "Cost budget per run in USD; 0 = no limit.", minimum=0),
    KeySpec(
        "rlm.on_budget_exceeded",
        "str",
        "fail",
        "What happens when a budget is exceeded: end the run, or pause it for a person.",
        choices=("fail", "pause"),
    ),
    KeySpec(
        "rlm.lm_client",
        "str",
        "openai",
        "Model client: OpenAI-compatible HTTP, a `codex exec` call, or a recorded replay.",
        choices=("openai", "codex", "replay"),
    ),
    KeySpec("rlm.root_model", "str", "", "Model for the root RLM loop; empty = client default."),
    KeySpec("rlm.sub_model", "str", "", "Model for `llm_query` sub-calls; empty = client default."),
    KeySpec("rlm.replay_path", "str", "", "Recorded trajectory for `rlm.lm_client = replay`."),
    KeySpec(
        "rlm.docker_image",
        "str",
        "codex-delegation-sandbox:latest",
        "Image for the docker sandbox (`app sandbox build-image` builds it).",
    ),
    # sandbox --------------------------------------------------------------------------------
    KeySpec(
        "sandbox.network",
        "bool",
        False,
        "Network access inside the sandbox. Effective value = repo file value AND the "
        "requested value.",
        capped_by="sandbox.network",
        cap_rule="and",
    ),
    KeySpec(
        "sandbox.memory_mb",
        "int",
        1024,
        "Sandbox memory limit in MiB (docker's floor is 6).",
        minimum=6,
    ),
    KeySpec("sandbox.pids_limit", "int", 128, "Sandbox process limit.", minimum=1),
    KeySpec(
        "sandbox.cpus",
        "float",
        1.0,
        "Sandbox CPU quota (number of CPUs, fractional allowed).",
        minimum=0,
        exclusive_minimum=True,
    ),
    KeySpec(
        "sandbox.tmpfs_mb", "int", 64, "Size of the sandbox's writable tmpfs in MiB.", minimum=1
    ),
    KeySpec(
        "sandbox.docker_runtime",
        "str",
        "",
        "Docker runtime: empty = docker's default, `runsc` = gVisor.",
        choices=("", "runsc"),
    ),
    # ui -------------------------------------------------------------------------------------
    KeySpec(
        "ui.bind_host",
        "str",
        "127.0.0.1",
        "Address the runner's HTTP server binds to.",
        capped_by="ui.allowed_bind_hosts",
        cap_rule="member",
    ),
    KeySpec(
        "ui.allowed_bind_hosts",
        "list[str]",
        ["127.0.0.1"],
        "Repo cap: the bind addresses this repo permits.",
        min_items=1,
        repo_only=True,
        is_cap=True,
    ),
    KeySpec(
        "ui.port",
        "int",
        0,
        "Port the runner binds to; 0 = pick a free port.",
        minimum=0,
        maximum=65535,
    ),
    KeySpec(
        "ui.sse_heartbeat_s",
        "float",
        15.0,
        "Seconds between heartbeat comments on an idle event stream.",
        minimum=0.05,
    ),
    # delegate -------------------------------------------------------------------------------
    KeySpec(
        "delegate.engine",
        "str",
        "rlm",
        "Engine for delegated runs (`echo` is a diagnostic engine with no model).",
        choices=("rlm", "codex", "echo"),
    ),
    KeySpec(
        "delegate.wall_clock_timeout_ms",
        "int",
        3_600_000,
        "Wall-clock budget of a run's running time (all attempts), for every engine.",
        minimum=1,
    ),
    KeySpec("echo.steps", "int", 3, "Steps the `echo` engine runs before answering.", minimum=1),
    KeySpec("echo.step_ms", "int", 0, "Milliseconds each `echo` step takes.", minimum=0),
    KeySpec(
        "echo.child",
        "bool",
        False,
        "Run each `echo` step as a supervised child process (to exercise supervision).",
    ),
    KeySpec(
        "delegate.mode",
        "str",
        "question_only",
        "MCP tool profile for a delegate: `full` (parent) or `question_only` (no nesting).",
        choices=("full", "question_only"),
    ),
    KeySpec(
        "delegate.tool_profile",
        "list[str]",
        ["delegation"],
        "MCP tool servers a delegate gets; intersected with `delegate.allowed_tool_servers`.",
        capped_by="delegate.allowed_tool_servers",
        cap_rule="subset",
    ),
    KeySpec(
        "delegate.allowed_tool_servers",
        "list[str]",
        ["delegation"],
        "Repo cap: the MCP tool servers a delegate may be given.",
        repo_only=True,
        is_cap=True,
    ),
    # paths ----------------------------------------------------------------------------------
    KeySpec(
        "paths.allowed_roots",
        "list[path]",
        [],
        "Directories a run may read as context. Resolved (symlinks followed); a non-repo "
        "layer's list is intersected with the repo file's list.",
        capped_by="paths.allowed_roots",
        cap_rule="intersect",
        default_doc="`[<repo root>]` with a repo, `[]` without",
    ),
    # github ---------------------------------------------------------------------------------
    KeySpec(
        "github.enabled",
        "bool",
        False,
        "Expose `github.*` MCP tools. Repo file only.",
        repo_only=True,
    ),
    KeySpec(
        "github.operations",
        "list[str]",
        [],
        "Allow-list of GitHub operations (e.g. `merge`). Repo file only.",
        repo_only=True,
    ),
    # db -------------------------------------------------------------------------------------
    KeySpec(
        "db.synchronous",
        "str",
        "NORMAL",
        "SQLite `PRAGMA synchronous` (WAL mode).",
        choices=("NORMAL", "FULL"),
    ),
    KeySpec("db.busy_timeout_ms", "int", 5000, "SQLite busy timeout in ms.", minimum=0),
    # queue ----------------------------------------------------------------------------------
    KeySpec(
        "queue.backend",
        "str",
        "sqlite",
        "Huey storage backend.",
        choices=("sqlite", "redis", "postgres"),
    ),
    KeySpec("queue.url", "str", "", "Connection URL for the redis/postgres backend."),
    KeySpec(
        "queue.workers",
        "int",
        4,
        "Worker threads of the runner's in-process consumer (0 = none: run `app worker`).",
        minimum=0,
    ),
    # confirm --------------------------------------------------------------------------------
    KeySpec("confirm.max_pending", "int", 3, "Maximum pending confirmations per run.", minimum=1),
    KeySpec("confirm.ttl_s", "int", 900, "Seconds before a confirmation nonce expires.", minimum=1),
    # questions ------------------------------------------------------------------------------
    KeySpec(
        "questions.ttl_s", "int", 3600, "Seconds before an unanswered question expires.", minimum=1
    ),
    KeySpec(
        "questions.expiry_fallback",
        "str",
        "pause",
        "What the run does when a question expires.",
        choices=("pause", "resume", "fail"),
    ),
    KeySpec(
        "questions.max_wait_ms",
        "int",
        30_000,
        "Longest `wait_ms` a question poll may block for.",
        minimum=0,
    ),
    # lm -------------------------------------------------------------------------------------
    KeySpec(
        "lm.openai.base_url",
        "str",
        "https://api.openai.com/v1",
        "Base URL of the OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp).",
    ),
    KeySpec(
        "lm.openai.api_key_env",
        "str",
        "OPENAI_API_KEY",
        "Name of the environment variable holding the API key (never the key itself).",
    ),
    KeySpec(
        "lm.openai.wire_api",
        "str",
        "responses",
        "Wire protocol: Responses API or Chat Completions.",
        choices=("responses", "chat"),
    ),
    # codex ----------------------------------------------------------------------------------
    KeySpec("codex.binary", "str", "codex", "The Codex CLI executable."),
    # log ------------------------------------------------------------------------------------
    KeySpec(
        "log.level",
        "str",
        "info",
        "Log level.",
        choices=("debug", "info", "warning", "error"),
    ),
)

KEY_INDEX: dict[str, KeySpec] = {spec.key: spec for spec in KEYS}
"""Dotted key -> spec."""

CAP_KEYS: tuple[str, ...] = tuple(spec.key for spec in KEYS if spec.is_cap)
"""Keys that cap other keys (repo file only)."""

REPO_ONLY_KEYS: tuple[str, ...] = tuple(spec.key for spec in KEYS if spec.repo_only)
"""Keys that may be set only in the repo file."""

TABLES: frozenset[str] = frozenset(
    ".".join(spec.key.split(".")[:i]) for spec in KEYS for i in range(1, spec.key.count(".") + 1)
)
"""Every dotted table prefix of a closed key (``rlm``, ``lm``, ``lm.openai`` ...)."""
