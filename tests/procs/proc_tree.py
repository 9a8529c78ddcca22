"""A process tree for supervision tests: this process (the leader) forks sleeping grandchildren.

usage: proc_tree.py PIDFILE [--children N] [--ignore-term] [--escape setpgid|setsid]
                            [--leader-exit CODE] [--print]

Writes "LEADER GRANDCHILD ..." to PIDFILE (atomically) once every grandchild exists; with
--escape one extra grandchild moves to a new process group (setpgid) or session (setsid) and
its pid is written last. --ignore-term makes the leader and every grandchild ignore SIGTERM.
--leader-exit makes the leader exit with CODE after writing the pids, leaving the grandchildren.
--print also prints "ready" on stdout (inherited by the grandchildren, who keep it open).
Only the standard library: it starts fast and runs under `python -I`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def _sleep_forever() -> None:
    while True:
        time.sleep(60)


def _fork(escape: str | None = None) -> int:
    # The pidfile promises that the escape has happened: wait for the child to report it.
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if escape == "setpgid":
                os.setpgid(0, 0)
            elif escape == "setsid":
                os.setsid()
            os.write(ready_w, b"1")
            _sleep_forever()
        finally:
            os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pidfile", type=Path)
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--escape", choices=["setpgid", "setsid"])
    parser.add_argument("--leader-exit", type=int)
    parser.add_argument("--print", action="store_true")
    args = parser.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the forked grandchildren
    pids = [os.getpid()] + [_fork() for _ in range(args.children)]
    if args.escape:
        pids.append(_fork(args.escape))
    tmp = args.pidfile.with_suffix(".tmp")
    tmp.write_text(" ".join(map(str, pids)) + "\n")
    tmp.rename(args.pidfile)
    if args.print:
        print("ready", flush=True)
    if args.leader_exit is not None:
        sys.exit(args.leader_exit)
    _sleep_forever()


if __name__ == "__main__":
    main()
