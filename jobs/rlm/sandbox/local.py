"""The ``local`` sandbox: the REPL server in a bubblewrap namespace sandbox (docs/sandbox.md).

Every namespace is unshared (user, pid, net, ipc, uts, cgroup when possible); the REPL runs as
uid/gid 65534 inside, with no capabilities, ``no_new_privs`` and no way to create further user
namespaces. The root is a read-only tmpfs holding only what Python needs, read-only (``/usr``,
the ``/lib*``/``/bin`` links or directories, ``/etc/ld.so.cache``, the interpreter's prefix
when it lives elsewhere, the REPL server and its bytecode), the run's ``scratch/`` and
``artifacts/`` read-write at ``/scratch`` and ``/artifacts``, a size-capped tmpfs ``/tmp``, a
private ``/proc`` and a read-only minimal ``/dev``. The network namespace holds only a
loopback of its own.

Host identity: bwrap maps the sandbox's uid onto the uid that started bwrap. Started by root,
the sandbox would *be* host root (without capabilities, but still the owner of every
root-owned sysctl under ``/proc/sys``, exempt from RLIMIT_NPROC, ...). So when the runner is
root, bwrap is started as host uid 65534 (``setpriv``), and because that uid cannot reach the
run directory, the launcher first bind-mounts the few sources onto a small tmpfs in a private
mount namespace (:class:`Stage`). A non-root runner starts bwrap as itself.

Limits: rlimits set by the REPL server before any cell runs (address space, CPU seconds, file
size, no core files, and RLIMIT_NPROC -- the process cap, which binds because the sandbox is
never host root); and, where a cgroup v1 hierarchy is writable, a cgroup per sandbox with
``pids.max``, ``memory.limit_in_bytes`` (the whole sandbox, tmpfs included) and a CPU quota.

The sandbox is started through :class:`jobs.supervise.SupervisedProcess` (its own session,
swept when the runner dies) with ``--die-with-parent``; the PID namespace takes every process
inside with it when it ends, including ones that left the session.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from jobs.rlm.protocol import Ready, ReplMessage, ReplProtocolError
from jobs.rlm.sandbox.base import (
    Sandbox,
    SandboxCheck,
    SandboxLimits,
    SandboxUnavailable,
)
from jobs.rlm.sandbox.common import (
    BOOT,
    PYC_NAME,
    REPL_SERVER,
    SANDBOX_REPL_DIR,
    SANDBOX_REPL_PATH,
    SANDBOX_UID,
    ChannelSession,
    find_python,
    pop_message,
    precompiled_server,
    probe_repl,
)
from jobs.supervise import SupervisedProcess, processes_in_session

__all__ = [
    "BWRAP_INSTALL_HINT",
    "SANDBOX_REPL_PATH",
    "LocalReplSession",
    "LocalSandbox",
    "bwrap_argv",
]

BWRAP_INSTALL_HINT = (
    "install bubblewrap: `sudo apt-get install bubblewrap` (Debian/Ubuntu), "
    "`sudo dnf install bubblewrap` (Fedora), or run scripts/install_sandbox_deps.sh"
)
_READ_CHUNK = 1 << 20
_CGROUP_PARENT = "codex-delegation-sandbox"
_CPU_PERIOD_US = 100_000
_STALE_CGROUP_S = 60
# The cgroup holds more than the REPL's address space (RLIMIT_AS = memory_mb): bwrap, the
# page cache of what it reads, /tmp. The slack lets one hog get a MemoryError (the REPL
# survives) rather than the OOM killer; many processes together still hit the cgroup.
_MEMORY_SLACK_MB = 128
# bwrap's own two processes (the monitor outside, the PID-namespace init inside) are in the
# cgroup too; the cap is on what the REPL can start.
_BWRAP_TASKS = 2
_KILL_GRACE_S = 0.2


# -- host discovery --------------------------------------------------------------------------


def find_bwrap() -> str | None:
    """The bwrap executable on PATH (or the usual places), or None."""
    found = shutil.which("bwrap")
    if found:
        return found
    for candidate in ("/usr/bin/bwrap", "/usr/local/bin/bwrap"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _python_prefix(python: str) -> str | None:
    """The directory to bind for an interpreter that does not live under ``/usr``."""
    real = Path(python).resolve()
    if real.is_relative_to("/usr"):
        return None
    return str(real.parent.parent)  # <prefix>/bin/python3 -> <prefix>


@dataclass(frozen=True)
class BindSources:
    """Host paths bwrap binds into the sandbox (the real ones, or their staged copies)."""

    scratch: str
    artifacts: str
    repl_server: str
    python_prefix: str | None = None  # None: the interpreter's prefix itself, if outside /usr
    repl_pyc: str | None = None  # the server compiled by this interpreter (see precompiled)

    @classmethod
    def direct(cls, scratch: Path, artifacts: Path) -> BindSources:
        pyc = precompiled_server()
        pyc_path = None if pyc is None else str(pyc)
        return cls(str(scratch), str(artifacts), str(REPL_SERVER), None, pyc_path)


_STAGE_CANDIDATES = ("/mnt", "/media", "/srv", "/run", "/opt", "/home")


@dataclass(frozen=True)
class Stage:
    """Root runners only: bwrap runs as uid 65534 (so the sandbox is not host root), and that
    uid cannot reach the run directory (under a 0700 home) to bind it. So the launcher, still
    root, enters a private mount namespace, mounts a small tmpfs on ``mountpoint`` and
    bind-mounts each source there; bwrap binds from those staged paths. Nothing of this is
    visible outside the launcher's own mount namespace, and it all goes with the sandbox."""

    mountpoint: str
    binds: dict[str, str]  # name under the stage -> host path

    def path(self, name: str) -> str:
        return f"{self.mountpoint}/{name}"

    @classmethod
    def for_sources(cls, direct: BindSources, python_prefix: str | None) -> Stage:
        binds = {
            "scratch": direct.scratch,
            "artifacts": direct.artifacts,
            "repl_server.py": direct.repl_server,
        }
        if direct.repl_pyc is not None:
            binds["repl_server.pyc"] = direct.repl_pyc
        if python_prefix is not None:
            binds["python"] = python_prefix
        for candidate in _STAGE_CANDIDATES:
            if Path(candidate).is_dir() and not any(
                Path(source).is_relative_to(candidate) for source in binds.values()
            ):
                return cls(candidate, binds)
        raise SandboxUnavailable(
            "the local sandbox found no directory to stage its mounts on "
            f"(tried {', '.join(_STAGE_CANDIDATES)})"
        )

    def sources(self) -> BindSources:
        return BindSources(
            scratch=self.path("scratch"),
            artifacts=self.path("artifacts"),
            repl_server=self.path("repl_server.py"),
            python_prefix=self.path("python") if "python" in self.binds else None,
            repl_pyc=self.path("repl_server.pyc") if "repl_server.pyc" in self.binds else None,
        )

    def script(self) -> str:
        """Shell lines (run as root in the private mount namespace) that build the stage."""
        q = shlex.quote
        lines = [
            f"mount -t tmpfs -o size=64k,mode=0755,nosuid,nodev rlm-stage {q(self.mountpoint)}"
        ]
        dirs = [q(self.path(name)) for name, src in self.binds.items() if Path(src).is_dir()]
        files = [q(self.path(name)) for name, src in self.binds.items() if not Path(src).is_dir()]
        lines.append(f"mkdir {' '.join(dirs)}")
        lines += [f": > {target}" for target in files]
        lines += [
            f"mount --bind {q(source)} {q(self.path(name))}" for name, source in self.binds.items()
        ]
        return "\n".join(lines)


