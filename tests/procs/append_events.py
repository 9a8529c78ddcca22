"""A writer process for concurrency tests: appends events to runs through the real event log.

usage: append_events.py HOME COUNT RUN_ID [RUN_ID ...]
Appends COUNT events round-robin over the runs, printing "ready" first and "done" last.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.home import Home
from app.wire.events import Actor, StepStarted
from db.store import open_store


def main() -> None:
    home, count, run_ids = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    store = open_store(Home(home), auto_migrate=False)
    print("ready", flush=True)
    for index in range(count):
        run_id = run_ids[index % len(run_ids)]
        store.log.append(run_id, StepStarted(step=index, kind="proc"), actor=Actor.WORKER)
    print("done", flush=True)
    store.close()


if __name__ == "__main__":
    main()
