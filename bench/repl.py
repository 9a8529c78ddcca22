"""The sandboxed REPL's latencies: start-up, a small cell, a host call from inside a cell.

    .venv/bin/python bench/repl.py --json
    scripts/with_docker.sh .venv/bin/python bench/repl.py --json   # with a private engine

Figures (the local bubblewrap sandbox, exactly as runs get it: cgroups, staging, rlimits):
- ``local_cold_start_ms``: median time of ``LocalSandbox.start`` -- launcher, bwrap, the
  interpreter and the REPL server -- until the REPL said ``ready`` and was located.
- ``local_warm_cell_ms``: median round trip of a small cell (``x = 1``) through
  ``ReplDriver.run_cell``: exec request, run, result, decoded on the host.
- ``host_call_roundtrip_ms``: median time of one ``context.peek`` measured inside a cell (a
  loop of calls), the host answering at once: call line out, reply line back.

The docker sandbox, exactly as runs get it (same container options, the image
``app sandbox build-image`` builds -- built here first when missing):
- ``docker_cold_start_ms``: median time of ``DockerSandbox.start`` -- create the container,
  attach, start it, the interpreter and the REPL server -- until the REPL said ``ready``.
- ``docker_warm_cell_ms``: the same small cell as ``local_warm_cell_ms``, over the attach
  stream of a running container.
- ``reference_cell_ms``: the same cell run the reference implementation's way, measured in
  the same run: a fresh ``docker exec <container> python3 -c ...`` per cell (the ``docker``
  CLI, as the reference does) that loads the namespace from a pickle, runs the cell and
  pickles the namespace back, in a container with the same image and limits.
- ``docker_speedup_vs_reference``: ``reference_cell_ms / docker_warm_cell_ms``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.rlm.protocol import Call, Reply  # noqa: E402
from jobs.rlm.sandbox.base import SandboxLimits, SandboxUnavailable  # noqa: E402
from jobs.rlm.sandbox.docker import DockerSandbox  # noqa: E402
from jobs.rlm.sandbox.local import LocalSandbox, find_bwrap  # noqa: E402
from jobs.rlm.session import ReplDriver  # noqa: E402

TARGETS = {
    "local_cold_start_ms": "<= 150",
    "local_warm_cell_ms": "<= 10",
    "host_call_roundtrip_ms": "<= 5",
    "docker_cold_start_ms": "<= 800",
    "docker_warm_cell_ms": "<= 15",
    "docker_speedup_vs_reference": ">= 10",
}
CELL = "x = 1"
# The reference way: every cell a new process that un-pickles the namespace, runs the cell
# and pickles the namespace back (what cannot be pickled is dropped, as the reference does).
REFERENCE_CELL = """
import contextlib, io, pickle, sys
try:
    with open('/scratch/state.pkl', 'rb') as f:
        ns = pickle.load(f)
except FileNotFoundError:
    ns = {}
out = io.StringIO()
with contextlib.redirect_stdout(out):
    exec(sys.argv[1], ns)
keep = {}
for k, v in ns.items():
    try:
        pickle.dumps(v)
    except Exception:
        continue
    keep[k] = v
keep.pop('__builtins__', None)
with open('/scratch/state.pkl', 'wb') as f:
    pickle.dump(keep, f)
