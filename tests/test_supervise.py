"""Process supervision with real processes: cancel, escalation, runner crash, threads, timing.

Every test registers what it starts with the ``cleanup`` fixture, whose finalizer kills the
groups and stray pids even when the test fails, so no process outlives the test run.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobs.supervise import (
    SupervisedProcess,
    SupervisionError,
    _parse_stat,
    _reaper_command,
    kill_group,
    processes_in_group,
    processes_in_session,
)
from tests.conftest import subprocess_env

PROCS = Path(__file__).parent / "procs"
TREE = PROCS / "proc_tree.py"
RUNNER = PROCS / "supervising_runner.py"
BOTH_MODES = pytest.mark.parametrize("reaper", [True, False], ids=["reaper", "plain"])


def alive(pid: int) -> bool:
    """A pid names a live process: it exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def wait_for_pids(path: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)
    return [int(pid) for pid in path.read_text().split()]


def wait_dead(pids: list[int], timeout: float) -> float:
    """Seconds until none of ``pids`` is alive; fails the test after ``timeout``."""
    start = time.monotonic()
    while any(alive(pid) for pid in pids):
        assert time.monotonic() - start < timeout, [p for p in pids if alive(p)]
        time.sleep(0.005)
    return time.monotonic() - start


@dataclass
class Cleanup:
    procs: list[SupervisedProcess[Any]] = field(default_factory=list)
    pgids: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    popens: list[subprocess.Popen[Any]] = field(default_factory=list)

    def finish(self) -> None:
        for popen in self.popens:
            popen.kill()
            popen.wait()
        for proc in self.procs:
            with contextlib.suppress(SupervisionError):
                proc.terminate_group(0.2)
        for pgid in self.pgids:
            with contextlib.suppress(SupervisionError, ValueError):
                kill_group(pgid, 0.2)
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    tracker = Cleanup()
    try:
        yield tracker
    finally:
        tracker.finish()


def start_tree(
    cleanup: Cleanup, pidfile: Path, *tree_args: str, reaper: bool = True, **kwargs: Any
) -> tuple[SupervisedProcess[Any], list[int]]:
    """Start proc_tree.py supervised; return it and its pids (leader first)."""
    proc = SupervisedProcess.start(
        [sys.executable, "-I", str(TREE), str(pidfile), *tree_args], reaper=reaper, **kwargs
    )
    cleanup.procs.append(proc)
    pids = wait_for_pids(pidfile)
    cleanup.pids.extend(pids)
    return proc, pids


# -- 1. cancel kills the child and its grandchildren --------------------------------------------


@BOTH_MODES
def test_terminate_group_kills_child_and_grandchildren(
    cleanup: Cleanup, tmp_path: Path, reaper: bool
) -> None:
    proc, pids = start_tree(cleanup, tmp_path / "pids", "--children", "3", reaper=reaper)
    assert len(pids) == 4
    assert proc.pgid == proc.pid == os.getpgid(pids[0]) == os.getsid(pids[0])
    assert set(pids) <= set(processes_in_group(proc.pgid))
    assert proc.group_alive()
    assert proc.poll() is None

    assert proc.terminate_group(2.0) == -signal.SIGTERM
    assert processes_in_group(proc.pgid) == []
    assert not proc.group_alive()
    assert not any(alive(pid) for pid in [proc.pid, *pids])


def test_setpgid_escape_is_swept_setsid_escape_is_not(cleanup: Cleanup, tmp_path: Path) -> None:
    # Same session, other group (job-control shells): found through the session id.
    proc, pids = start_tree(cleanup, tmp_path / "a", "--children", "1", "--escape", "setpgid")
    escaped = pids[-1]
    assert os.getpgid(escaped) != proc.pgid
    assert escaped in processes_in_session(proc.pgid)
    proc.terminate_group(2.0)
    assert not alive(escaped)

    # A new session leaves every trace we follow: the documented limit (PID namespaces close it).
    proc, pids = start_tree(cleanup, tmp_path / "b", "--children", "1", "--escape", "setsid")
    escaped = pids[-1]
    proc.terminate_group(2.0)
    assert processes_in_group(proc.pgid) == []
    assert alive(escaped)  # the cleanup fixture kills it


# -- 2. SIGTERM ignored: escalation to SIGKILL ---------------------------------------------------