def bwrap_argv(
    *,
    bwrap: str,
    python: str,
    limits: SandboxLimits,
    sources: BindSources,
) -> list[str]:
    """The full command line that starts the REPL server in the sandbox."""
    argv = [
        bwrap,
        # Namespaces: a user namespace where we are 65534 (no capabilities outside it, none
        # left inside), no nested user namespaces, and private pid/net/ipc/uts/cgroup views.
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--disable-userns",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "rlm-sandbox",
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/scratch",
        "--setenv",
        "TMPDIR",
        "/tmp",  # noqa: S108 -- the sandbox's own private tmpfs
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "USER",
        "sandbox",
        "--setenv",
        "LOGNAME",
        "sandbox",
    ]
    if not limits.network:
        argv.append("--unshare-net")
    # The read-only root: only what Python needs.
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", str(host.readlink()), f"/{name}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{name}"]
    for etc in ("/etc/ld.so.cache", "/etc/localtime"):
        argv += ["--ro-bind-try", etc, etc]
    prefix = _python_prefix(python)
    if prefix is not None:
        argv += ["--ro-bind", sources.python_prefix or prefix, prefix]
    argv += ["--ro-bind", sources.repl_server, SANDBOX_REPL_PATH]
    if sources.repl_pyc is not None:
        argv += ["--ro-bind", sources.repl_pyc, f"{SANDBOX_REPL_DIR}/__pycache__/{PYC_NAME}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp"]  # noqa: S108 -- private
    argv += ["--bind", sources.scratch, "/scratch", "--bind", sources.artifacts, "/artifacts"]
    # /dev is bwrap's own tmpfs (device nodes stay usable): no files, no unbounded tmpfs.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/scratch"]
    rlimits = {
        "as": limits.memory_mb << 20,
        "cpu": limits.cpu_seconds,
        "fsize": limits.file_size_mb << 20,
        "core": 0,
        "nproc": limits.pids,
    }
    argv += [
        "--",
        python,
        "-I",
        "-S",
        "-c",
        BOOT,
        "--limits",
        json.dumps(rlimits, separators=(",", ":")),
    ]
    return argv


