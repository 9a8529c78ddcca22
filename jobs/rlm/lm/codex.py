"""The ``codex`` LM client: one ``codex exec --json`` call is one completion.

The conversation becomes one prompt: system messages become the model's instructions
(``model_instructions_file``, replacing Codex's coding-agent prompt), the rest is rendered as
a transcript (a single user message is passed as is). The prompt travels on stdin (``-``), so
long transcripts are not limited by the argument size.

Codex is told to behave as a plain model, whatever the user's own ``config.toml`` says:
``approval_policy = "never"``, ``--sandbox read-only``, no shell / exec / multi-agent / goal /
skill / app / plugin / image / browser tools, web search off, the user's MCP servers disabled
(each one named in ``$CODEX_HOME/config.toml`` gets ``enabled = false``), no permission or
environment preamble, ``--ephemeral`` (no session files) and a private empty working
directory (no ``AGENTS.md``). The model provider, model and auth still come from the user's
Codex configuration (or ``extra_config``, e.g. the ``codex.*`` passthrough keys).

The child runs supervised (own session and process group, killed on timeout or
:meth:`CodexModelClient.interrupt`, dies with the runner). The answer is the turn's last
``agent_message``; the usage is the turn's (``turn.completed``). A failed turn, a configuration
error or a crash raises :class:`LMError` with codex's own error text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from app.config.resolver import flatten_dotted, format_toml_value
from jobs.engines.codex_events import CodexTurnState
from jobs.rlm.lm.base import Completion, LMClient, LMConfigError, LMError, Message
from jobs.supervise import SupervisedProcess

DEFAULT_INSTRUCTIONS = (
    "You are a language model answering through an API. You have no tools and cannot run "
    "commands or read files: answer the user's last message directly, in text."
)
TRANSCRIPT_HEADER = (
    "Below is a conversation between a user and an assistant. You are the assistant: write "
    "the assistant's next reply only, without any role tag or preamble."
)

#: Codex features turned off so that it answers in text and touches nothing (0.169 names;
#: unknown names are ignored by codex with a warning item).
DISABLED_FEATURES = (
    "shell_tool",
    "unified_exec",
    "multi_agent",
    "multi_agent_v2",
    "goals",
    "skill_search",
    "apps",
    "plugins",
    "remote_plugin",
    "tool_suggest",
    "image_generation",
    "browser_use",
    "browser_use_external",
    "computer_use",
    "in_app_browser",
    "hooks",
    "memories",
    "daemon_auto_start",
)

#: Overrides applied last (they win over the user's config and ``extra_config``).
LOCKDOWN: dict[str, Any] = {
    "approval_policy": "never",
    "sandbox_mode": "read-only",
    "web_search": "disabled",
    "skills.bundled.enabled": False,
    "include_permissions_instructions": False,
    "include_environment_context": False,
    "include_apps_instructions": False,
    **{f"features.{name}": False for name in DISABLED_FEATURES},
}

SystemMode = Literal["instructions", "prompt"]


def render_transcript(messages: Sequence[Message]) -> str:
    """The non-system messages as one prompt (a lone user message is returned as is)."""
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 1 and turns[0].role == "user":
        return turns[0].content
    blocks = [TRANSCRIPT_HEADER, ""]
    for message in turns:
        blocks.append(f'<message role="{message.role}">\n{message.content}\n</message>')
    return "\n".join(blocks)


def render_prompt(messages: Sequence[Message], system_mode: SystemMode) -> tuple[str, str]:
    """``(instructions, prompt)`` for one call."""
    system = "\n\n".join(m.content for m in messages if m.role == "system").strip()
    transcript = render_transcript(messages)
    if system_mode == "instructions":
        return system or DEFAULT_INSTRUCTIONS, transcript
    prompt = f"<system>\n{system}\n</system>\n\n{transcript}" if system else transcript
    return DEFAULT_INSTRUCTIONS, prompt


def user_config(env: Mapping[str, str]) -> dict[str, Any]:
    """The user's ``$CODEX_HOME/config.toml`` (default ``~/.codex``), or {} when unreadable."""
    home = env.get("CODEX_HOME") or str(Path(env.get("HOME") or Path.home()) / ".codex")
    try:
        return tomllib.loads((Path(home) / "config.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def configured_mcp_servers(env: Mapping[str, str]) -> list[str]:
    """Names of the MCP servers in the user's codex config (to disable them)."""
    servers = user_config(env).get("mcp_servers")
    return sorted(str(name) for name in servers) if isinstance(servers, dict) else []


def _bare_key(name: str) -> str:
    """A TOML key segment: bare when possible, quoted otherwise."""
    if name and all(c.isalnum() or c in "-_" for c in name):
        return name
    return format_toml_value(name)


class CodexModelClient(LMClient):
    """A ``codex exec`` call as the model (see the module docstring)."""

    name = "codex"

    def __init__(
        self,
        binary: str = "codex",
        *,
        env: Mapping[str, str] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        default_model: str | None = None,
        timeout_s: float = 600.0,
        system_mode: SystemMode = "instructions",
        on_pgid: Callable[[int | None], None] | None = None,
        stderr_dir: Path | None = None,
        log_name: str = "codex-lm",
    ) -> None:
        """``env`` replaces the child's environment (default: this process's).
        ``extra_config`` holds ``-c`` overrides (nested or dotted keys), applied before the
        lockdown. ``on_pgid`` is told the process group of the running child (None when it
        ended), for a sweeper. ``stderr_dir`` keeps each call's stderr as a log file named
        ``<log_name>-<pid>-<call>.stderr.log``."""
        self.env = dict(os.environ if env is None else env)
        self.binary = self._resolve(binary, self.env)
        self.extra_config = dict(extra_config or {})
        self.default_model = default_model or None
        self.timeout_s = float(timeout_s)
        if system_mode not in ("instructions", "prompt"):
            raise LMConfigError(
                f"system_mode must be 'instructions' or 'prompt', not {system_mode}"
            )
        self.system_mode: SystemMode = system_mode
        self.on_pgid = on_pgid
        self.stderr_dir = stderr_dir
        self.log_name = log_name
        self.calls = 0
        self._lock = threading.Lock()
        self._running: set[SupervisedProcess[str]] = set()
        self._interrupted = threading.Event()

    @staticmethod
    def _resolve(binary: str, env: Mapping[str, str]) -> str:
        if os.sep in binary:
            path = Path(binary).expanduser()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
            raise LMConfigError(
                f"codex.binary {binary!r} is not an executable file; install the Codex CLI "
                "(`make bootstrap` or `npm install -g @openai/codex`) or fix codex.binary"
            )
        found = shutil.which(binary, path=env.get("PATH", os.defpath))
        if found is None:
            raise LMConfigError(
                f"the codex LM client needs the Codex CLI, but {binary!r} was not found on PATH; "
                "install it (`npm install -g @openai/codex`) or set codex.binary to its path"
            )
        return found

    def argv(self, *, model: str | None, instructions_file: Path, workdir: Path) -> list[str]:
        """The command line of one call (the prompt comes on stdin)."""
        overrides: list[tuple[str, Any]] = flatten_dotted("", self.extra_config)
        overrides += [
            (f"mcp_servers.{_bare_key(name)}.enabled", False)
            for name in configured_mcp_servers(self.env)
        ]
        overrides += list(LOCKDOWN.items())
        overrides.append(("model_instructions_file", str(instructions_file)))
        args = [
            self.binary,
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--ephemeral",
            "--ignore-rules",
            "--sandbox",
            "read-only",
            "--cd",
            str(workdir),
        ]
        for key, value in overrides:
            args += ["-c", f"{key}={format_toml_value(value)}"]
        if model:
            args += ["--model", model]
        args.append("-")
        return args

    def complete(self, messages: list[Message], *, model: str | None = None) -> Completion:
        if not messages:
            raise LMError("no messages to complete")
        self._interrupted.clear()
        name = model or self.default_model
        instructions, prompt = render_prompt(messages, self.system_mode)
        with self._lock:
            self.calls += 1
            number = self.calls
        with tempfile.TemporaryDirectory(prefix="codex-lm-") as scratch:
            root = Path(scratch)
            workdir = root / "work"
            workdir.mkdir()
            instructions_file = root / "instructions.md"
            instructions_file.write_text(instructions, encoding="utf-8")
            prompt_file = root / "prompt.txt"
            prompt_file.write_text(prompt, encoding="utf-8")
            stderr_path = (
                self.stderr_dir / f"{self.log_name}-{os.getpid()}-{number}.stderr.log"
                if self.stderr_dir is not None
                else root / "stderr.log"
            )
            stderr_path.parent.mkdir(parents=True, exist_ok=True)
            args = self.argv(model=name, instructions_file=instructions_file, workdir=workdir)
            state, code, timed_out = self._run(args, workdir, prompt_file, stderr_path, name)
            stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
        state.finish(code, stderr)
        if self._interrupted.is_set():
            raise LMError("the codex call was interrupted")
        if timed_out:
            raise LMError(f"codex did not answer within {self.timeout_s:g}s")
        if state.failure is not None:
            raise LMError(f"codex failed: {state.failure}")
        if state.final_message is None:
            raise LMError("codex finished its turn without an answer")
        turn = state.usage_turn
        return Completion(
            text=state.final_message,
            model=name or self._configured_model(),
            input_tokens=turn.input_tokens if turn else 0,
            output_tokens=turn.output_tokens if turn else 0,
            cached_input_tokens=turn.cached_input_tokens if turn else 0,
            raw={
                "thread_id": state.thread_id,
                "warnings": list(state.warnings),
                "reasoning_output_tokens": turn.reasoning_output_tokens if turn else 0,
            },
        )

    def _configured_model(self) -> str:
        """The model codex uses when none is passed (for the usage record)."""
        model = self.extra_config.get("model") or user_config(self.env).get("model")
        return str(model) if isinstance(model, str) and model else "codex"

    def _run(
        self,
        args: list[str],
        workdir: Path,
        prompt_file: Path,
        stderr_path: Path,
        model: str | None,
    ) -> tuple[CodexTurnState, int | None, bool]:
        state = CodexTurnState(step_events=False, model=model)
        timed_out = threading.Event()
        with prompt_file.open("rb") as stdin, stderr_path.open("w", encoding="utf-8") as stderr:
            try:
                proc = SupervisedProcess.start(
                    args,
                    cwd=workdir,
                    env=self.env,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
            except OSError as error:
                raise LMError(f"could not start codex ({self.binary}): {error}") from None
            with self._lock:
                self._running.add(proc)
            if self.on_pgid is not None:
                self.on_pgid(proc.pgid)

            def expire() -> None:
                timed_out.set()
                proc.terminate_group(grace_s=1.0)

            timer = threading.Timer(self.timeout_s, expire)
            timer.daemon = True
            timer.start()
            try:
                if self._interrupted.is_set():
                    proc.terminate_group(grace_s=1.0)
                assert proc.popen.stdout is not None
                for line in proc.popen.stdout:
                    state.feed_line(line)
                code = proc.wait()
            finally:
                timer.cancel()
                proc.terminate_group(grace_s=2.0)
                with self._lock:
                    self._running.discard(proc)
                if self.on_pgid is not None:
                    self.on_pgid(None)
        return state, code, timed_out.is_set()

    def interrupt(self) -> None:
        """Kill the running codex children (their calls raise LMError)."""
        self._interrupted.set()
        with self._lock:
            running = list(self._running)
        for proc in running:
            proc.terminate_group(grace_s=1.0)

    def close(self) -> None:
        with self._lock:
            running = list(self._running)
        for proc in running:
            proc.terminate_group(grace_s=1.0)
