"""The sandboxed REPL's latencies: start-up, a small cell, a host call from inside a cell.

    .venv/bin/python bench/repl.py --json

Figures (the local bubblewrap sandbox, exactly as runs get it: cgroups, staging, rlimits):
- ``local_cold_start_ms``: median time of ``LocalSandbox.start`` -- launcher, bwrap, the
  interpreter and the REPL server -- until the REPL said ``ready`` and was located.
- ``local_warm_cell_ms``: median round trip of a small cell (``x = 1``) through
  ``ReplDriver.run_cell``: exec request, run, result, decoded on the host.
- ``host_call_roundtrip_ms``: median time of one ``context.peek`` measured inside a cell (a
  loop of calls), the host answering at once: call line out, reply line back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.rlm.protocol import Call, Reply  # noqa: E402
from jobs.rlm.sandbox.base import SandboxLimits  # noqa: E402
from jobs.rlm.sandbox.local import LocalSandbox, find_bwrap  # noqa: E402
from jobs.rlm.session import ReplDriver  # noqa: E402

TARGETS = {
    "local_cold_start_ms": "<= 150",
    "local_warm_cell_ms": "<= 10",
    "host_call_roundtrip_ms": "<= 5",
}

PEEK_LOOP = """
import time
_times = []
for _ in range({calls}):
    _t = time.perf_counter()
    context.peek('src/app.py', 200)
    _times.append(time.perf_counter() - _t)
_times.sort()
print(_times[len(_times) // 2] * 1000)
"""


def answer(call: Call) -> Reply:
    """The host: answers every call at once with a small payload."""
    return Reply(id=call.id, ok=True, value="x" * 200)


def bench_cold_start(run_dir: Path, starts: int) -> tuple[list[float], str]:
    sandbox = LocalSandbox()
    samples: list[float] = []
    detail = ""
    for _ in range(starts):
        started = time.perf_counter()
        session = sandbox.start(run_dir=run_dir, limits=SandboxLimits(), label="bench")
        samples.append((time.perf_counter() - started) * 1000)
        detail = session.cgroups.describe() if session.cgroups else "rlimits only"
        session.kill()
    return samples, detail


def bench_warm(run_dir: Path, cells: int, calls: int) -> tuple[list[float], list[float]]:
    session = LocalSandbox().start(run_dir=run_dir, limits=SandboxLimits(), label="bench")
    try:
        driver = ReplDriver(session)
        for _ in range(20):  # warm-up
            driver.run_cell("x = 1", timeout_s=10, on_call=answer)
        cell_samples = []
        for _ in range(cells):
            started = time.perf_counter()
            result = driver.run_cell("x = 1", timeout_s=10, on_call=answer)
            cell_samples.append((time.perf_counter() - started) * 1000)
            assert result.error is None, result
        call_samples = []
        for _ in range(5):
            result = driver.run_cell(PEEK_LOOP.format(calls=calls), timeout_s=60, on_call=answer)
            assert result.error is None, result
            call_samples.append(float(result.stdout))
        return cell_samples, call_samples
    finally:
        session.kill()


def main() -> None:
    """Run every figure and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke use)")
    args = parser.parse_args()
    starts, cells, calls = (5, 50, 50) if args.quick else (20, 300, 200)
    check = LocalSandbox.check()
    if not check.available:
        raise SystemExit(f"the local sandbox does not work here: {check.detail}")
    with tempfile.TemporaryDirectory(prefix="bench-repl-") as tmp:
        run_dir = Path(tmp) / "run"
        cold, isolation = bench_cold_start(run_dir, starts)
        warm, call = bench_warm(run_dir, cells, calls)
    figures = {
        "local_cold_start_ms": round(statistics.median(cold), 2),
        "local_warm_cell_ms": round(statistics.median(warm), 3),
        "host_call_roundtrip_ms": round(statistics.median(call), 3),
    }
    result = {
        "bench": "repl",
        "figures": figures,
        "targets": TARGETS,
        "params": {
            "starts": starts,
            "cells": cells,
            "calls_per_cell": calls,
            "sandbox_python": LocalSandbox().python,
            "limits": "SandboxLimits() defaults",
            "resource_control": isolation,
            "runner_is_root": os.geteuid() == 0,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "bwrap": find_bwrap(),
            "kernel": platform.release(),
            "load_1m": round(os.getloadavg()[0], 2),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
