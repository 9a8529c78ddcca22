"""An isolated ``CODEX_HOME`` that points the real ``codex`` at the fake Responses server.

``build_codex_home(root, base_url=server.base_url)`` writes ``root/codex-home/config.toml``
and returns a :class:`CodexHome` with the environment and command lines to run
``codex exec --json`` against the fake server and nothing else:

* the ``fake`` model provider (``wire_api = "responses"``, a dummy key read from
  ``FAKE_API_KEY``, no retries) is the selected provider;
* update checks, analytics, feedback, OpenTelemetry exporters (logs, traces and the default
  Statsig metrics), web search, request compression, websockets, plugins/apps/connectors
  (which fetch from github.com and chatgpt.com), tool suggestions, image generation, browser
  and computer use, model discovery and the background daemon are turned off;
* ``HTTP(S)_PROXY``/``ALL_PROXY`` point at a loopback port that refuses connections, with
  ``NO_PROXY`` exempting only ``127.0.0.1``/``localhost``: a stray outbound request fails at
  once instead of hanging (and never leaves the machine);
* ``HOME`` and ``TMPDIR`` are private too (codex refuses to create its helper binaries
  when ``CODEX_HOME`` is under the system temp dir, so ``TMPDIR`` is moved next to it).

Sandbox: ``approval_policy = "never"`` (``exec`` cannot ask anyone) and
``sandbox_mode = "workspace-write"`` (see :data:`SANDBOX_ARGS`): codex's own Linux sandbox
(seccomp + landlock) works in this container, so model-run commands may write only the work
directory and have no network. Where it cannot work (some nested containers), set
``CODEX_TEST_SANDBOX=bypass`` to use ``--dangerously-bypass-approvals-and-sandbox`` instead
(tests only run ``echo``-like commands in a private temp directory).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

ROOT = Path(__file__).resolve().parents[2]
CODEX_VERSION = "0.169.0"
#: The project-local install made by ``scripts/install_codex.sh`` (``make bootstrap``).
CODEX_BIN = ROOT / "tools" / "codex" / "node_modules" / ".bin" / "codex"
PROVIDER = "fake"
API_KEY_ENV = "FAKE_API_KEY"
API_KEY = "fake-key-not-a-secret"

#: ``CODEX_TEST_SANDBOX=bypass`` turns codex's sandbox off where it cannot work.
BYPASS_SANDBOX = os.environ.get("CODEX_TEST_SANDBOX") == "bypass"
#: Extra ``exec``/``exec resume`` flags. Normally none: ``sandbox_mode = "workspace-write"``
#: is in config.toml (``exec resume`` has no ``--sandbox`` flag), so model-run commands may
#: write only the work directory and have no network access.
SANDBOX_ARGS: tuple[str, ...] = (
    ("--dangerously-bypass-approvals-and-sandbox",) if BYPASS_SANDBOX else ()
)

#: Features that reach the network (or start background services) when left on.
DISABLED_FEATURES = (
    "apps",  # connectors: chatgpt.com
    "plugins",  # plugin marketplace sync: github.com, api.github.com
    "remote_plugin",
    "tool_suggest",
    "skill_mcp_dependency_install",
    "image_generation",
    "browser_use",
    "browser_use_external",
    "computer_use",
    "in_app_browser",
    "in_app_updates",
    "daemon_auto_start",  # no shared background server outliving the test
    "api_key_model_discovery",  # no model-list fetch
    "enable_request_compression",  # plain JSON request bodies for the fake server
    "unbounded_connection_retries",  # a dead server fails the turn quickly
    "system_proxy_fallback",
)


def find_codex() -> Path | None:
    """The project-local codex launcher, or None when it is not installed."""
    return CODEX_BIN if os.access(CODEX_BIN, os.X_OK) else None


_refusing: list[socket.socket] = []
_refusing_lock = threading.Lock()


def refusing_port() -> int:
    """A loopback port that refuses every connection (bound, never listening), held open."""
    with _refusing_lock:
        if not _refusing:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            _refusing.append(sock)
        return int(_refusing[0].getsockname()[1])


class ProxyTrap:
    """A loopback "proxy" that records the first line of every connection and hangs up.

    Point ``HTTP(S)_PROXY`` at :attr:`url`: any request codex tries to send anywhere but the
    ``NO_PROXY`` loopback lands here (``CONNECT github.com:443 HTTP/1.1``) and fails at once.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="proxy-trap", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                except OSError:
                    first = b""
                self.lines.append(first.decode("latin-1") or "<connection without data>")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> ProxyTrap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def isolated_config(
    base_url: str,
    *,
    model: str = "fake-model",
    mcp_servers: Mapping[str, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.toml`` content (as a dict) for a codex that talks only to ``base_url``."""
    config: dict[str, Any] = {
        "model": model,
        "model_provider": PROVIDER,
        "approval_policy": "never",
        "sandbox_mode": "danger-full-access" if BYPASS_SANDBOX else "workspace-write",
        "sandbox_workspace_write": {"network_access": False},
        "check_for_update_on_startup": False,
        "web_search": "disabled",
        "analytics": {"enabled": False},
        "feedback": {"enabled": False},
        "otel": {
            "exporter": "none",
            "trace_exporter": "none",
            "metrics_exporter": "none",
            "log_user_prompt": False,
        },
        "history": {"persistence": "none"},
        "features": dict.fromkeys(DISABLED_FEATURES, False),
        "model_providers": {
            PROVIDER: {
                "name": "Fake Responses API (tests)",
                "base_url": base_url,
                "wire_api": "responses",
                "env_key": API_KEY_ENV,
                "requires_openai_auth": False,
                "supports_websockets": False,
                "request_max_retries": 0,
                "stream_max_retries": 0,
                "stream_idle_timeout_ms": 30_000,
            }
        },
    }
    if mcp_servers:
        config["mcp_servers"] = {name: dict(server) for name, server in mcp_servers.items()}
    for key, value in (extra or {}).items():
        _set_dotted(config, key, value)
    return config


def _set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def mcp_stdio_server(
    command: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    startup_timeout_sec: float = 20.0,
    tool_timeout_sec: float = 60.0,
) -> dict[str, Any]:
    """An ``mcp_servers.<name>`` entry for a stdio MCP server codex must start and may use.

    ``required = true`` makes codex fail instead of running without it;
    ``default_tools_approval_mode = "approve"`` lets its tools run without a prompt.
    """
    server: dict[str, Any] = {
        "command": command,
        "args": list(args),
        "required": True,
        "default_tools_approval_mode": "approve",
        "startup_timeout_sec": startup_timeout_sec,
        "tool_timeout_sec": tool_timeout_sec,
    }
    if env:
        server["env"] = dict(env)
    return server


def isolated_env(
    codex_home: Path,
    *,
    user_home: Path,
    tmpdir: Path,
    proxy_url: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a codex child: only what it needs, proxies dead, telemetry off.

    ``proxy_url`` replaces the refusing proxy (e.g. with one that records what reaches it).
    """
    source = os.environ if base is None else base
    dead_proxy = proxy_url or f"http://127.0.0.1:{refusing_port()}"
    env = {
        key: source[key]
        for key in ("PATH", "LANG", "LC_ALL", "TERM", "SYSTEMROOT")
        if key in source
    }
    env.update(
        {
            "HOME": str(user_home),
            "TMPDIR": str(tmpdir),
            "CODEX_HOME": str(codex_home),
            API_KEY_ENV: API_KEY,
            "HTTP_PROXY": dead_proxy,
            "HTTPS_PROXY": dead_proxy,
            "ALL_PROXY": dead_proxy,
            "http_proxy": dead_proxy,
            "https_proxy": dead_proxy,
            "all_proxy": dead_proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "OTEL_SDK_DISABLED": "true",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "NO_COLOR": "1",
            "RUST_LOG": "error",
        }
    )
    return env


@dataclass(frozen=True)
class CodexResult:
    """One finished ``codex exec --json`` process."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)
    #: stdout lines that were not JSON objects (should be none).
    other_lines: list[str] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("type") == kind]

    @property
    def thread_id(self) -> str | None:
        started = self.of_type("thread.started")
        return str(started[0]["thread_id"]) if started else None


def parse_jsonl(stdout: str) -> tuple[list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            other.append(line)
            continue
        if isinstance(obj, dict):
            events.append(obj)
        else:
            other.append(line)
    return events, other


@dataclass(frozen=True)
class CodexHome:
    """A private codex installation state: ``CODEX_HOME``, user home, temp and work dirs."""

    root: Path
    codex_home: Path
    workdir: Path
    env: dict[str, str]
    binary: Path

    @property
    def config_path(self) -> Path:
        return self.codex_home / "config.toml"

    def exec_args(self, prompt: str, *extra: str) -> list[str]:
        """``codex exec --json`` for a new thread, in :attr:`workdir`."""
        return [
            str(self.binary),
            "exec",
            "--json",
            "--strict-config",
            "--skip-git-repo-check",
            *SANDBOX_ARGS,
            "--cd",
            str(self.workdir),
            *extra,
            prompt,
        ]

    def resume_args(self, thread_id: str, prompt: str, *extra: str) -> list[str]:
        """``codex exec resume <thread_id>`` continuing a thread with a new prompt."""
        return [
            str(self.binary),
            "exec",
            "resume",
            "--json",
            "--strict-config",
            "--skip-git-repo-check",
            *SANDBOX_ARGS,
            *extra,
            thread_id,
            prompt,
        ]

    def popen(self, args: Sequence[str]) -> subprocess.Popen[str]:
        """Start codex in its own process group (stdin closed, stdout/stderr piped)."""
        return subprocess.Popen(
            list(args),
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, args: Sequence[str], *, timeout: float = 60.0) -> CodexResult:
        """Run codex to completion (stdin closed) and parse its JSONL stdout."""
        proc = subprocess.run(
            list(args),
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        events, other = parse_jsonl(proc.stdout)
        return CodexResult(
            args=list(args),
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            events=events,
            other_lines=other,
        )


def build_codex_home(
    root: Path,
    *,
    base_url: str,
    model: str = "fake-model",
    mcp_servers: Mapping[str, Mapping[str, Any]] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    binary: Path | None = None,
    proxy_url: str | None = None,
) -> CodexHome:
    """Create ``root/{codex-home,user-home,tmp,work}`` and a config pointing at ``base_url``."""
    codex_home = root / "codex-home"
    user_home = root / "user-home"
    tmpdir = root / "tmp"
    workdir = root / "work"
    for directory in (codex_home, user_home, tmpdir, workdir):
        directory.mkdir(parents=True, exist_ok=True)
    config = isolated_config(base_url, model=model, mcp_servers=mcp_servers, extra=extra_config)
    (codex_home / "config.toml").write_text(tomlkit.dumps(config))
    found = binary or find_codex()
    if found is None:
        raise FileNotFoundError(f"codex is not installed at {CODEX_BIN} (run `make bootstrap`)")
    return CodexHome(
        root=root,
        codex_home=codex_home,
        workdir=workdir,
        env=isolated_env(codex_home, user_home=user_home, tmpdir=tmpdir, proxy_url=proxy_url),
        binary=found,
    )
