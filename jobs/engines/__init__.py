"""Engines the run loop can drive: ``rlm`` (default), ``codex`` and the diagnostic ``echo``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.engines.base import Engine, EngineContext, EngineUnavailable


def create_engine(
    name: str, context: EngineContext, checkpoint: Mapping[str, Any] | None
) -> Engine:
    """Build the named engine for one attempt of a run; raises EngineUnavailable."""
    if name == "echo":
        from jobs.engines.echo import EchoEngine

        return EchoEngine(context, checkpoint)
    if name == "codex":
        try:
            from jobs.engines.codex import CodexEngine
        except ImportError:
            raise EngineUnavailable("the codex engine is not installed in this build") from None
        return CodexEngine(context, checkpoint)
    if name == "rlm":
        from jobs.engines.rlm import RlmEngine

        return RlmEngine(context, checkpoint)
    raise EngineUnavailable(f"unknown engine {name!r}; use rlm, codex or echo")


def engine_resumable(name: str) -> bool:
    """Whether runs of this engine continue from their checkpoint after a lost worker."""
    return name in ("echo", "codex", "rlm")
