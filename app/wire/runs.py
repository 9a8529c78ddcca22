"""Wire types for runs."""

from __future__ import annotations

import msgspec


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A run as the API, the CLI and ``manifest.json`` show it."""

    id: str
    state: str
    engine: str
    task: str
    repo: str | None
    task_id: str | None
    parent_run_id: str | None
    created_at: str
    updated_at: str
    last_seq: int
    state_reason: str | None
