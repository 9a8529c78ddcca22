"""The host ⇄ REPL channel: one JSON object per line over the REPL process's stdin/stdout.

Host → REPL:
  ``{"op": "exec", "id": N, "code": str, "max_output_chars": int}``   run one cell
  ``{"op": "reply", "id": M, "ok": true, "value": ...}``              answer a call
  ``{"op": "reply", "id": M, "ok": false, "error": str}``             refuse a call
  ``{"op": "shutdown"}``
REPL → host:
  ``{"op": "ready", "pid": int, "python": str}``                      once, at start
  ``{"op": "call", "id": M, "fn": str, "args": [...], "kwargs": {...}}``  during a cell
  ``{"op": "result", "id": N, "stdout": str, "stderr": str, "truncated": bool,
     "new_names": [str], "final": FinalAnswer | null, "error": str | null,
     "duration_ms": int}``                                            the cell ended

``fn`` is one of :data:`HOST_FUNCTIONS`. Every value is JSON. The REPL is stdlib-only and
runs inside the sandbox; the host never trusts anything it says beyond its shape.
A cell is interrupted by SIGINT to the REPL process (it reports ``error: "interrupted"``
and keeps its state); a REPL that does not answer is killed and rebuilt by replay.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

#: Functions the REPL may call on the host (exposed in the REPL under these names).
HOST_FUNCTIONS = frozenset(
    {
        "llm_query",
        "rlm_query",
        "write_artifact",
        "ask",
        "context.stats",
        "context.search",
        "context.peek",
        "context.read_chunk",
    }
)


class ReplProtocolError(Exception):
    """The REPL broke the protocol (a malformed or oversized line, an unexpected message).
    Nothing it said can be trusted any more: kill it and rebuild."""


class FinalAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """An answer set by executed code: ``FINAL(text)``, ``FINAL_VAR(name)`` or ``answer``."""

    value: str
    via: Literal["FINAL", "FINAL_VAR", "answer"]


class ExecRequest(msgspec.Struct, frozen=True, kw_only=True, tag="exec", tag_field="op"):
    id: int
    code: str
    max_output_chars: int = 20_000


class Reply(msgspec.Struct, frozen=True, kw_only=True, tag="reply", tag_field="op"):
    id: int
    ok: bool
    value: Any = None
    error: str | None = None


class Shutdown(msgspec.Struct, frozen=True, kw_only=True, tag="shutdown", tag_field="op"):
    pass


class Ready(msgspec.Struct, frozen=True, kw_only=True, tag="ready", tag_field="op"):
    pid: int
    python: str = ""


class Call(msgspec.Struct, frozen=True, kw_only=True, tag="call", tag_field="op"):
    id: int
    fn: str
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)


class CellResult(msgspec.Struct, frozen=True, kw_only=True, tag="result", tag_field="op"):
    id: int
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    new_names: list[str] = msgspec.field(default_factory=list)
    final: FinalAnswer | None = None
    error: str | None = None
    duration_ms: int = 0


HostMessage = ExecRequest | Reply | Shutdown
ReplMessage = Ready | Call | CellResult
