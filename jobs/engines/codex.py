"""The ``codex`` engine: each step is one turn of a child ``codex exec --json``.

The first step starts a thread with the run's task; later steps continue the same thread
with ``codex exec resume <thread_id>``. The child gets a minimal MCP configuration: the
delegation server in the ``question_only`` profile (its own run's status and questions, no
nested delegation), authenticated by the run's delegation token, which travels only as a
file path in the server's environment. ``codex.*`` config keys (other than ``codex.binary``)
pass through as ``-c key=value`` overrides. The child runs supervised (own session, killed
with the run, dies with the runner); its stderr goes to ``runs/<id>/logs/``.

Pausing lets the current turn finish: when a pause was requested during the turn that
ended the agent's work, the run pauses instead of completing, and resuming runs one more
turn in the same thread.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.config.resolver import dash_c_overrides
from jobs.engines.base import (
    Engine,
    EngineContext,
    EngineFailed,
    EngineInterrupted,
    EngineUnavailable,
    StepResult,
)
from jobs.engines.codex_events import CodexTurnState, CodexUsage
from jobs.supervise import SupervisedProcess

TOKEN_FILE_ENV = "CODEX_DELEGATION_TOKEN_FILE"  # noqa: S105 - a variable name
HOME_ENV = "CODEX_DELEGATION_HOME"
RUN_ID_ENV = "CODEX_DELEGATION_RUN_ID"
CONTINUE_PROMPT = (
    "Continue the task from where you left off. When it is done, reply with the final answer."
)


class CodexEngine(Engine):
    """Drives ``codex exec`` turn by turn."""

    name = "codex"
    resumable = True
    #: A pause requested during the final turn pauses the run (resume continues the thread).
    yields_to_pause = True

    def __init__(self, context: EngineContext, checkpoint: Mapping[str, Any] | None) -> None:
        super().__init__(context, checkpoint)
        state = dict(checkpoint or {})
        self.thread_id: str | None = state.get("thread_id")
        self.turns = int(state.get("turns", 0))
        self.usage_total = (
            CodexUsage.from_json(state["usage_total"]) if state.get("usage_total") else None
        )
        binary = str(context.setting("codex.binary", "codex"))
        resolved = shutil.which(binary)
        if resolved is None:
            raise EngineUnavailable(
                f"the codex engine needs the Codex CLI, but {binary!r} was not found on PATH; "
                "install it (npm install -g @openai/codex) or set codex.binary to its path"
            )
        self.binary = resolved
        self._proc: SupervisedProcess[str] | None = None
        self._interrupted = threading.Event()

    # -- the command line ------------------------------------------------------------------

    def overrides(self) -> list[str]:
        """``-c key=value`` arguments: the delegation MCP server, then ``codex.*`` keys."""
        args: list[str] = []
        profile = self.context.setting("delegate.tool_profile", ["delegation"]) or []
        if "delegation" in profile:
            app = str(Path(sys.executable).with_name("app"))
            server = {
                "command": app,
                "args": [
                    "mcp",
                    "--profile",
                    "question_only",
                    "--home",
                    str(self.context.run_dir.parent.parent),
                    "--no-autostart",
                ],
                "env": {
                    TOKEN_FILE_ENV: str(self.context.token_path),
                    HOME_ENV: str(self.context.run_dir.parent.parent),
                    RUN_ID_ENV: self.context.run.id,
                },
                "enabled": True,
                "required": True,
                "default_tools_approval_mode": "approve",
            }
            args += dash_c_overrides("mcp_servers.delegation", server)
        passthrough = dict(self.context.setting("codex", {}) or {})
        passthrough.pop("binary", None)
        args += dash_c_overrides("", passthrough)
        return args

    def argv(self) -> list[str]:
        """The full command line of the next turn."""
        common = ["--json", "--skip-git-repo-check", *self.overrides()]
        if self.thread_id is None:
            return [
                self.binary,
                "exec",
                *common,
                "--cd",
                str(self.workdir()),
                self.context.run.task,
            ]
        return [self.binary, "exec", "resume", *common, self.thread_id, CONTINUE_PROMPT]

    def workdir(self) -> Path:
        """The repository the run works in, else its scratch directory."""
        repo = self.context.run.repo
        return Path(repo) if repo else self.context.run_dir / "scratch"

    # -- steps -----------------------------------------------------------------------------

    def step(self, number: int) -> StepResult:
        if self._interrupted.is_set():
            raise EngineInterrupted("interrupted before the turn started")
        state = CodexTurnState(
            step=number, step_events=False, usage_before=self.usage_total, model=self._model()
        )
        logs = self.context.run_dir / "logs"
        logs.mkdir(exist_ok=True)
        stderr_path = logs / f"codex-turn-{self.turns + 1}.stderr.log"
        env = {**os.environ, **self.context.child_env, TOKEN_FILE_ENV: str(self.context.token_path)}
        with stderr_path.open("w", encoding="utf-8") as stderr:
            try:
                proc = SupervisedProcess.start(
                    self.argv(),
                    cwd=self.workdir(),
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
            except OSError as error:
                raise EngineFailed(f"could not start codex ({self.binary}): {error}") from None
            self._proc = proc
            self.context.set_pgid(proc.pgid)
            try:
                assert proc.popen.stdout is not None
                for line in proc.popen.stdout:
                    for payload in state.feed_line(line):
                        self.context.emit(payload)
                code = proc.wait()
            finally:
                proc.terminate_group(grace_s=2.0)
                self._proc = None
                self.context.set_pgid(None)
        for payload in state.finish(
            code, stderr_path.read_text(encoding="utf-8", errors="replace")
        ):
            self.context.emit(payload)
        if self._interrupted.is_set():
            raise EngineInterrupted("the codex turn was stopped")
        if state.thread_id:
            self.thread_id = state.thread_id
        if state.usage_total is not None:
            self.usage_total = state.usage_total
        self.turns += 1
        if state.failure is not None:
            raise EngineFailed(f"codex turn {self.turns} failed: {state.failure}")
        return StepResult(finished=True, answer=state.final_message)

    def _model(self) -> str | None:
        model = self.context.setting("codex.model")
        return str(model) if model else None

    def checkpoint(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "turns": self.turns,
            "usage_total": self.usage_total.to_json() if self.usage_total else None,
        }

    def interrupt(self) -> None:
        self._interrupted.set()
        proc = self._proc
        if proc is not None:
            proc.terminate_group(grace_s=1.0)

    def close(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.terminate_group(grace_s=1.0)
