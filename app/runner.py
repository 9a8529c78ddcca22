"""The runner process: owns the home, its database and its run files while it is up.

Only one runner may own a home at a time; an exclusive ``flock`` on ``runner.lock`` enforces
it (the kernel drops the lock when the process dies, so a crashed runner never blocks the
next one). Start-up applies migrations and re-syncs every ``events.jsonl`` from the database.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from app.home import Home


class RunnerAlreadyUp(RuntimeError):
    """Another live process holds this home's runner lock."""


@contextmanager
def runner_lock(home: Home) -> Iterator[None]:
    """Hold the home's runner lock for the duration of the block, or raise RunnerAlreadyUp."""
    home.ensure()
    fd = os.open(home.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunnerAlreadyUp(
                f"a runner (pid {holder}) already owns {home.root}; stop it or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def serve(
    home: Home,
    *,
    host: str | None = None,
    port: int | None = None,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
) -> int:
    """Run the headless runner until SIGINT/SIGTERM (or ``stop`` is set); return an exit code."""
    from app.config import ConfigError, resolve_config
    from db.store import open_store

    try:
        config = resolve_config()
    except ConfigError as error:
        print(f"app serve: {error}", file=sys.stderr)
        return 2
    stop = stop or threading.Event()
    try:
        with runner_lock(home):
            store = open_store(
                home,
                synchronous=config.get("db.synchronous"),
                busy_timeout_ms=config.get("db.busy_timeout_ms"),
            )
            try:
                report = store.log.reconcile()
                print(f"codex-delegation runner (pid {os.getpid()})", file=out)
                print(f"home: {home.root}", file=out)
                print(f"database: {home.db_path}", file=out)
                print(
                    f"event mirrors: {report.runs_checked} runs checked, "
                    f"{len(report.mirrors_repaired)} repaired",
                    file=out,
                )
                print(
                    "The HTTP API and UI are not served yet (they land with the Control plane "
                    "issue). Press Ctrl-C to stop.",
                    file=out,
                    flush=True,
                )
                _wait_for_stop(stop)
            finally:
                store.close()
    except RunnerAlreadyUp as error:
        print(f"app serve: {error}", file=sys.stderr)
        return 1
    print("runner stopped", file=out, flush=True)
    return 0


def _wait_for_stop(stop: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    else:
        stop.wait()
