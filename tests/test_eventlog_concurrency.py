"""Concurrent writers (threads and processes), a writer killed mid-stream, and the reconciler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.home import Home
from app.wire.events import Actor, StepStarted
from db.mirror import read_mirror
from db.runs import create_run
from db.store import Store, open_store
from tests.conftest import ROOT, subprocess_env

WRITER = str(ROOT / "tests" / "procs" / "append_events.py")


def assert_contiguous(store: Store, run_id: str, expected: int) -> None:
    seqs = [
        row[0]
        for row in store.db.execute_sql(
            "SELECT seq FROM event WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    ]
    assert seqs == list(range(1, expected + 1)), f"gaps or duplicates in {run_id}"
    assert store.log.last_seq(run_id) == expected


def spawn_writer(home: Home, count: int, *run_ids: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WRITER, str(home.root), str(count), *run_ids],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )


def test_threads_on_one_run_and_on_many(store: Store) -> None:
    shared = create_run(store.log, task="shared", engine="rlm", actor=Actor.CLI)
    own = [create_run(store.log, task=str(i), engine="rlm", actor=Actor.CLI) for i in range(6)]
    per_thread = 300

    def write(index: int) -> None:
        for step in range(per_thread):
            run_id = shared.id if step % 2 else own[index].id
            store.log.append(run_id, StepStarted(step=step, kind="thread"), actor=Actor.WORKER)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_contiguous(store, shared.id, 1 + 6 * per_thread // 2)
    for run in own:
        assert_contiguous(store, run.id, 1 + per_thread // 2)
    for run in [shared, *own]:
        # The mirror is exact without any reconcile: writers fill gaps in seq order.
        assert read_mirror(store.home.events_mirror(run.id)) == list(
            range(1, store.log.last_seq(run.id) + 1)
        )


def test_processes_and_threads_together(store: Store) -> None:
    shared = create_run(store.log, task="shared", engine="rlm", actor=Actor.CLI)
    own = [create_run(store.log, task=str(i), engine="rlm", actor=Actor.CLI) for i in range(3)]
    count = 600
    procs = [spawn_writer(store.home, count, shared.id, run.id) for run in own]

    def write() -> None:
        for step in range(count // 2):
            store.log.append(shared.id, StepStarted(step=step, kind="thread"), actor=Actor.WORKER)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.split() == ["ready", "done"]
    for thread in threads:
        thread.join()
    shared_total = 1 + 3 * count // 2 + 4 * count // 2
    assert_contiguous(store, shared.id, shared_total)
    for run in own:
        assert_contiguous(store, run.id, 1 + count // 2)
    for run in [shared, *own]:
        assert read_mirror(store.home.events_mirror(run.id)) == list(
            range(1, store.log.last_seq(run.id) + 1)
        )


def test_kill_9_of_a_writer_leaves_a_consistent_database_and_mirror(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    other = create_run(store.log, task="o", engine="rlm", actor=Actor.CLI)
    for attempt in range(3):
        proc = spawn_writer(store.home, 1_000_000, run.id, other.id)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + attempt * 0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout.read() == ""  # it never finished
    check = store.db.execute_sql("PRAGMA integrity_check").fetchone()[0]
    assert check == "ok"
    for run_id in (run.id, other.id):
        total = store.log.last_seq(run_id)
        assert total > 1
        assert_contiguous(store, run_id, total)
        mirrored = read_mirror(store.home.events_mirror(run_id))
        assert mirrored == list(range(1, len(mirrored) + 1)), "mirror is a prefix"
        assert len(mirrored) <= total, "mirror is never ahead"
    # A fresh process (as a restarted runner would be) reconciles the mirrors.
    reopened = open_store(store.home)
    try:
        reopened.log.reconcile()
        for run_id in (run.id, other.id):
            assert read_mirror(store.home.events_mirror(run_id)) == list(
                range(1, reopened.log.last_seq(run_id) + 1)
            )
        # And appends continue with no gap.
        reopened.log.append(run.id, StepStarted(step=0, kind="after"), actor=Actor.WORKER)
        assert_contiguous(reopened, run.id, reopened.log.last_seq(run.id))
    finally:
        reopened.close()


def _mirror(store: Store, run_id: str) -> Path:
    return store.home.events_mirror(run_id)


def test_reconcile_repairs_missing_truncated_torn_and_ahead_mirrors(store: Store) -> None:
    runs = [create_run(store.log, task=str(i), engine="rlm", actor=Actor.CLI) for i in range(4)]
    for run in runs:
        for step in range(9):
            store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
    missing, truncated, torn, ahead = runs
    _mirror(store, missing.id).unlink()
    lines = _mirror(store, truncated.id).read_bytes().splitlines(keepends=True)
    _mirror(store, truncated.id).write_bytes(b"".join(lines[:4]))
    with _mirror(store, torn.id).open("ab") as handle:
        handle.write(b'{"schema_version":1,"seq":11,"ts":"2026-')
    with _mirror(store, ahead.id).open("ab") as handle:
        handle.write(lines[0].replace(b'"seq":1,', b'"seq":11,'))
    store.log.mirror.close()  # drop cached descriptors, as a restarted process would not have them
    report = store.log.reconcile()
    assert sorted(report.mirrors_repaired) == sorted(run.id for run in runs)
    for run in runs:
        assert read_mirror(_mirror(store, run.id)) == list(range(1, 11))
        assert _mirror(store, run.id).read_bytes().endswith(b"\n")
    assert store.log.reconcile().mirrors_repaired == []


def test_verify_rewrites_a_damaged_middle(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    for step in range(5):
        store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
    path = _mirror(store, run.id)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[0], b"garbage\n", *lines[2:]]))
    assert store.log.reconcile(verify=True).mirrors_repaired == [run.id]
    assert read_mirror(path) == [1, 2, 3, 4, 5, 6]
    # Writers that cached the old file notice the replacement and keep appending in order.
    store.log.append(run.id, StepStarted(step=9, kind="k"), actor=Actor.WORKER)
    assert read_mirror(path) == [1, 2, 3, 4, 5, 6, 7]


def test_a_torn_line_is_cut_by_the_next_append(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    store.log.append(run.id, StepStarted(step=1, kind="k"), actor=Actor.WORKER)
    store.log.mirror.close()
    with _mirror(store, run.id).open("ab") as handle:
        handle.write(b'{"schema_version":1,"se')
    store.log.append(run.id, StepStarted(step=2, kind="k"), actor=Actor.WORKER)
    assert read_mirror(_mirror(store, run.id)) == [1, 2, 3]
