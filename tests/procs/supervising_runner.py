"""A stand-in runner for supervision tests: starts a supervised proc_tree.py, then idles.

usage: supervising_runner.py reaper|reaper-masked|plain GRACE_S PIDFILE [proc_tree args...]

reaper-masked blocks SIGHUP and SIGTERM in the runner first: children inherit the mask.

Prints the supervised child's pgid on stdout, then sleeps until the test SIGKILLs it.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from jobs.supervise import SupervisedProcess

TREE = Path(__file__).with_name("proc_tree.py")


def main() -> None:
    mode, grace_s, pidfile, *tree_args = sys.argv[1:]
    if mode == "reaper-masked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM})
    proc = SupervisedProcess.start(
        [sys.executable, "-I", str(TREE), pidfile, *tree_args],
        reaper=mode != "plain",
        parent_death_grace_s=float(grace_s),
    )
    print(proc.pgid, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
