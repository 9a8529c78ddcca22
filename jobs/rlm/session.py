"""Host side of one REPL: run a cell, answer its calls, enforce the per-cell timeout.

The sandbox gives a :class:`~jobs.rlm.sandbox.base.ReplSession`; :class:`ReplDriver` runs
cells on it::

    driver = ReplDriver(session, max_output_chars=cfg.get("rlm.max_output_chars"))
    result = driver.run_cell(code, timeout_s=60, on_call=answer)  # answer(Call) -> Reply

* ``on_call`` is the engine: it enforces every budget and returns ``Reply(ok=False,
  error=...)`` to refuse, which raises ``HostError`` with that message inside the cell. The
  driver refuses on its own a ``fn`` outside :data:`~jobs.rlm.protocol.HOST_FUNCTIONS`,
  without calling ``on_call``. If ``on_call`` raises, the REPL is killed (it is blocked in a
  call that will never be answered) and the exception propagates.
* The timeout counts the REPL's own time only: time spent inside ``on_call`` (a sub-model
  answering) is added back to the deadline; run-wide budgets bound that.
* On timeout the cell is interrupted (SIGINT: ``KeyboardInterrupt`` in the cell, state kept)
  and the result says so; if it has not answered ``interrupt_grace_s`` later (the cell ignores
  or blocks SIGINT, or is stuck in C code), the REPL is killed and the result says its state is
  lost. The REPL dying during a cell (OOM kill, CPU limit, ``os._exit``) also gives a result,
  with ``error`` saying so. After either, ``session.alive`` is False: start a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from jobs.rlm.protocol import (
    HOST_FUNCTIONS,
    Call,
    CellResult,
    ExecRequest,
    Ready,
    ReplProtocolError,
    Reply,
)
from jobs.rlm.sandbox.base import ReplSession

__all__ = ["ERROR_INTERRUPTED", "ReplDriver", "timeout_error"]

#: ``CellResult.error`` of a cell interrupted by SIGINT (from the REPL).
ERROR_INTERRUPTED = "interrupted"
DEFAULT_INTERRUPT_GRACE_S = 2.0

OnCall = Callable[[Call], Reply]


def timeout_error(timeout_s: float, *, killed: bool) -> str:
    """The ``error`` of a cell that ran out of time."""
    if killed:
        return (
            f"timeout: the cell ran longer than {timeout_s:g}s and did not stop when "
            "interrupted; the REPL was killed and its state is lost"
        )
    return f"timeout: the cell ran longer than {timeout_s:g}s and was interrupted"


class ReplDriver:
    """Runs cells, one at a time, on a live REPL session."""

    def __init__(
        self,
        session: ReplSession,
        *,
        max_output_chars: int = 20_000,
        interrupt_grace_s: float = DEFAULT_INTERRUPT_GRACE_S,
    ) -> None:
        self.session = session
        self.max_output_chars = max_output_chars
        self.interrupt_grace_s = interrupt_grace_s
        self._next_id = 0

    def run_cell(self, code: str, *, timeout_s: float, on_call: OnCall) -> CellResult:
        """Run ``code`` as one cell and return its result (see the module doc)."""
        self._next_id += 1
        cell_id = self._next_id
        try:
            self.session.send(
                ExecRequest(id=cell_id, code=code, max_output_chars=self.max_output_chars)
            )
        except EOFError as exc:
            return self._died(cell_id, exc)
        deadline = time.monotonic() + timeout_s
        interrupted_at: float | None = None
        while True:
            now = time.monotonic()
            if interrupted_at is None and now >= deadline:
                self.session.interrupt()
                interrupted_at = now
            if interrupted_at is not None and now >= interrupted_at + self.interrupt_grace_s:
                self.session.kill()
                return CellResult(id=cell_id, error=timeout_error(timeout_s, killed=True))
            wait = (
                deadline - now
                if interrupted_at is None
                else interrupted_at + self.interrupt_grace_s - now
            )
            try:
                message = self.session.receive(max(wait, 0.0))
            except EOFError as exc:
                return self._died(cell_id, exc)
            except ReplProtocolError:
                self.session.kill()
                raise
            if message is None:
                continue
            if isinstance(message, CellResult):
                if message.id != cell_id:
                    continue  # not this cell's: ignore it
                if interrupted_at is not None and message.error == ERROR_INTERRUPTED:
                    return msgspec.structs.replace(
                        message, error=timeout_error(timeout_s, killed=False)
                    )
                return message
            if isinstance(message, Ready):
                self.session.kill()
                raise ReplProtocolError("the REPL said `ready` in the middle of a cell")
            started = time.monotonic()
            reply = self._answer(message, on_call, timed_out=interrupted_at is not None)
            try:
                self.session.send(reply)
            except EOFError as exc:
                return self._died(cell_id, exc)
            spent = time.monotonic() - started
            deadline += spent
            if interrupted_at is not None:
                interrupted_at += spent

    def _answer(self, call: Call, on_call: OnCall, *, timed_out: bool) -> Reply:
        if call.fn not in HOST_FUNCTIONS:
            return Reply(id=call.id, ok=False, error=f"{call.fn!r} is not a host function")
        if timed_out:
            return Reply(id=call.id, ok=False, error="the cell ran out of time")
        try:
            reply = on_call(call)
        except BaseException:
            self.session.kill()
            raise
        if reply.id != call.id:
            reply = msgspec.structs.replace(reply, id=call.id)
        return reply

    def _died(self, cell_id: int, exc: BaseException) -> CellResult:
        self.session.kill()
        return CellResult(
            id=cell_id, error=f"the REPL died during the cell ({exc}); its state is lost"
        )