sys.stdout.write(out.getvalue())
"""

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


def bench_docker(run_dir: Path, starts: int, cells: int, reference_cells: int) -> dict[str, Any]:
    """The docker figures, or why there are none."""
    from jobs.rlm.sandbox.image import build_image

    sandbox = DockerSandbox()
    try:
        sandbox.preflight()
    except SandboxUnavailable as exc:
        if "app sandbox build-image" not in str(exc):
            return {"unavailable": str(exc)}
        build_image(sandbox.client, sandbox.image)
    cold = []
    for _ in range(starts):
        started = time.perf_counter()
        session = sandbox.start(run_dir=run_dir, limits=SandboxLimits(), label="bench")
        cold.append((time.perf_counter() - started) * 1000)
        session.kill()
    session = sandbox.start(run_dir=run_dir, limits=SandboxLimits(), label="bench")
    try:
        driver = ReplDriver(session)
        for _ in range(20):
            driver.run_cell(CELL, timeout_s=10, on_call=answer)
        warm = []
        for _ in range(cells):
            started = time.perf_counter()
            result = driver.run_cell(CELL, timeout_s=10, on_call=answer)
            warm.append((time.perf_counter() - started) * 1000)
            assert result.error is None, result
    finally:
        session.kill()
    reference, how = bench_reference(sandbox, run_dir, reference_cells)
    version = sandbox.client.version()
    return {
        "docker_cold_start_ms": round(statistics.median(cold), 2),
        "docker_warm_cell_ms": round(statistics.median(warm), 3),
        "reference_cell_ms": round(statistics.median(reference), 2),
        "reference_how": how,
        "engine": f"{version.get('Version')} ({sandbox.endpoint.describe()})",
        "image": sandbox.image,
    }


def bench_reference(sandbox: DockerSandbox, run_dir: Path, cells: int) -> tuple[list[float], str]:
    """``reference_cell_ms`` samples: a fresh ``docker exec python3`` per cell."""
    options = sandbox.container_options(run_dir=run_dir, limits=SandboxLimits(), label="reference")
    options["command"] = ["sleep", "infinity"]
    options["stdin_open"] = False
    client = sandbox.client
    host_config = client.api.create_host_config(**options.pop("host_config"))
    container = client.api.create_container(host_config=host_config, **options)["Id"]
    cli = shutil.which("docker")
    env = {**os.environ, "DOCKER_HOST": sandbox.endpoint.url}
    try:
        client.api.start(container)
        samples = []
        for index in range(cells + 3):
            started = time.perf_counter()
            if cli is not None:
                out = subprocess.run(
                    [cli, "exec", container, "python3", "-c", REFERENCE_CELL, CELL],
                    capture_output=True,
                    env=env,
                    check=True,
                ).returncode
            else:
                exec_id = client.api.exec_create(
                    container, ["python3", "-c", REFERENCE_CELL, CELL]
                )["Id"]
                client.api.exec_start(exec_id)
                out = client.api.exec_inspect(exec_id)["ExitCode"]
            if index >= 3:  # warm-up
                samples.append((time.perf_counter() - started) * 1000)
            assert out == 0
    finally:
        client.api.remove_container(container, force=True)
    return samples, "docker CLI exec" if cli else "docker SDK exec"


def main() -> None:
    """Run every figure and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke use)")
    parser.add_argument("--no-docker", action="store_true", help="local figures only")
    args = parser.parse_args()
    starts, cells, calls = (5, 50, 50) if args.quick else (20, 300, 200)
    reference_cells = 10 if args.quick else 40
    check = LocalSandbox.check()
    if not check.available:
        raise SystemExit(f"the local sandbox does not work here: {check.detail}")
    with tempfile.TemporaryDirectory(prefix="bench-repl-") as tmp:
        run_dir = Path(tmp) / "run"
        cold, isolation = bench_cold_start(run_dir, starts)
        warm, call = bench_warm(run_dir, cells, calls)
        docker = (
            {}
            if args.no_docker
            else bench_docker(Path(tmp) / "docker", starts, cells, reference_cells)
        )
    figures: dict[str, Any] = {
        "local_cold_start_ms": round(statistics.median(cold), 2),
        "local_warm_cell_ms": round(statistics.median(warm), 3),
        "host_call_roundtrip_ms": round(statistics.median(call), 3),
    }
    docker_params: dict[str, Any] = {}
    if "docker_warm_cell_ms" in docker:
        for key in ("docker_cold_start_ms", "docker_warm_cell_ms", "reference_cell_ms"):
            figures[key] = docker.pop(key)
        figures["docker_speedup_vs_reference"] = round(
            figures["reference_cell_ms"] / figures["docker_warm_cell_ms"], 1
        )
        docker_params = {**docker, "reference_cells": reference_cells}
    elif docker:
        docker_params = docker
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
            "docker": docker_params or "skipped (--no-docker)",
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
