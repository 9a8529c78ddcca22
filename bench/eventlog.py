"""Event-log throughput, measured against plain sqlite3 on the same schema in the same run.

    .venv/bin/python bench/eventlog.py --json

Figures (events/s are durable commits: one transaction per event unless batched):
- ``single_writer_eps``: one thread through ``EventLog.append`` (seq, redaction, mirror).
- ``raw_sqlite_single_writer_eps``: the same rows and transactions with plain ``sqlite3``.
- ``four_process_eps`` / ``four_process_shared_run_eps``: 4 writer processes on 4 runs / on one
  shared run, aggregate; ``four_process_gaps``: missing or duplicate seqs over both (must be 0).
- ``batched_eps``: ``EventLog.append_many`` with 1,000 events per transaction.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.home import Home  # noqa: E402
from app.wire.events import Actor, StepStarted  # noqa: E402
from db.connection import raw_connection  # noqa: E402
from db.runs import create_run  # noqa: E402
from db.store import open_store  # noqa: E402

TARGETS = {
    "single_writer_eps": ">= 10000",
    "single_writer_vs_raw": ">= 0.33",
    "four_process_eps": ">= 5000",
    "four_process_gaps": "== 0",
    "batched_eps": ">= 50000",
}


def bench_single_writer(base: Path, count: int) -> float:
    store = open_store(Home(base / "single"))
    run = create_run(store.log, task="bench", engine="rlm", actor=Actor.CLI)
    payloads = [StepStarted(step=i, kind="bench") for i in range(count)]
    started = time.perf_counter()
    for payload in payloads:
        store.log.append(run.id, payload, actor=Actor.WORKER)
    elapsed = time.perf_counter() - started
    store.close()
    return count / elapsed


def bench_raw_sqlite(base: Path, count: int) -> float:
    """The baseline: the same schema (migrated), rows and per-event transactions, plain sqlite3."""
    store = open_store(Home(base / "raw"))
    run = create_run(store.log, task="bench", engine="rlm", actor=Actor.CLI)
    store.close()
    conn = sqlite3.connect(str(base / "raw" / "app.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=1")
    payload = '{"step":0,"kind":"bench"}'
    started = time.perf_counter()
    for _ in range(count):
        conn.execute("BEGIN IMMEDIATE")
        seq = conn.execute(
            "UPDATE run SET last_seq = last_seq + 1, updated_at = ? WHERE id = ?"
            " RETURNING last_seq, task_id, parent_run_id",
            ("2026-01-01T00:00:00.000Z", run.id),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO event (run_id, seq, ts, type, actor, payload) VALUES (?, ?, ?, ?, ?, ?)",
            (run.id, seq, "2026-01-01T00:00:00.000Z", "step_started", "worker", payload),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def bench_batched(base: Path, count: int, batch: int = 1000) -> float:
    store = open_store(Home(base / "batched"))
    run = create_run(store.log, task="bench", engine="rlm", actor=Actor.CLI)
    items = [(run.id, StepStarted(step=i, kind="bench"), Actor.WORKER) for i in range(count)]
    started = time.perf_counter()
    for offset in range(0, count, batch):
        store.log.append_many(items[offset : offset + batch])
    elapsed = time.perf_counter() - started
    store.close()
    return count / elapsed


def bench_processes(base: Path, name: str, per_process: int, shared: bool) -> tuple[float, int]:
    """Run 4 writer processes; return (aggregate events/s, gaps + duplicates)."""
    home = Home(base / name)
    store = open_store(home)
    if shared:
        run_id = create_run(store.log, task="shared", engine="rlm", actor=Actor.CLI).id
        targets = [[run_id]] * 4
    else:
        targets = [
            [create_run(store.log, task=str(i), engine="rlm", actor=Actor.CLI).id] for i in range(4)
        ]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--writer", str(home.root), str(per_process), *run_ids],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for run_ids in targets
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"writer process failed with exit code {proc.returncode}")
    elapsed = time.perf_counter() - started
    problems = 0
    for run_id in {rid for run_ids in targets for rid in run_ids}:
        count, distinct, top = (
            raw_connection(store.db)
            .execute(
                "SELECT count(*), count(DISTINCT seq), max(seq) FROM event WHERE run_id = ?",
                (run_id,),
            )
            .fetchone()
        )
        problems += (top - distinct) + (count - distinct)
    store.close()
    return 4 * per_process / elapsed, problems


def writer_main(home: str, count: int, run_ids: list[str]) -> None:
    """One writer process of :func:`bench_processes`."""
    store = open_store(Home(Path(home)), auto_migrate=False)
    payloads = [StepStarted(step=i, kind="bench") for i in range(count)]
    print("ready", flush=True)
    sys.stdin.readline()
    for index, payload in enumerate(payloads):
        store.log.append(run_ids[index % len(run_ids)], payload, actor=Actor.WORKER)
    store.close()


def main() -> None:
    """Run every figure and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--events", type=int, default=20_000, help="events per single-writer figure"
    )
    parser.add_argument("--writer", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer_main(args.writer[0], int(args.writer[1]), args.writer[2:])
        return
    with tempfile.TemporaryDirectory(prefix="bench-eventlog-") as tmp:
        base = Path(tmp)
        raw = bench_raw_sqlite(base, args.events)
        single = bench_single_writer(base, args.events)
        batched = bench_batched(base, args.events * 5)
        per_process = max(1000, args.events // 4)
        four_runs, gaps_a = bench_processes(base, "four-runs", per_process, shared=False)
        four_shared, gaps_b = bench_processes(base, "four-shared", per_process, shared=True)
    figures = {
        "single_writer_eps": round(single),
        "raw_sqlite_single_writer_eps": round(raw),
        "single_writer_vs_raw": round(single / raw, 3),
        "four_process_eps": round(four_runs),
        "four_process_shared_run_eps": round(four_shared),
        "four_process_gaps": gaps_a + gaps_b,
        "batched_eps": round(batched),
    }
    result = {
        "bench": "eventlog",
        "figures": figures,
        "targets": TARGETS,
        "params": {"events": args.events, "per_process": per_process, "batch": 1000},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
