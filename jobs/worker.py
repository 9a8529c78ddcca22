"""`app worker`: a stand-alone queue consumer for the same home (or a shared queue backend).

It executes runs exactly as the runner's in-process consumer does (the same run loop and
leases); its events reach the runner's live streams through the database. On SIGINT or
SIGTERM it stops taking work and hands the runs it held back to the queue.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TextIO

from app.config import ConfigError, resolve_config
from app.home import Home
from app.logs import configure_logging
from db.store import open_store
from db.watcher import DataVersionWatcher
from jobs.leases import new_owner_id
from jobs.queue import QueueConfigError, RunQueue, build_huey
from jobs.recovery import recover
from jobs.runloop import WorkerContext, execute_run


def run_worker(
    home: Home,
    *,
    workers: int | None = None,
    stop: threading.Event | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Consume the queue until SIGINT/SIGTERM (or ``stop``); return an exit code."""
    try:
        config = resolve_config()
        huey = build_huey(home, config.get("queue.backend"), config.get("queue.url"))
    except (ConfigError, QueueConfigError) as error:
        print(f"app worker: {error}", file=sys.stderr)
        return 2
    configure_logging(config.get("log.level"))
    count = workers if workers is not None else max(int(config.get("queue.workers")), 1)
    store = open_store(
        home,
        synchronous=config.get("db.synchronous"),
        busy_timeout_ms=config.get("db.busy_timeout_ms"),
    )
    context = WorkerContext(
        log=store.log, owner=new_owner_id(), lease_ttl_s=float(config.get("runner.lease_ttl_s"))
    )
    queue = RunQueue(huey, lambda run_id: execute_run(context, run_id))
    watcher = (
        DataVersionWatcher(home.queue_db_path, queue.wake.set)
        if config.get("queue.backend") == "sqlite"
        else None
    )
    stop = stop or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
    print(f"worker {context.owner}: {count} threads on {home.root}", file=out, flush=True)
    try:
        if watcher is not None:
            watcher.start()
        queue.run_consumer_forever(count, stop)
    finally:
        if watcher is not None:
            watcher.stop()
        recover(store.log, dead_owner=context.owner)
        store.close()
        if previous is not None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print("worker stopped", file=out, flush=True)
    return 0
