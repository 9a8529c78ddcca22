"""Process supervision: every child of a run lives in its own session and dies with the run.

Linux only. A supervised child is started with ``start_new_session=True``, so it leads a new
session *and* a new process group (``pid == pgid == sid``); its descendants inherit both.
By default (``reaper=True``) the process we start is a tiny reaper -- this file run as a
script by the same interpreter -- which forks and execs the real command and stays its parent
and the group leader. ``pid``/``pgid`` are the reaper's; it passes stdio through untouched and
exits with the command's status (an exit code, or the same signal), so to the caller it looks
like the command itself.

What is guaranteed
------------------
* **Cancel** (``terminate_group`` / ``kill_group``): SIGTERM to every process group of the
  run's session, wait up to ``grace_s`` for every live (non-zombie) process whose session or
  group is the run's to be gone, then SIGKILL them and wait up to ``KILL_WAIT_S`` more. It
  returns only when none is left, or raises ``SupervisionError`` naming the survivors (a
  process in uninterruptible sleep, or one that switched uid): never a silent leftover.
  Descendants that moved to another group *of the same session* (``setpgid``: job-control
  shells, ``process_group=0``) are found through their session id and killed too.
* **Runner death, any cause including SIGKILL** (reaper mode): the reaper has
  ``PR_SET_PDEATHSIG=SIGHUP``; on that signal it checks that the runner *process* is really
  gone (its parent pid changed) and runs the same TERM -> grace -> KILL escalation over the
  whole session itself (grace ``parent_death_grace_s``), so grandchildren and children that
  ignore SIGTERM die too. The real command also has ``PDEATHSIG=SIGKILL`` bound to the
  reaper, so killing the reaper alone takes the command with it. The parent-died-before-prctl
  race is closed: the reaper re-checks its parent pid after arming and never starts the
  command if the runner is already gone; ``start()`` returns only after the reaper is armed
  and the command has been exec'd (an exec failure raises ``OSError`` from ``start()``, as
  ``subprocess.Popen`` does).
* **Threads** (reaper mode): ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the
  child exits, not the process. The reaper ignores the signal while its parent pid is
  unchanged (the kernel re-parents the children of an exiting thread to another thread of
  the same process), so children may be started from short-lived threads.
* **No pgid reuse on our side**: ``poll``/``wait`` observe the leader's exit with
  ``waitid(WNOWAIT)`` and leave it a zombie, which pins its pid (hence the pgid/sid number)
  until ``terminate_group`` has swept the session and reaps it. A group with live members is
  pinned by the kernel anyway.

What is *not* guaranteed
------------------------
* A descendant that calls ``setsid()`` (daemonizers, ``setsid(1)``, Node's
  ``detached: true``, Python's ``start_new_session=True``) leaves both the session and the
  group; nothing here can find it afterwards. Sandboxed engines close this by running the
  child in a PID namespace (docker, bubblewrap ``--unshare-pid``): when the namespace's init
  dies the kernel kills everything in it.
* Plain mode (``reaper=False``: ``PDEATHSIG=SIGKILL`` set directly on the child in a
  ``preexec_fn``) covers only the direct child on runner death; its descendants survive until
  the sweeper calls ``kill_group`` on the recorded pgid. And the child is SIGKILLed as soon as
  the *thread* that started it exits, so plain mode must start children from a long-lived
  thread (the run loop's worker thread).
* Once the command exits normally the reaper exits with it. If the runner dies between that
  moment and its ``terminate_group`` call, stragglers left in the group are only swept by the
  sweeper's ``kill_group``. The run loop must therefore call ``terminate_group`` on every
  exit path (the context manager does), and do it before draining pipes that stragglers may
  hold open.
* ``kill_group`` on a pgid recorded before a runner restart is safe while any member lives;
  once the group has emptied, a wrapped-around pid could make the number someone else's.
  Check ``processes_in_group`` (and their command lines) before sweeping old pgids.
* Signalling the reaper's pid alone (``popen.terminate()``) does nothing: it ignores
  SIGTERM/SIGINT/SIGQUIT because group signals reach the command directly. Signal the group.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, AnyStr, Generic, Literal, NoReturn, overload

__all__ = [
    "DEFAULT_GRACE_S",
    "KILL_WAIT_S",
    "SupervisedProcess",
    "SupervisionError",
    "kill_group",
    "processes_in_group",
    "processes_in_session",
]

DEFAULT_GRACE_S = 2.0
# After SIGKILL a process normally vanishes within milliseconds; only uninterruptible sleep
# (D state, e.g. a hung NFS read) delays it. Past this we stop waiting and say so loudly.
KILL_WAIT_S = 5.0

_PR_SET_PDEATHSIG = 1
_REAPER_FLAG = "--reaper"
# The reaper's own parent-death signal: catchable (unlike SIGKILL) so it can sweep the
# session, and not SIGTERM, which every member receives on an ordinary cancel.
_REAPER_PDEATHSIG = signal.SIGHUP
# Signals the reaper shrugs off: a group-wide signal reaches the real command directly, and
# the reaper must outlive it to report its exit status.
_REAPER_IGNORED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# Python ignores these at start-up; the real command must get default dispositions, as
# subprocess's restore_signals does.
_RESTORED_FOR_CHILD = (signal.SIGPIPE, signal.SIGXFSZ)
_START_TIMEOUT_S = 30.0
# Sleep back-off while waiting for a group to vanish: fast first checks keep cancel latency
# low, the cap keeps a stubborn wait from scanning /proc in a tight loop.
_POLL_MIN_S = 0.002
_POLL_MAX_S = 0.05
_THIS_FILE = str(Path(__file__).resolve())


class SupervisionError(RuntimeError):
    """Processes of a supervised tree survived SIGKILL, or a reaper failed to start."""

    def __init__(self, message: str, pids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.pids = list(pids)


# -- /proc ---------------------------------------------------------------------------------------


def _parse_stat(data: bytes) -> tuple[bytes, int, int] | None:
    """``(state, pgrp, session)`` from a ``/proc/PID/stat`` line, or None if malformed."""
    # comm (field 2) may contain spaces and parentheses: the fixed fields start after the
    # *last* ')'. They are: state ppid pgrp session ...
    end = data.rfind(b")")
    if end < 0:
        return None
    fields = data[end + 1 :].split()
    if len(fields) < 4:
        return None
    try:
        return fields[0], int(fields[2]), int(fields[3])
    except ValueError:
        return None


def _proc_table() -> list[tuple[int, int, int]]:
    """``(pid, pgrp, sid)`` of every live process; zombies are dead and are left out."""
    rows: list[tuple[int, int, int]] = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                data = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue  # exited between the directory scan and the read
            parsed = _parse_stat(data)
            if parsed is None:
                continue
            state, pgrp, sid = parsed
            # Zombies keep their pgid until reaped, and a container's PID 1 may never reap
            # orphans: counting them would make "group gone" unreachable.
            if state in (b"Z", b"X", b"x"):
                continue
            rows.append((int(entry.name), pgrp, sid))
    return rows


def processes_in_group(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid``, sorted."""
    return sorted(pid for pid, pgrp, _ in _proc_table() if pgrp == pgid)


