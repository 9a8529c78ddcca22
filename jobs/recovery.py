"""Recovering runs whose worker was lost: at start-up and then on a timer."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable

from db.eventlog import EventLog
from jobs.leases import Recovered, sweep_expired

log = logging.getLogger(__name__)


def recover(
    log_: EventLog, *, own_owner: str | None = None, dead_owner: str | None = None
) -> list[Recovered]:
    """Interrupt (then re-queue or fail) orphaned runs and kill what their engines left.

    ``own_owner``'s runs are left alone (they are ours and alive); ``dead_owner``'s are
    recovered whatever their lease says (a runner handing its runs back as it exits).
    """
    recovered = sweep_expired(log_, ignore_owner=own_owner, dead_owner=dead_owner)
    for item in recovered:
        log.warning("run %s was orphaned: %s", item.run_id, item.action)
        if item.engine_pgid:
            kill_orphaned_group(item.engine_pgid)
    sweep_sandbox_containers(log_)
    return recovered


def kill_orphaned_group(pgid: int) -> None:
    """Kill a process group a lost worker's engine left behind (it has no parent to stop it)."""
    try:
        from jobs.supervise import kill_group
    except ImportError:  # pragma: no cover - supervise ships with jobs
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        return
    kill_group(pgid, grace_s=1.0)


# -- docker sandbox containers ---------------------------------------------------------------


def sweep_sandbox_containers(log_: EventLog) -> list[str]:
    """Remove the docker sandbox's containers whose run is no longer running, or whose runner
    died (``jobs.rlm.sandbox.docker.sweep_containers``). Free without a Docker engine; never
    raises: a failed sweep is retried on the next timer tick."""
    try:
        from jobs.rlm.sandbox.docker import sweep_containers

        removed = sweep_containers(lambda run_id: _run_state(log_, run_id))
    except Exception as error:  # the engine went away, ...: the next tick tries again
        log.warning("sweeping sandbox containers failed: %s", error)
        return []
    for name in removed:
        log.warning("removed sandbox container %s: its run is over or its runner is gone", name)
    return removed


def _run_state(log_: EventLog, run_id: str) -> str | None:
    from db.eventlog import UnknownRun
    from db.runs import get_run

    try:
        return str(get_run(log_, run_id).state)
    except UnknownRun:
        return None


class RecoveryLoop:
    """A daemon thread calling :func:`recover` (and ``also``) every ``interval_s``."""

    def __init__(
        self,
        log_: EventLog,
        *,
        own_owner: str,
        interval_s: float,
        also: Callable[[], object] | None = None,
    ) -> None:
        self._log = log_
        self._also = also
        self._owner = own_owner
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the timer (the first sweep is the caller's, at start-up)."""
        self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                recover(self._log, own_owner=self._owner)
                if self._also is not None:
                    self._also()
            except Exception:
                log.exception("recovery sweep failed")