@BOTH_MODES
def test_sigterm_ignoring_tree_is_killed_after_grace(
    cleanup: Cleanup, tmp_path: Path, reaper: bool
) -> None:
    grace = 0.5
    proc, pids = start_tree(
        cleanup, tmp_path / "pids", "--children", "2", "--ignore-term", reaper=reaper
    )
    start = time.monotonic()
    code = proc.terminate_group(grace)
    elapsed = time.monotonic() - start

    assert code == -signal.SIGKILL
    assert grace <= elapsed < grace + 1.0
    assert processes_in_group(proc.pgid) == []
    assert not any(alive(pid) for pid in pids)


# -- 3. runner crash -----------------------------------------------------------------------------


def start_runner(cleanup: Cleanup, mode: str, grace: float, pidfile: Path, *tree_args: str) -> Any:
    runner = subprocess.Popen(
        [sys.executable, str(RUNNER), mode, str(grace), str(pidfile), *tree_args],
        stdout=subprocess.PIPE,
        env=subprocess_env(),
        start_new_session=True,  # a stray signal to our group must not reach it
    )
    cleanup.popens.append(runner)
    assert runner.stdout is not None
    pgid = int(runner.stdout.readline())
    cleanup.pgids.append(pgid)
    pids = wait_for_pids(pidfile)
    cleanup.pids.extend([pgid, *pids])
    return runner, pgid, pids


@pytest.mark.parametrize(
    ("mode", "ignore_term"),
    [("reaper", False), ("reaper", True), ("reaper-masked", True)],
    ids=["honours-term", "ignores-term", "ignores-term-masked-runner"],
)
def test_runner_crash_kills_the_whole_tree_in_reaper_mode(
    cleanup: Cleanup, tmp_path: Path, mode: str, ignore_term: bool
) -> None:
    grace = 0.3
    tree_args = ["--children", "3", "--escape", "setpgid"]
    tree_args += ["--ignore-term"] if ignore_term else []
    runner, pgid, pids = start_runner(cleanup, mode, grace, tmp_path / "pids", *tree_args)
    tree = [pgid, *pids]  # reaper, command, 3 grandchildren, 1 grandchild in another group
    assert all(alive(pid) for pid in tree)

    runner.kill()
    runner.wait()
    elapsed = wait_dead(tree, timeout=grace + 5.0)

    assert elapsed < grace + 1.0
    if ignore_term:  # only the reaper's SIGKILL, after its grace, can have done this
        assert elapsed > grace - 0.1
    assert processes_in_group(pgid) == []
    assert processes_in_session(pgid) == []


def test_runner_crash_in_plain_mode_kills_the_child_and_leaves_the_rest_to_the_sweeper(
    cleanup: Cleanup, tmp_path: Path
) -> None:
    runner, pgid, pids = start_runner(cleanup, "plain", 0.3, tmp_path / "pids", "--children", "2")
    leader, grandchildren = pids[0], pids[1:]
    assert leader == pgid

    runner.kill()
    runner.wait()
    assert wait_dead([leader], timeout=2.0) < 1.0  # PDEATHSIG=SIGKILL on the direct child
    time.sleep(0.2)
    assert all(alive(pid) for pid in grandchildren)  # what plain mode does *not* cover

    kill_group(pgid, 0.5)  # the sweeper's path after a restart, on the recorded pgid
    assert processes_in_group(pgid) == []
    assert not any(alive(pid) for pid in grandchildren)


