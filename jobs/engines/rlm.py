"""The ``rlm`` engine: a Recursive Language Model run; each step is one root iteration.

The context (the run's repository, within ``paths.allowed_roots``) stays on the host and is
read through ``context.*`` calls; the model's code runs in the sandbox ``rlm.environment``
chooses (never silently another one); sub-calls and budgets are the host's. See
``jobs/rlm/loop.py`` for the loop and ``docs/rlm.md`` for the whole picture.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.engines.base import (
    Engine,
    EngineBudgetExhausted,
    EngineContext,
    EngineFailed,
    EngineInterrupted,
    EngineUnavailable,
    StepResult,
)
from jobs.rlm.budget import Budget, BudgetExhausted
from jobs.rlm.context import ContextStore
from jobs.rlm.lm.base import Completion, LMClient, LMError, Message
from jobs.rlm.lm.factory import make_clients
from jobs.rlm.loop import LoopInterrupted, LoopSettings, RlmLoop
from jobs.rlm.sandbox.base import SandboxLimits, SandboxUnavailable
from jobs.rlm.sandbox.choose import choose_sandbox


class _Counting(LMClient):
    """Counts completions per kind, so a replayed run can continue where it stopped."""

    def __init__(self, inner: LMClient, counts: dict[str, int], kind: str) -> None:
        self.inner = inner
        self.counts = counts
        self.kind = kind
        self.name = inner.name

    def complete(self, messages: list[Message], *, model: str | None = None) -> Completion:
        try:
            return self.inner.complete(messages, model=model)
        finally:
            # A failed call counts too: a replayed trajectory records failures as entries.
            self.counts[self.kind] = self.counts.get(self.kind, 0) + 1

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()


class RlmEngine(Engine):
    """Drives the root :class:`RlmLoop` one iteration per step."""

    name = "rlm"
    resumable = True

    def __init__(self, context: EngineContext, checkpoint: Mapping[str, Any] | None) -> None:
        super().__init__(context, checkpoint)
        setting = context.setting
        saved = dict(checkpoint or {})
        try:
            sandbox = choose_sandbox(
                str(setting("rlm.environment", "docker")),
                str(setting("runner.mode", "prod")),
                list(setting("rlm.allowed_environments", ["docker"]) or []),
                docker_image=setting("rlm.docker_image", "") or None,
                docker_runtime=str(setting("sandbox.docker_runtime", "") or ""),
            )
        except SandboxUnavailable as error:
            raise EngineUnavailable(str(error)) from None
        repo = Path(context.run.repo) if context.run.repo else None
        self.counts: dict[str, int] = dict(saved.get("lm_calls", {}))
        try:
            root, sub = make_clients(
                context.config,
                run_dir=context.run_dir,
                repo=repo,
                replay_start=self.counts or None,
                on_pgid=context.set_pgid,
            )
        except (LMError, ValueError) as error:
            raise EngineUnavailable(f"the RLM's model is not usable: {error}") from None
        budget = Budget.from_config(context.config)
        if saved.get("budget"):
            budget.restore(saved["budget"])
        roots = [repo] if repo else []
        allowed = list(setting("paths.allowed_roots", []) or [])
        self.loop = RlmLoop(
            settings=LoopSettings(
                sandbox=sandbox,
                limits=SandboxLimits(
                    memory_mb=int(setting("sandbox.memory_mb", 1024)),
                    pids=int(setting("sandbox.pids_limit", 128)),
                    cpus=float(setting("sandbox.cpus", 1.0)),
                    tmpfs_mb=int(setting("sandbox.tmpfs_mb", 64)),
                    network=bool(setting("sandbox.network", False)),
                ),
                run_dir=context.run_dir,
                root_client=_Counting(root, self.counts, "root"),
                sub_client=_Counting(sub, self.counts, "sub"),
                context=ContextStore(roots, allowed),
                budget=budget,
                emit=context.emit,
                max_output_chars=int(setting("rlm.max_output_chars", 20_000)),
                cell_timeout_s=int(setting("rlm.cell_timeout_ms", 60_000)) / 1000,
                max_iterations=int(setting("rlm.max_iterations", 50)),
                root_model=setting("rlm.root_model") or None,
                sub_model=setting("rlm.sub_model") or None,
                ask=context.ask,
                question_status=context.question_status,
                pause_requested=context.pause_requested,
            ),
            task=context.run.task,
        )
        self._lock = threading.Lock()
        try:
            self.loop.start(saved.get("loop"))
        except SandboxUnavailable as error:
            raise EngineUnavailable(str(error)) from None

    def step(self, number: int) -> StepResult:
        try:
            answer = self.loop.iterate()
        except LoopInterrupted:
            raise EngineInterrupted("interrupted") from None
        except BudgetExhausted as exhausted:
            partial = None
            if exhausted.budget == "rlm.max_iterations":
                try:
                    partial = self.loop.extract_default_answer()
                except (LMError, BudgetExhausted, LoopInterrupted):
                    partial = None
            raise EngineBudgetExhausted(
                exhausted.budget, exhausted.limit, exhausted.used, partial
            ) from None
        except LMError as error:
            raise EngineFailed(f"the root model failed: {error}") from None
        if answer is None:
            return StepResult()
        return StepResult(finished=True, answer=answer)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "loop": self.loop.snapshot(),
            "budget": self.loop.settings.budget.snapshot(),
            "lm_calls": dict(self.counts),
        }

    def interrupt(self) -> None:
        self.loop.interrupt()
        self.loop.settings.root_client.interrupt()
        self.loop.settings.sub_client.interrupt()

    def close(self) -> None:
        self.loop.close()
        self.loop.settings.root_client.close()
        self.loop.settings.sub_client.close()