# -- cgroups (v1) ----------------------------------------------------------------------------


def _v1_mounts() -> dict[str, str]:
    """Controller -> mount point of every cgroup v1 hierarchy."""
    mounts: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup":
            for option in fields[3].split(","):
                mounts.setdefault(option, fields[1])
    return mounts


def _own_cgroup(controller: str) -> str:
    """Our cgroup path in the v1 hierarchy of ``controller`` (``/`` if unknown)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controller in controllers.split(","):
            return path or "/"
    return "/"


def _sweep_stale(parent: Path) -> None:
    """Remove empty cgroups left by sandboxes whose runner died (rmdir fails on busy ones).
    Young ones are left alone: another sandbox may be about to join the one it just made."""
    now = time.time()
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            with contextlib.suppress(OSError):
                if child.is_dir() and now - child.stat().st_mtime > _STALE_CGROUP_S:
                    child.rmdir()


@dataclass
class Cgroups:
    """The sandbox's cgroups (v1): ``pids`` caps processes, ``memory`` and ``cpu`` when
    writable too. ``procs_files`` are the ``cgroup.procs`` the launcher joins."""

    dirs: dict[str, Path]

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs.values()]

    def describe(self) -> str:
        return "cgroup v1 " + "+".join(sorted(self.dirs))

    def pids_failures(self) -> int:
        """How many forks the pids cap has refused (``pids.events``)."""
        pids = self.dirs.get("pids")
        if pids is None:
            return 0
        try:
            text = (pids / "pids.events").read_text()
        except OSError:
            return 0
        match = re.search(r"^max (\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def remove(self, wait_s: float = 2.0) -> None:
        """Remove the cgroups once their last process is gone (best effort, bounded wait)."""
        deadline = time.monotonic() + wait_s
        for path in self.dirs.values():
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.01)

    @classmethod
    def create(cls, name: str, limits: SandboxLimits) -> Cgroups | None:
        """The pids, memory and cpu cgroups that can be made here (None: not one)."""
        mounts = _v1_mounts()
        settings: dict[str, dict[str, str]] = {
            "pids": {"pids.max": str(limits.pids + _BWRAP_TASKS)},
            "memory": {
                "memory.limit_in_bytes": str(
                    (limits.memory_mb + limits.tmpfs_mb + _MEMORY_SLACK_MB) << 20
                )
            },
            "cpu": {
                "cpu.cfs_period_us": str(_CPU_PERIOD_US),
                "cpu.cfs_quota_us": str(max(1000, int(limits.cpus * _CPU_PERIOD_US))),
            },
        }
        made = cls({})
        for controller, files in settings.items():
            mount = mounts.get(controller)
            if mount is None:
                continue
            parent = Path(mount) / _own_cgroup(controller).lstrip("/") / _CGROUP_PARENT
            path = parent / name
            try:
                parent.mkdir(exist_ok=True)
                _sweep_stale(parent)
                path.mkdir()
                for file, value in files.items():
                    (path / file).write_text(value)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            made.dirs[controller] = path
        return made if made.dirs else None


# -- the session -----------------------------------------------------------------------------


def _ns_pid(pid: int) -> int | None:
    """The innermost PID-namespace pid of ``pid`` when it is in a nested namespace."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return int(ids[-1]) if len(ids) > 1 else None
    return None