def test_reaper_does_not_start_the_command_if_the_runner_is_already_gone(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    read_fd, write_fd = os.pipe()
    # Claim a parent that is not ours: to the reaper the runner "died before prctl".
    command = _reaper_command(["touch", str(marker)], parent_pid=1, status_fd=write_fd, grace_s=0.1)
    reaper = subprocess.Popen(command, pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    try:
        assert reaper.wait(timeout=10) == 1
        with os.fdopen(read_fd, "rb") as report:
            assert report.read() == b""  # never armed, never forked
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()
    time.sleep(0.1)
    assert not marker.exists()


@BOTH_MODES
def test_pdeathsig_and_short_lived_threads(cleanup: Cleanup, tmp_path: Path, reaper: bool) -> None:
    """PDEATHSIG follows the creating *thread*: the reaper ignores a thread's exit while the
    runner process lives; a plain child is killed by it (start those from a long-lived thread)."""
    started: list[tuple[SupervisedProcess[Any], list[int]]] = []
    thread = threading.Thread(
        target=lambda: started.append(
            start_tree(cleanup, tmp_path / "pids", "--children", "2", reaper=reaper)
        )
    )
    thread.start()
    thread.join()
    proc, pids = started[0]
    time.sleep(0.3)

    if reaper:
        assert proc.poll() is None
        assert all(alive(pid) for pid in pids)
        assert proc.terminate_group(1.0) == -signal.SIGTERM
    else:
        assert proc.wait(timeout=2.0) == -signal.SIGKILL
        assert all(alive(pid) for pid in pids[1:])
        proc.terminate_group(1.0)
    assert not any(alive(pid) for pid in pids)


# -- 4. idempotent, and safe from another thread while a reader blocks --------------------------


def test_terminate_group_is_idempotent_and_works_while_a_reader_blocks(
    cleanup: Cleanup, tmp_path: Path
) -> None:
    proc, pids = start_tree(
        cleanup, tmp_path / "pids", "--children", "3", "--print", stdout=subprocess.PIPE
    )
    stdout = proc.popen.stdout
    assert stdout is not None
    assert stdout.readline() == b"ready\n"

    results: list[int] = []
    waited: list[int] = []

    def cancel() -> None:
        time.sleep(0.2)
        results.append(proc.terminate_group(2.0))

    threads = [threading.Thread(target=cancel) for _ in range(2)]
    threads.append(threading.Thread(target=lambda: waited.append(proc.wait())))
    for thread in threads:
        thread.start()
    # The command and its grandchildren all hold the pipe: EOF means every one of them died.
    assert stdout.read() == b""
    for thread in threads:
        thread.join(timeout=10)

    assert results == [-signal.SIGTERM, -signal.SIGTERM]
    assert waited == [-signal.SIGTERM]
    start = time.monotonic()
    assert proc.terminate_group(2.0) == -signal.SIGTERM
    assert time.monotonic() - start < 0.05
    assert proc.poll() == proc.wait() == -signal.SIGTERM
    assert not any(alive(pid) for pid in pids)


# -- exit status, pipes, stragglers, errors ------------------------------------------------------


def test_reaper_passes_stdio_and_exit_code_through(cleanup: Cleanup) -> None:
    proc = SupervisedProcess.start(
        ["sh", "-c", "read line; echo got:$line; echo err >&2; exit 3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cleanup.procs.append(proc)
    assert proc.popen.stdin is not None and proc.popen.stdout is not None
    proc.popen.stdin.write("hello\n")
    proc.popen.stdin.close()
    assert proc.popen.stdout.read() == "got:hello\n"
    assert proc.wait(timeout=5) == 3
    assert proc.terminate_group() == 3
    assert proc.popen.returncode == 3


def test_wait_times_out_and_leader_exit_leaves_stragglers_for_terminate_group(
    cleanup: Cleanup, tmp_path: Path
) -> None:
    proc, pids = start_tree(cleanup, tmp_path / "a", "--children", "2")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)
    os.kill(pids[0], signal.SIGKILL)  # the command, not the reaper: the reaper mirrors it
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert proc.group_alive()  # the grandchildren are still there
    assert proc.terminate_group(1.0) == -signal.SIGKILL
    assert not any(alive(pid) for pid in pids)

    with start_tree(cleanup, tmp_path / "b", "--children", "2", "--leader-exit", "5")[0] as proc:
        assert proc.wait(timeout=5) == 5
        assert len(processes_in_group(proc.pgid)) == 2
    assert processes_in_group(proc.pgid) == []
    assert proc.terminate_group() == 5


@BOTH_MODES
def test_exec_failure_raises_from_start(reaper: bool) -> None:
    with pytest.raises(FileNotFoundError):
        SupervisedProcess.start(["/nonexistent/codex-does-not-exist"], reaper=reaper)


def test_kill_group_refuses_our_own_group() -> None:
    for pgid in (0, 1, os.getpgrp(), os.getsid(0)):
        with pytest.raises(ValueError):
            kill_group(pgid)


def test_parse_stat_survives_hostile_command_names() -> None:
    line = b"1234 (a) b) (c Z d) S 1 777 888 0 -1 4194560 0 0\n"
    assert _parse_stat(line) == (b"S", 777, 888)
    assert _parse_stat(b"garbage") is None


# -- 5. timing -----------------------------------------------------------------------------------


def test_cancel_latency_p99(
    cleanup: Cleanup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples: list[float] = []
    for index in range(20):
        proc, pids = start_tree(cleanup, tmp_path / f"pids{index}", "--children", "3")
        start = time.monotonic()
        proc.terminate_group(2.0)
        samples.append(time.monotonic() - start)
        assert not any(alive(pid) for pid in pids)
    samples.sort()
    p99 = samples[math.ceil(0.99 * len(samples)) - 1]
    with capsys.disabled():
        print(
            f"\ncancel -> group gone over {len(samples)} trees: "
            f"p50 {samples[len(samples) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
    assert p99 < 1.0
