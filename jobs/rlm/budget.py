"""The budgets of one RLM run, shared by every level of its recursion and enforced by the host.

Every host call from a cell passes through :meth:`Budget.charge_subcall` or
:meth:`Budget.check_clock` before it does anything, so a cell that loops over ``llm_query``
is stopped at the limit *inside* the cell, not after it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jobs.engines.base import config_value


class BudgetExhausted(Exception):
    """A hard budget ran out."""

    def __init__(self, budget: str, limit: float, used: float) -> None:
        self.budget = budget
        self.limit = limit
        self.used = used
        super().__init__(f"budget exceeded: {budget} (limit {limit:g}, used {used:g})")


@dataclass
class Budget:
    """Limits and what has been used of them (across the whole recursion tree)."""

    max_iterations: int = 50
    max_subcalls: int = 200
    max_depth: int = 1
    wall_clock_s: float = 1800.0
    max_tokens: int = 0  # 0 = no limit
    max_usd: float = 0.0  # 0 = no limit
    iterations: int = 0
    subcalls: int = 0
    tokens: int = 0
    usd: float = 0.0
    #: Active seconds used before this attempt (the run may have been paused or resumed).
    elapsed_before_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    exhausted: BudgetExhausted | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_config(cls, config: Any) -> Budget:
        """Limits from the run's ``rlm.*`` config."""
        return cls(
            max_iterations=int(config_value(config, "rlm.max_iterations", 50)),
            max_subcalls=int(config_value(config, "rlm.max_subcalls", 200)),
            max_depth=int(config_value(config, "rlm.max_subcall_depth", 1)),
            wall_clock_s=int(config_value(config, "rlm.wall_clock_timeout_ms", 1_800_000)) / 1000,
            max_tokens=int(config_value(config, "rlm.budget_tokens", 0)),
            max_usd=float(config_value(config, "rlm.budget_usd", 0.0)),
        )

    def _fail(self, budget: str, limit: float, used: float) -> BudgetExhausted:
        error = BudgetExhausted(budget, limit, used)
        if self.exhausted is None:
            self.exhausted = error
        return error

    def elapsed_s(self) -> float:
        return self.elapsed_before_s + time.monotonic() - self.started

    def check_clock(self) -> None:
        """Raise when the wall-clock budget is used up (or another budget already ran out)."""
        if self.exhausted is not None:
            raise self.exhausted
        used = self.elapsed_s()
        if used >= self.wall_clock_s:
            raise self._fail("rlm.wall_clock_timeout_ms", self.wall_clock_s * 1000, used * 1000)

    def charge_iteration(self) -> None:
        """Count one root iteration; raise when none is left."""
        self.check_clock()
        with self._lock:
            if self.iterations >= self.max_iterations:
                raise self._fail("rlm.max_iterations", self.max_iterations, self.iterations)
            self.iterations += 1

    def charge_subcall(self) -> None:
        """Count one sub-model call anywhere in the tree; raise when none is left."""
        self.check_clock()
        with self._lock:
            if self.subcalls >= self.max_subcalls:
                raise self._fail("rlm.max_subcalls", self.max_subcalls, self.subcalls + 1)
            self.subcalls += 1

    def charge_usage(self, tokens: int, usd: float | None) -> None:
        """Add a call's usage; raise when a token or cost budget is now exceeded."""
        with self._lock:
            self.tokens += tokens
            self.usd += usd or 0.0
            if self.max_tokens and self.tokens > self.max_tokens:
                raise self._fail("rlm.budget_tokens", self.max_tokens, self.tokens)
            if self.max_usd and self.usd > self.max_usd:
                raise self._fail("rlm.budget_usd", self.max_usd, self.usd)

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint keeps."""
        return {
            "iterations": self.iterations,
            "subcalls": self.subcalls,
            "tokens": self.tokens,
            "usd": self.usd,
            "elapsed_s": self.elapsed_s(),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue counting from a checkpoint."""
        self.iterations = int(saved.get("iterations", 0))
        self.subcalls = int(saved.get("subcalls", 0))
        self.tokens = int(saved.get("tokens", 0))
        self.usd = float(saved.get("usd", 0.0))
        self.elapsed_before_s = float(saved.get("elapsed_s", 0.0))
        self.started = time.monotonic()