class LocalReplSession(ChannelSession):
    """A REPL server running under bwrap; messages are JSON lines on its stdin/stdout."""

    def __init__(
        self,
        proc: SupervisedProcess[bytes],
        *,
        stderr: IO[bytes],
        cgroups: Cgroups | None,
        argv: list[str],
    ) -> None:
        assert proc.popen.stdin is not None and proc.popen.stdout is not None
        self.proc = proc
        self.argv = argv
        self.cgroups = cgroups
        self.ready: Ready | None = None
        self.repl_pid: int | None = None  # the REPL's pid as the host sees it
        self._stderr = stderr
        self._in = proc.popen.stdin.fileno()
        self._out = proc.popen.stdout.fileno()
        self._buffer = bytearray()
        # kill() may come from another thread while send/receive run: it marks the session
        # killed at once but closes the pipes only when no I/O is in flight, so a descriptor
        # number is never reused under a reader or writer.
        self._lock = threading.Lock()
        self._busy = 0
        self._killed = False
        self._closed = False
        if cgroups is not None:
            # A session dropped without kill() (or a runner exiting) still removes its empty
            # cgroups; a runner killed outright leaves them to the next start's sweep.
            weakref.finalize(self, cgroups.remove, 0.0)

    # -- ReplSession --

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view) :]

    def _receive(self, deadline: float | None) -> ReplMessage | None:
        poller = select.poll()
        poller.register(self._out, select.POLLIN)
        while True:
            message = pop_message(self._buffer, self._decoder)
            if message is not None:
                return message  # type: ignore[no-any-return]
            if self._killed:
                raise EOFError("the REPL was killed")
            left_ms = None
            if deadline is not None:
                left_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            if not poller.poll(left_ms):
                return None
            try:
                chunk = os.read(self._out, _READ_CHUNK)
            except OSError as exc:
                raise EOFError(f"the REPL is gone ({exc})") from None
            if not chunk:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(0.5)  # for the exit status in the message
                raise EOFError(f"the REPL exited{self._exit_detail()}")
            self._buffer += chunk

    def interrupt(self) -> None:
        if self.repl_pid is None or self._killed:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.repl_pid, signal.SIGINT)

    def kill(self) -> None:
        with self._lock:
            if self._killed:
                return
            self._killed = True
        try:
            self.proc.terminate_group(_KILL_GRACE_S)
        finally:
            with self._lock:
                if not self._busy:
                    self._close()
            if self.cgroups is not None:
                self._kill_cgroup_members()
                self.cgroups.remove()

    def _close(self) -> None:
        """Close our ends of the pipes (with the lock held, no I/O in flight)."""
        if self._closed:
            return
        self._closed = True
        for stream in (self.proc.popen.stdin, self.proc.popen.stdout, self._stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()

    @property
    def alive(self) -> bool:
        return not self._killed and self.proc.poll() is None

    # -- extras --

    def shutdown(self, timeout: float = 2.0) -> None:
        """Ask the REPL to exit, then make sure everything is gone."""
        if self.alive:
            from jobs.rlm.protocol import Shutdown

            with contextlib.suppress(EOFError):
                self.send(Shutdown())
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def stderr_tail(self, limit: int = 4000) -> str:
        """What bwrap and the interpreter wrote to stderr before the REPL took it over."""
        try:
            self._stderr.seek(0)
            data = self._stderr.read()
        except (OSError, ValueError):
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def __enter__(self) -> LocalReplSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def _exit_detail(self) -> str:
        code = self.proc.poll()
        tail = self.stderr_tail(1000).strip()
        detail = "" if code is None else f" with code {code}"
        return f"{detail}: {tail}" if tail else detail

    def _kill_cgroup_members(self) -> None:
        """SIGKILL whatever is still in the cgroup (a process that left the session dies with
        the PID namespace anyway; this only makes it sooner)."""
        assert self.cgroups is not None
        pids_dir = self.cgroups.dirs.get("pids")
        if pids_dir is None:
            return
        with contextlib.suppress(OSError):
            for line in (pids_dir / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(line), signal.SIGKILL)

    def _locate_repl(self, ns_pid: int) -> None:
        """Find the REPL's host pid (the descendant whose innermost pid is ``ns_pid``):
        SIGINT goes to it alone (bwrap's own processes would die of it)."""
        queue = [self.proc.pid]
        seen = 0
        while queue and seen < 32:
            pid = queue.pop(0)
            seen += 1
            if pid != self.proc.pid and _ns_pid(pid) == ns_pid:
                self.repl_pid = pid
                return
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                queue += [int(child) for child in children]
        for pid in processes_in_session(self.proc.pgid):  # no /proc/.../children here
            if _ns_pid(pid) == ns_pid:
                self.repl_pid = pid
                return


# -- the sandbox -----------------------------------------------------------------------------


class LocalSandbox(Sandbox):
    """bubblewrap on this machine."""

    name = "local"

    def __init__(
        self,
        *,
        python: str | None = None,
        bwrap: str | None = None,
        start_timeout_s: float = 10.0,
        use_cgroups: bool = True,
    ) -> None:
        self.python = python or find_python()
        self.bwrap = bwrap or find_bwrap()
        self.start_timeout_s = start_timeout_s
        self.use_cgroups = use_cgroups

    @classmethod
    def check(cls) -> SandboxCheck:
        """Actually start a sandboxed REPL and run one cell in it."""
        bwrap = find_bwrap()
        if bwrap is None:
            return SandboxCheck(cls.name, False, f"bwrap not found; {BWRAP_INSTALL_HINT}")
        sandbox = cls(bwrap=bwrap)
        session = probe_repl(sandbox, sandbox.start_timeout_s)
        if isinstance(session, str):
            return SandboxCheck(cls.name, False, session)
        assert session.ready is not None
        limits = "rlimits" + (f" + {session.cgroups.describe()}" if session.cgroups else "")
        host_uid = SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
        return SandboxCheck(
            cls.name,
            True,
            f"{_bwrap_version(bwrap)}; python {session.ready.python} ({sandbox.python}); "
            f"runs as host uid {host_uid}; limits: {limits}",
        )

    def command(
        self, *, run_dir: Path, limits: SandboxLimits, label: str
    ) -> tuple[list[str], list[str], Cgroups | None]:
        """What to run: the full launcher command, the bwrap argv inside it, the cgroups made
        for it. Creates ``scratch/`` and ``artifacts/`` (owned by the sandbox uid when the
        runner is root)."""
        if self.bwrap is None:
            raise SandboxUnavailable(f"the local sandbox needs bubblewrap; {BWRAP_INSTALL_HINT}")
        scratch = run_dir / "scratch"
        artifacts = run_dir / "artifacts"
        scratch.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        sources = BindSources.direct(scratch, artifacts)
        stage: Stage | None = None
        drop: list[str] = []
        if os.geteuid() == 0:
            # bwrap maps the sandbox uid onto its own: started by root, the sandbox would be
            # host uid 0 (no capabilities, but owner of every root-owned sysctl, keyring, ...).
            # So bwrap runs as 65534, from a stage it can reach.
            tools = {name: shutil.which(name) for name in ("setpriv", "unshare", "mount")}
            missing = [name for name, path in tools.items() if path is None]
            if missing:
                raise SandboxUnavailable(
                    "the local sandbox needs util-linux's setpriv, unshare and mount when the "
                    f"runner is root (missing: {', '.join(missing)}): install util-linux, or "
                    "run the runner as an unprivileged user"
                )
            for path in (scratch, artifacts):
                os.chown(path, SANDBOX_UID, SANDBOX_UID)
            stage = Stage.for_sources(sources, _python_prefix(self.python))
            sources = stage.sources()
            drop = [
                str(tools["setpriv"]),
                f"--reuid={SANDBOX_UID}",
                f"--regid={SANDBOX_UID}",
                "--clear-groups",
                "--",
            ]
        argv = bwrap_argv(bwrap=self.bwrap, python=self.python, limits=limits, sources=sources)
        cgroups = None
        if self.use_cgroups:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:40] or "repl"
            cgroups = Cgroups.create(f"{safe}-{uuid.uuid4().hex[:12]}", limits)
        if cgroups is None and stage is None:
            return argv, argv, None
        q = shlex.quote
        lines = ["set -e"]
        if cgroups is not None:
            # Join the cgroups first: everything started from here on is in them.
            lines += [f"echo $$ > {q(path)}" for path in cgroups.procs_files]
        final = shlex.join([*drop, *argv])
        if stage is not None:
            inner = f"set -e\n{stage.script()}\nexec {final}"
            unshare = "unshare --mount --propagation private -- /bin/sh -c"
            lines.append(f"exec {unshare} {q(inner)}")
        else:
            lines.append(f"exec {final}")
        return ["/bin/sh", "-c", "\n".join(lines)], argv, cgroups

    def start(self, *, run_dir: Path, limits: SandboxLimits, label: str) -> LocalReplSession:
        command, argv, cgroups = self.command(run_dir=run_dir, limits=limits, label=label)
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- owned by the session
        try:
            proc = SupervisedProcess.start(
                command,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        except OSError as exc:
            stderr.close()
            if cgroups is not None:
                cgroups.remove(0)
            raise SandboxUnavailable(f"could not start bwrap: {exc}") from exc
        session = LocalReplSession(proc, stderr=stderr, cgroups=cgroups, argv=argv)
        try:
            message = session.receive(self.start_timeout_s)
        except (EOFError, ReplProtocolError) as exc:
            session.kill()
            raise SandboxUnavailable(f"the local sandbox failed to start: {exc}") from exc
        if not isinstance(message, Ready):
            detail = session.stderr_tail()
            session.kill()
            what = "no answer in time" if message is None else f"{message!r}"
            raise SandboxUnavailable(f"the local sandbox failed to start: {what} {detail}")
        session.ready = message
        session._locate_repl(message.pid)
        if session.repl_pid is None:
            session.kill()
            raise SandboxUnavailable("the local sandbox started but its REPL could not be found")
        return session


def _bwrap_version(bwrap: str) -> str:
    try:
        out = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "bwrap"
    return out.stdout.strip() or "bwrap"
