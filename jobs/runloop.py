"""The run loop: claim a queued run, advance its engine step by step under supervision.

Between steps the loop reads the run's state (the control plane writes it): ``pausing`` →
checkpoint, ``run_paused``, the worker is released; ``cancelled`` (or any end) → stop. The
wall-clock budget (``delegate.wall_clock_timeout_ms``, counted over every attempt) is checked
between steps and, by the watchdog, during them. A watchdog thread also renews the lease and
interrupts the engine at once when the run is cancelled, its budget runs out or its lease is
lost. A failing engine ends the run ``failed`` with a reason a person can act on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.control.questions import QuestionService
from app.control.spawn import TOKEN_FILE
from app.wire.events import (
    Actor,
    BudgetExceeded,
    Payload,
    RunCompleted,
    RunFailed,
    RunPaused,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from db.connection import raw_connection
from db.eventlog import EventLog
from db.lifecycle import TERMINAL_STATES, IllegalTransition, RunState
from db.runs import get_run, transition
from jobs import leases
from jobs.engines import create_engine
from jobs.engines.base import (
    Engine,
    EngineBudgetExhausted,
    EngineContext,
    EngineFailed,
    EngineInterrupted,
    EngineUnavailable,
    StepResult,
    config_value,
)

log = logging.getLogger(__name__)
BUDGET_KEY = "delegate.wall_clock_timeout_ms"


@dataclass
class WorkerContext:
    """What a worker process (the runner, or `app worker`) gives the run loop."""

    log: EventLog
    owner: str
    lease_ttl_s: float = 30.0
    #: How often the watchdog looks at the run's state (cancel latency) and budget.
    poll_s: float = 0.05
    child_env: dict[str, str] = field(default_factory=dict)


class _Watchdog(threading.Thread):
    """Renews the lease; interrupts the engine on cancel, lost lease or budget."""

    def __init__(
        self, ctx: WorkerContext, run_id: str, engine: Engine, deadline: float | None
    ) -> None:
        super().__init__(name=f"watchdog-{run_id}", daemon=True)
        self.ctx = ctx
        self.run_id = run_id
        self.engine = engine
        self.deadline = deadline
        self.reason: str | None = None  # "ended" | "lease_lost" | "budget"
        # Not `_stop`: that name is threading.Thread's own method.
        self._halt = threading.Event()

    def run(self) -> None:
        renew_every = max(self.ctx.lease_ttl_s / 3, self.ctx.poll_s)
        next_renewal = time.monotonic() + renew_every
        while not self._halt.wait(self.ctx.poll_s):
            try:
                reason = self._check(next_renewal)
            except Exception:  # a busy database moment must not kill supervision
                log.exception("watchdog check of %s failed", self.run_id)
                continue
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + renew_every
            if reason is not None:
                self.reason = reason
                self.engine.interrupt()
                return

    def _check(self, next_renewal: float) -> str | None:
        conn = raw_connection(self.ctx.log.db)
        row = conn.execute(
            "SELECT state, lease_owner FROM run WHERE id = ?", (self.run_id,)
        ).fetchone()
        if row is None or RunState(row[0]) in TERMINAL_STATES:
            return "ended"
        if row[1] != self.ctx.owner:
            return "lease_lost"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "budget"
        if time.monotonic() >= next_renewal and not leases.renew(
            self.ctx.log, self.run_id, owner=self.ctx.owner, ttl_s=self.ctx.lease_ttl_s
        ):
            return "lease_lost"
        return None

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)


def _read_config(ctx: WorkerContext, run_id: str) -> Mapping[str, Any]:
    manifest = ctx.log.home.run_dir(run_id) / "manifest.json"
    try:
        config: Mapping[str, Any] = json.loads(manifest.read_text())["config"]
    except (OSError, ValueError, KeyError):
        config = {}
    return config


def execute_run(ctx: WorkerContext, run_id: str) -> str | None:
    """Claim and run ``run_id`` until it pauses or ends; return the state it was left in.

    Returns None when the run was not queued (already taken, cancelled meanwhile, unknown):
    a duplicate delivery of the same queue message is harmless.
    """
    claimed = leases.claim(ctx.log, run_id, owner=ctx.owner, ttl_s=ctx.lease_ttl_s)
    if claimed is None:
        return None
    started = time.monotonic()
    config = _read_config(ctx, run_id)
    runner = _Attempt(ctx, claimed, config, started)
    try:
        return runner.run()
    finally:
        active_ms = claimed.active_ms + int((time.monotonic() - started) * 1000)
        leases.release(
            ctx.log, run_id, owner=ctx.owner, attempt=claimed.attempt, active_ms=active_ms
        )


class _Attempt:
    """One claim of one run."""

    def __init__(
        self,
        ctx: WorkerContext,
        claimed: leases.Claim,
        config: Mapping[str, Any],
        started: float,
    ) -> None:
        self.ctx = ctx
        self.claimed = claimed
        self.run_id = claimed.run_id
        self.config = config
        self.started = started
        budget_ms = int(config_value(config, BUDGET_KEY, 3_600_000))
        self.budget_ms = budget_ms
        self.deadline = started + max(budget_ms - claimed.active_ms, 0) / 1000

    def used_ms(self) -> int:
        return self.claimed.active_ms + int((time.monotonic() - self.started) * 1000)

    def emit(self, payload: Payload, actor: Actor = Actor.DELEGATE) -> None:
        self.ctx.log.append(self.run_id, payload, actor=actor)

    def end(
        self, payload: Payload, *, reason: str | None = None, checkpoint: str | None = None
    ) -> str:
        """Apply an ending (or pause) transition unless the run has already moved on; the
        worker lets go of the run in the same transaction."""
        try:
            with self.ctx.log.transaction() as tx:
                state = transition(
                    self.ctx.log,
                    self.run_id,
                    payload,
                    actor=Actor.WORKER,
                    reason=reason,
                    checkpoint=checkpoint,
                    tx=tx,
                )
                leases.release(
                    self.ctx.log,
                    self.run_id,
                    owner=self.ctx.owner,
                    attempt=self.claimed.attempt,
                    active_ms=self.used_ms(),
                    tx=tx,
                )
            return state.value
        except IllegalTransition:
            # A person cancelled (or the sweeper interrupted) meanwhile; their event stands.
            return self.state().value

    def state(self) -> RunState:
        return RunState(get_run(self.ctx.log, self.run_id).state)

    def _questions(self) -> QuestionService:
        return QuestionService(
            self.ctx.log,
            default_ttl_s=int(config_value(self.config, "questions.ttl_s", 3600)),
            default_fallback=str(config_value(self.config, "questions.expiry_fallback", "pause")),
            max_wait_ms=int(config_value(self.config, "questions.max_wait_ms", 30_000)),
        )

    def ask(self, prompt: str) -> str:
        """Queue the engine's question; the run pauses at the next boundary until answered."""
        view = self._questions().enqueue(
            self.run_id, prompt=prompt, actor=Actor.DELEGATE, auto_pause=True
        )
        return view.id

    def question_status(self, question_id: str) -> tuple[str, str | None]:
        view = self._questions().get(question_id)
        return view.status, view.answer

    def set_pgid(self, pgid: int | None) -> None:
        # Only while this attempt holds the run (a closing old attempt must not touch it).
        with self.ctx.log.transaction() as tx:
            tx.execute(
                "UPDATE run SET engine_pgid = ? WHERE id = ? AND lease_owner = ? AND attempt = ?",
                (pgid, self.run_id, self.ctx.owner, self.claimed.attempt),
            )

    def save_checkpoint(self, engine: Engine) -> str:
        text = json.dumps(engine.checkpoint(), sort_keys=True)
        with self.ctx.log.transaction() as tx:
            tx.execute("UPDATE run SET checkpoint = ? WHERE id = ?", (text, self.run_id))
        return text

    def budget_exceeded(self) -> str:
        used = self.used_ms()
        return self.end(
            BudgetExceeded(budget=BUDGET_KEY, limit=self.budget_ms, used=used),
            reason=f"wall-clock budget of {self.budget_ms} ms used up ({used} ms)",
        )

    def engine_budget_exceeded(self, engine: Engine, exhausted: EngineBudgetExhausted) -> str:
        """End the run ``budget_exceeded`` (or pause it: ``rlm.on_budget_exceeded = pause``),
        keeping the best partial answer in the event and as ``artifacts/partial_answer.md``."""
        partial = exhausted.partial_answer
        if partial:
            artifacts = self.ctx.log.home.run_dir(self.run_id) / "artifacts"
            artifacts.mkdir(exist_ok=True)
            (artifacts / "partial_answer.md").write_text(partial, encoding="utf-8")
        reason = f"{exhausted}"
        if config_value(self.config, "rlm.on_budget_exceeded", "fail") == "pause":
            checkpoint = self.save_checkpoint(engine)
            return self.end(
                RunPaused(reason=f"paused because the {reason}", checkpoint="budget"),
                reason=reason,
                checkpoint=checkpoint,
            )
        return self.end(
            BudgetExceeded(
                budget=exhausted.budget,
                limit=exhausted.limit,
                used=exhausted.used,
                partial_answer=partial[:4000] if partial else None,
            ),
            reason=reason,
        )

    def run(self) -> str:
        run = get_run(self.ctx.log, self.run_id)
        context = EngineContext(
            run=run,
            run_dir=self.ctx.log.home.run_dir(self.run_id),
            config=self.config,
            emit=self.emit,
            set_pgid=self.set_pgid,
            token_path=self.ctx.log.home.run_dir(self.run_id) / TOKEN_FILE,
            child_env=dict(self.ctx.child_env),
            ask=self.ask,
            question_status=self.question_status,
            pause_requested=lambda: self.state() is RunState.PAUSING,
        )
        try:
            engine = create_engine(self.claimed.engine, context, self.claimed.checkpoint)
        except EngineUnavailable as error:
            return self.end(
                RunFailed(reason=str(error), error_type="engine_unavailable"), reason=str(error)
            )
        watchdog = _Watchdog(self.ctx, self.run_id, engine, self.deadline)
        watchdog.start()
        try:
            return self._steps(engine, watchdog)
        finally:
            watchdog.stop()
            try:
                engine.close()
            except Exception:
                log.exception("closing the engine of %s failed", self.run_id)

    def _steps(self, engine: Engine, watchdog: _Watchdog) -> str:
        number = 0
        while True:
            state = self.state()
            if state in TERMINAL_STATES or watchdog.reason in ("ended", "lease_lost"):
                return state.value
            if state is RunState.PAUSING:
                checkpoint = self.save_checkpoint(engine)
                return self.end(
                    RunPaused(reason="paused at a step boundary", checkpoint=f"step {number}"),
                    checkpoint=checkpoint,
                )
            if time.monotonic() >= self.deadline:
                return self.budget_exceeded()
            number += 1
            self.emit(StepStarted(step=number, kind=engine.name), actor=Actor.WORKER)
            step_started = time.monotonic()
            try:
                result: StepResult = engine.step(number)
            except EngineInterrupted:
                if watchdog.reason == "budget":
                    return self.budget_exceeded()
                return self.state().value
            except EngineBudgetExhausted as exhausted:
                return self.engine_budget_exceeded(engine, exhausted)
            except EngineFailed as error:
                self.emit(
                    StepFailed(step=number, kind=engine.name, error=str(error)), actor=Actor.WORKER
                )
                return self.end(
                    RunFailed(reason=str(error), error_type="engine"), reason=str(error)
                )
            except Exception as error:
                log.exception("engine %s crashed on %s", engine.name, self.run_id)
                reason = f"the {engine.name} engine crashed: {type(error).__name__}: {error}"
                self.emit(
                    StepFailed(step=number, kind=engine.name, error=reason), actor=Actor.WORKER
                )
                return self.end(
                    RunFailed(reason=reason, error_type=type(error).__name__), reason=reason
                )
            self.emit(
                StepCompleted(
                    step=number,
                    kind=engine.name,
                    duration_ms=int((time.monotonic() - step_started) * 1000),
                ),
                actor=Actor.WORKER,
            )
            self.save_checkpoint(engine)
            if result.finished and engine.yields_to_pause and self.state() is RunState.PAUSING:
                continue  # the top of the loop pauses at this boundary
            if result.finished:
                answer = result.answer or ""
                return self.end(RunCompleted(answer_preview=answer[:500]))
