"""Security violations a client refused on the runner's behalf (the MCP server's refusals).

The MCP server cannot write the database, so it reports what it refused here; the runner
writes the ``security_violation`` event itself, composing its text from the report's
fields only (a kind from a fixed list, a tool name, JSON paths), so a model cannot put
words into the event log through a refused call.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from app.api.routing import access
from app.api.security import Principal
from app.runtime import Runtime
from app.wire.api import Request
from app.wire.events import SecurityViolation
from db.eventlog import UnknownRun

log = logging.getLogger(__name__)

ToolName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
JsonPath = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
_KIND_TEXT = {
    "secret_argument": "a tool call carried secret-looking arguments",
    "profile_forbidden": "a tool outside the caller's profile was called",
}


class ViolationReport(Request, frozen=True):
    kind: Literal["secret_argument", "profile_forbidden"]
    tool: ToolName
    paths: Annotated[list[JsonPath], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class ViolationRecorded(msgspec.Struct, frozen=True, kw_only=True):
    #: The run the event was written to (None: no run applied; the runner logged it).
    run_id: str | None
    recorded: bool


class ViolationsController(Controller):
    """``POST /api/security-violations``."""

    tags = ["security"]

    @post(
        "/api/security-violations",
        sync_to_thread=True,
        status_code=201,
        **access(("control", "delegate"), has_body=True),
    )
    def report(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        data: JSONBody[ViolationReport],
    ) -> ViolationRecorded:
        """Record a refused tool call: on a delegate's own run, or on ``run_id`` for the
        control token (logged only when there is no such run)."""
        run_id = principal.run_id if principal.kind == "delegate" else data.run_id
        where = ", ".join(data.paths) if data.paths else "-"
        detail = f"{_KIND_TEXT[data.kind]}: tool {data.tool}, arguments at {where}"
        if run_id is None:
            log.warning("security violation (no run): %s", detail)
            return ViolationRecorded(run_id=None, recorded=False)
        try:
            runtime.store.log.append(
                run_id,
                SecurityViolation(kind=data.kind, detail=detail, tool=data.tool),
                actor=principal.actor,
            )
        except UnknownRun:
            log.warning("security violation (unknown run %s): %s", run_id, detail)
            return ViolationRecorded(run_id=None, recorded=False)
        return ViolationRecorded(run_id=run_id, recorded=True)