def processes_in_session(sid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose session is ``sid``, sorted."""
    return sorted(pid for pid, _, session in _proc_table() if session == sid)


def _tree(pgid: int) -> tuple[list[int], set[int]]:
    """Live members of group ``pgid`` or session ``pgid``, and the groups they are in.

    A supervised child leads its own session, so ``sid == pgid``; a process group never spans
    sessions, so every group found through the session is one of ours.
    """
    pids: list[int] = []
    groups: set[int] = set()
    for pid, pgrp, sid in _proc_table():
        if pgid in (pgrp, sid):
            pids.append(pid)
            groups.add(pgrp)
    return pids, groups


# -- escalation ----------------------------------------------------------------------------------


def _signal_tree(pgid: int, sig: int) -> None:
    """Send ``sig`` to group ``pgid`` and to every other group of session ``pgid``."""
    _, groups = _tree(pgid)
    # Our own group goes last: when the reaper sweeps its own session, the SIGKILL to its
    # group kills the reaper too, after every other group has been signalled.
    for group in [*sorted(groups - {pgid}), pgid]:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass  # already gone
        except PermissionError:
            pass  # a member switched uid; it is reported as a survivor after the KILL wait


def _wait_gone(
    remaining: Callable[[], list[int]], deadline: float, tick: Callable[[], None] | None
) -> bool:
    """Sleep with back-off until ``remaining()`` is empty (True) or the deadline passes."""
    delay = _POLL_MIN_S
    while True:
        if tick is not None:
            tick()
        if not remaining():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, _POLL_MAX_S)


def _escalate(
    pgid: int,
    grace_s: float,
    *,
    exclude: frozenset[int] = frozenset(),
    tick: Callable[[], None] | None = None,
) -> list[int]:
    """TERM the tree, wait ``grace_s``, KILL it, wait ``KILL_WAIT_S``; return survivors."""

    def remaining() -> list[int]:
        return [pid for pid in _tree(pgid)[0] if pid not in exclude]

    # Nothing left: send nothing, so an emptied (hence reusable) pgid is never signalled.
    if not remaining():
        return []
    _signal_tree(pgid, signal.SIGTERM)
    if _wait_gone(remaining, time.monotonic() + max(grace_s, 0.0), tick):
        return []
    _signal_tree(pgid, signal.SIGKILL)
    if _wait_gone(remaining, time.monotonic() + KILL_WAIT_S, tick):
        return []
    return remaining()


def kill_group(pgid: int, grace_s: float = DEFAULT_GRACE_S) -> None:
    """TERM -> ``grace_s`` -> KILL a group (and its session) recorded earlier, e.g. by a sweeper.

    Returns once no live process is left in group ``pgid`` or session ``pgid``; raises
    ``SupervisionError`` if some survive SIGKILL. Refuses the caller's own group or session.
    """
    if pgid <= 1 or pgid in (os.getpgrp(), os.getsid(0)):
        raise ValueError(f"refusing to kill process group {pgid}: it is not a supervised child's")
    survivors = _escalate(pgid, grace_s)
    if survivors:
        raise SupervisionError(f"processes of group {pgid} survived SIGKILL", survivors)


# -- PR_SET_PDEATHSIG ----------------------------------------------------------------------------

_prctl: Callable[..., int] | None = None


def _libc_prctl() -> Callable[..., int]:
    """libc's prctl, resolved once (in the parent, so a forked child never runs dlsym)."""
    global _prctl  # noqa: PLW0603 -- a process-wide cache of a libc symbol
    if _prctl is None:
        func = ctypes.CDLL(None, use_errno=True).prctl
        func.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        func.restype = ctypes.c_int
        _prctl = func
    return _prctl


def _set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread exits."""
    if _libc_prctl()(_PR_SET_PDEATHSIG, int(sig), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def _plain_preexec(parent_pid: int) -> Callable[[], None]:
    """preexec_fn for plain mode: PDEATHSIG=SIGKILL, then make sure the parent still lives."""
    _libc_prctl()  # resolve before fork

    def preexec() -> None:
        _set_pdeathsig(signal.SIGKILL)
        # The parent may have died between fork and prctl; the signal would never come.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


# -- the supervised process ----------------------------------------------------------------------


def _code_from_siginfo(info: os.waitid_result) -> int:
    """Popen-style exit code (negative signal number when killed) from waitid's siginfo."""
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _reaper_command(
    argv: Sequence[str], *, parent_pid: int, status_fd: int, grace_s: float
) -> list[str]:
    """The argv that runs ``argv`` under the reaper (this file, run by this interpreter)."""
    # -I: ignore PYTHON* variables and user site, never put the script's dir on sys.path;
    # -S: skip site-packages. The reaper needs only the standard library and starts faster.
    return [
        sys.executable,
        "-I",
        "-S",
        _THIS_FILE,
        _REAPER_FLAG,
        str(parent_pid),
        str(status_fd),
        repr(float(grace_s)),
        "--",
        *argv,
    ]


def _read_status(fd: int, timeout_s: float) -> bytes:
    """Read the reaper's start-up report until EOF (every writer closed it)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SupervisionError("supervised process did not start in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class SupervisedProcess(Generic[AnyStr]):
    """A child that leads its own session and process group, and dies with the runner.

    See the module docstring for exactly what is and is not guaranteed. ``popen`` is there for
    its pipes; use ``poll``/``wait``/``terminate_group`` rather than ``popen.wait`` or
    ``popen.communicate``, which reap the leader and so unpin its pgid early.
    """

    def __init__(
        self, popen: subprocess.Popen[AnyStr], argv: Sequence[str], *, reaper: bool
    ) -> None:
        self.popen: subprocess.Popen[AnyStr] = popen
        self.argv = tuple(argv)
        self.reaper = reaper
        self.pid: int = popen.pid
        # start_new_session made the child leader of its session and group.
        self.pgid: int = popen.pid
        self._lock = threading.Lock()
        self._exit_code: int | None = None
        self._finished = False

    @overload
    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        text: Literal[False] = False,
        reaper: bool = True,
        parent_death_grace_s: float = DEFAULT_GRACE_S,
    ) -> SupervisedProcess[bytes]: ...

    @overload
    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        text: Literal[True],
        reaper: bool = True,
        parent_death_grace_s: float = DEFAULT_GRACE_S,
    ) -> SupervisedProcess[str]: ...

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        text: bool = False,
        reaper: bool = True,
        parent_death_grace_s: float = DEFAULT_GRACE_S,
    ) -> SupervisedProcess[Any]:
        """Start ``argv`` supervised; stdio as for ``subprocess.Popen`` (stdin defaults to null).

        With ``reaper`` (default) the command runs under the reaper, which sweeps the whole
        session with ``parent_death_grace_s`` if the runner dies. Returns once the command has
        been exec'd; raises ``OSError`` (e.g. ``FileNotFoundError``) if it could not be.
        """
        argv = list(argv)
        if not argv:
            raise ValueError("argv must not be empty")
        if not reaper:
            plain: subprocess.Popen[Any] = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                text=text,
                start_new_session=True,
                preexec_fn=_plain_preexec(os.getpid()),  # noqa: PLW1509 -- prctl needs it
            )
            return cls(plain, argv, reaper=False)

        read_fd, write_fd = os.pipe()  # O_CLOEXEC: no other child inherits it
        try:
            try:
                popen: subprocess.Popen[Any] = subprocess.Popen(
                    _reaper_command(
                        argv,
                        parent_pid=os.getpid(),
                        status_fd=write_fd,
                        grace_s=parent_death_grace_s,
                    ),
                    cwd=cwd,
                    env=env,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    text=text,
                    start_new_session=True,
                    pass_fds=(write_fd,),
                )
            finally:
                # Only the reaper and the command may hold the write end, so EOF means
                # "armed and exec'd" (or "failed": the report says which).
                os.close(write_fd)
            proc = cls(popen, argv, reaper=True)
            try:
                report = _read_status(read_fd, _START_TIMEOUT_S)
            except BaseException:
                proc.terminate_group(0)
                raise
        finally:
            os.close(read_fd)
        proc._check_start(report)
        return proc

    def _check_start(self, report: bytes) -> None:
        """Raise if the reaper did not arm, or the command could not be exec'd."""
        if b"E" in report:
            errno_text = report.split(b"E", 1)[1].split(b";", 1)[0]
            err = int(errno_text or b"0")
            self.terminate_group(0)
            raise OSError(err, os.strerror(err), self.argv[0])
        if b"A" not in report:
            code = self.terminate_group(0)
            raise SupervisionError(f"reaper exited before starting {self.argv[0]!r} ({code})")

    def poll(self) -> int | None:
        """The leader's exit code if it has exited, else None; never reaps it (see class doc)."""
        if self._exit_code is not None:
            return self._exit_code
        if self.popen.returncode is not None:
            self._exit_code = self.popen.returncode
            return self._exit_code
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # Already reaped through popen (another thread's terminate_group, or a caller).
            self._exit_code = self.popen.wait()
            return self._exit_code
        if info is None:
            return None
        self._exit_code = _code_from_siginfo(info)
        return self._exit_code

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the leader to exit and return its exit code (negative: killed by signal).

        Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds. Does not reap the
        leader and does not wait for the rest of the group: call ``terminate_group`` for that.
        """
        if timeout is None:
            while True:
                code = self.poll()
                if code is not None:
                    return code
                try:
                    # Blocks until exit; WNOWAIT leaves the zombie in place (pins the pgid).
                    info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                except ChildProcessError:
                    self._exit_code = self.popen.wait()
                    return self._exit_code
                if info is not None:
                    self._exit_code = _code_from_siginfo(info)
                    return self._exit_code
        deadline = time.monotonic() + timeout
        delay = _POLL_MIN_S
        while True:
            code = self.poll()
            if code is not None:
                return code
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(list(self.argv), timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, _POLL_MAX_S)

    def group_alive(self) -> bool:
        """Whether any live process is left in the child's group or session."""
        # Not os.killpg(pgid, 0): it succeeds while only zombies are left, which a
        # non-reaping PID 1 can make permanent.
        if self._finished:
            return False
        return bool(_tree(self.pgid)[0])

    def terminate_group(self, grace_s: float = DEFAULT_GRACE_S) -> int:
        """SIGTERM the whole tree, SIGKILL it after ``grace_s``, reap the leader, return its code.

        Returns once no live process is left in the child's group or session; raises
        ``SupervisionError`` if some survive SIGKILL. Idempotent: later calls return the same
        code without signalling anything. Thread-safe, and safe while another thread blocks
        reading the child's pipes (they reach EOF as the tree dies).
        """
        with self._lock:
            if self._finished:
                assert self._exit_code is not None
                return self._exit_code
            survivors = _escalate(self.pgid, grace_s)
            if survivors:
                raise SupervisionError(
                    f"processes of group {self.pgid} survived SIGKILL", survivors
                )
            # Everything is gone, so the leader is dead: reaping it is quick and unpins the
            # pgid only now that nothing can be signalled through it any more.
            self._exit_code = self.popen.wait()
            self._finished = True
            return self._exit_code

    def __enter__(self) -> SupervisedProcess[AnyStr]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate_group()


# -- the reaper (this file run as a script) ------------------------------------------------------


class _Reaper:
    """Runs in the reaper process: parent of the real command and leader of its session."""

    def __init__(self, parent_pid: int, status_fd: int, grace_s: float) -> None:
        self.parent_pid = parent_pid
        self.status_fd = status_fd
        self.grace_s = grace_s
        self.me = os.getpid()
        self.child = 0

    def parent_gone(self) -> bool:
        """Whether the runner process died (we were re-parented to init or a subreaper)."""
        return os.getppid() != self.parent_pid

    def on_pdeathsig(self, signum: int, frame: FrameType | None) -> None:
        """PDEATHSIG also fires when the creating thread alone exits, and anyone may SIGHUP
        the group: act only if the runner process itself is gone."""
        if os.getpid() == self.me and self.parent_gone():
            self.sweep()

    def reap_child(self) -> None:
        """Collect the command's exit status if it has exited (keeps the process table tidy)."""
        if self.child <= 0:
            return
        try:
            pid, _ = os.waitpid(self.child, os.WNOHANG)
        except ChildProcessError:
            pid = self.child
        if pid == self.child:
            self.child = 0

    def sweep(self) -> NoReturn:
        """The runner is gone: TERM -> grace -> KILL the whole session, ourselves last."""
        for sig in (signal.SIGHUP, *_REAPER_IGNORED):
            signal.signal(sig, signal.SIG_IGN)  # nothing may interrupt the sweep now
        _escalate(self.me, self.grace_s, exclude=frozenset({self.me}), tick=self.reap_child)
        os._exit(1)

    def exec_child(self, argv: list[str]) -> NoReturn:
        """In the forked child: default signals, PDEATHSIG on the reaper, exec the command."""
        try:
            for sig in (*_REAPER_IGNORED, _REAPER_PDEATHSIG, *_RESTORED_FOR_CHILD):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            _set_pdeathsig(signal.SIGKILL)
            if os.getppid() != self.me:
                os._exit(127)  # the reaper died before we armed: do not start at all
            # A successful exec closes our copy of the report pipe; the runner then sees EOF.
            os.set_inheritable(self.status_fd, False)
            os.execvp(argv[0], argv)  # noqa: S606 -- argv list, no shell, as in Popen
        except OSError as exc:
            os.write(self.status_fd, b"E%d;" % (exc.errno or 0))
        finally:
            os._exit(127)

    def run(self, argv: list[str]) -> NoReturn:
        """Arm PDEATHSIG, start the command, wait for it, exit the way it exited."""
        # The mask is inherited from whichever runner thread forked us: a blocked SIGHUP
        # would leave PDEATHSIG pending forever.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for sig in _REAPER_IGNORED:
            signal.signal(sig, lambda signum, frame: None)
        signal.signal(_REAPER_PDEATHSIG, self.on_pdeathsig)
        _set_pdeathsig(_REAPER_PDEATHSIG)
        # The runner may have died before prctl: the signal will never come, but getppid
        # tells. Nothing has been started yet, so there is nothing to sweep.
        if self.parent_gone():
            os._exit(1)
        os.write(self.status_fd, b"A")
        self.child = os.fork()
        if self.child == 0:
            self.exec_child(argv)
        os.close(self.status_fd)
        # Drop our copies of the command's stdio: a reader must see EOF (and a writer EPIPE)
        # as soon as the command and its descendants close theirs.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        _, status = os.waitpid(self.child, 0)
        self.child = 0
        _exit_like(status)


def _exit_like(status: int) -> NoReturn:
    """Exit with the command's exit code, or die of the same signal that killed it."""
    if os.WIFSIGNALED(status):
        import resource

        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the command dumped core already
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default action is not to terminate
    os._exit(os.waitstatus_to_exitcode(status))


def _reaper_main(args: list[str]) -> NoReturn:
    """Entry point of the reaper: ``--reaper PARENT_PID STATUS_FD GRACE_S -- ARGV...``."""
    if len(args) < 5 or args[3] != "--":
        sys.stderr.write(f"usage: {_THIS_FILE} {_REAPER_FLAG} PARENT STATUS_FD GRACE -- ARGV\n")
        os._exit(2)
    _Reaper(int(args[0]), int(args[1]), float(args[2])).run(args[4:])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _REAPER_FLAG:
        _reaper_main(sys.argv[2:])
    sys.stderr.write("jobs/supervise.py is a library; run as a script it is the child reaper\n")
    sys.exit(2)
