"""What every sandbox shares: the REPL server file and how it is started, the sandbox user,
the interpreter to use, the environment and the rlimits the REPL applies to itself.

The sandboxes (``local``, ``docker``) differ in *how* they isolate; what runs inside is the
same: ``python3 -I -S -c BOOT --limits JSON`` with the server read-only at
:data:`SANDBOX_REPL_PATH`, ``/scratch`` and ``/artifacts`` writable, a private ``/tmp``.
"""

from __future__ import annotations

import abc
import atexit
import json
import os
import py_compile
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from jobs.rlm.protocol import CellResult, ExecRequest, HostMessage, ReplMessage, ReplProtocolError
from jobs.rlm.sandbox.base import ReplSession, Sandbox, SandboxLimits, SandboxUnavailable

__all__ = [
    "BOOT",
    "MAX_LINE_BYTES",
    "PYC_NAME",
    "REPL_SERVER",
    "SANDBOX_ENV",
    "SANDBOX_REPL_DIR",
    "SANDBOX_REPL_PATH",
    "SANDBOX_UID",
    "ChannelSession",
    "find_python",
    "pop_message",
    "precompiled_server",
    "probe_repl",
    "repl_command",
    "repl_rlimits",
]

REPL_SERVER = Path(__file__).resolve().parent.parent / "repl_server.py"
#: Where the REPL server file is mounted (read-only) inside the sandbox.
SANDBOX_REPL_DIR = "/opt/rlm"
SANDBOX_REPL_PATH = f"{SANDBOX_REPL_DIR}/repl_server.py"
# Started as a module, not a script: an imported module's bytecode can come from a .pyc, so
# the server is not recompiled at every start (a script always is).
BOOT = (
    f'import sys; sys.path.insert(0, "{SANDBOX_REPL_DIR}"); import repl_server; '
    "sys.exit(repl_server.main(sys.argv[1:]))"
)
PYC_NAME = f"repl_server.{sys.implementation.cache_tag}.pyc"
#: The sandbox's uid/gid when the runner is root (``nobody``): never host root.
SANDBOX_UID = 65534
#: A REPL line longer than this is a protocol error (results are bounded by max_output_chars).
MAX_LINE_BYTES = 64 << 20
#: The whole environment of the REPL inside a sandbox (nothing of the host's).
SANDBOX_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/scratch",
    "TMPDIR": "/tmp",  # noqa: S108 -- the sandbox's own private tmpfs
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
}


def find_python() -> str:
    """The interpreter to run inside: the system ``/usr/bin/python3`` when there is one (it
    needs nothing outside ``/usr``), else the base interpreter of the one running us."""
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    base = getattr(sys, "_base_executable", None) or sys.executable
    return str(Path(base).resolve())


_precompiled: list[Path | None] = []


def precompiled_server() -> Path | None:
    """The REPL server compiled by this interpreter, once per process, in a private temporary
    directory. Mounted where the sandbox's interpreter looks for it; an interpreter with
    another cache tag ignores it, and one whose magic number or source stamp differs recompiles
    (the .pyc is only ever a start-up shortcut). None if it cannot be made."""
    if not _precompiled:
        directory = Path(tempfile.mkdtemp(prefix="rlm-repl-"))
        atexit.register(shutil.rmtree, directory, True)
        target = directory / PYC_NAME
        try:
            py_compile.compile(
                str(REPL_SERVER), cfile=str(target), dfile=SANDBOX_REPL_PATH, doraise=True
            )
        except (OSError, py_compile.PyCompileError):
            _precompiled.append(None)
        else:
            _precompiled.append(target)
    return _precompiled[0]


def repl_rlimits(limits: SandboxLimits, *, nproc: bool) -> dict[str, int]:
    """The rlimits the REPL server sets on itself before any cell runs (``--limits``).

    ``nproc`` only where RLIMIT_NPROC counts the sandbox's own processes (its uid is its own,
    or per user namespace); under Docker without a user namespace the sandbox's uid is shared
    with every container and ``nobody`` process on the host, so the pids cgroup caps instead.
    """
    rlimits = {
        "as": limits.memory_mb << 20,
        "cpu": limits.cpu_seconds,
        "fsize": limits.file_size_mb << 20,
        "core": 0,
    }
    if nproc:
        rlimits["nproc"] = limits.pids
    return rlimits


def repl_command(python: str, limits: SandboxLimits, *, nproc: bool) -> list[str]:
    """``python -I -S -c BOOT --limits JSON``: the REPL server in isolated mode (no
    ``PYTHON*`` variables, no user site, no site-packages)."""
    rlimits = json.dumps(repl_rlimits(limits, nproc=nproc), separators=(",", ":"))
    return [python, "-I", "-S", "-c", BOOT, "--limits", rlimits]


def pop_message(buffer: bytearray, decoder: msgspec.json.Decoder[Any]) -> Any:
    """Take one complete JSON line off ``buffer`` and decode it; None when no line is
    complete yet. A malformed or oversized line is a :class:`ReplProtocolError`."""
    end = buffer.find(b"\n")
    if end < 0:
        if len(buffer) > MAX_LINE_BYTES:
            raise ReplProtocolError(f"a REPL line exceeds {MAX_LINE_BYTES} bytes")
        return None
    line = bytes(buffer[:end])
    del buffer[: end + 1]
    try:
        return decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise ReplProtocolError(f"bad message from the REPL: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ReplProtocolError(f"malformed line from the REPL: {exc}") from None


class ChannelSession(ReplSession):
    """What every sandbox's session shares: JSON lines over a byte channel, and the
    busy/killed bookkeeping that lets :meth:`kill` (from another thread) close the channel
    only once no read or write is in flight. Subclasses set ``_lock``, ``_busy = 0`` and
    ``_killed = False`` and provide the byte I/O: :meth:`_write`, :meth:`_receive`,
    :meth:`_close`."""

    _decoder: msgspec.json.Decoder[ReplMessage] = msgspec.json.Decoder(ReplMessage)
    _encoder = msgspec.json.Encoder()
    _lock: threading.Lock
    _busy: int
    _killed: bool

    def send(self, message: HostMessage) -> None:
        data = self._encoder.encode(message) + b"\n"
        self._enter()
        try:
            self._write(data)
        except OSError as exc:
            raise EOFError(f"the REPL is gone ({exc})") from None
        finally:
            self._leave()

    def receive(self, timeout: float | None) -> ReplMessage | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._enter()
        try:
            return self._receive(deadline)
        finally:
            self._leave()

    @abc.abstractmethod
    def _write(self, data: bytes) -> None:
        """Write all of ``data`` to the REPL's stdin (OSError when it is gone)."""

    @abc.abstractmethod
    def _receive(self, deadline: float | None) -> ReplMessage | None:
        """The next message, or None at ``deadline``; EOFError when the REPL ended."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Close the channel (called with the lock held and no I/O in flight)."""

    def _enter(self) -> None:
        with self._lock:
            if self._killed:
                raise EOFError("the REPL was killed")
            self._busy += 1

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._killed and not self._busy:
                self._close()


def probe_repl(sandbox: Sandbox, timeout_s: float) -> Any:
    """What ``check()`` does for every sandbox: start a REPL in a throw-away run directory,
    run ``6 * 7`` and expect ``42``. Returns the (already killed) session on success, for
    its details, or a sentence saying what failed."""
    with tempfile.TemporaryDirectory(prefix="rlm-sandbox-check-") as tmp:
        try:
            session = sandbox.start(run_dir=Path(tmp), limits=SandboxLimits(), label="check")
        except SandboxUnavailable as exc:
            return str(exc)
        try:
            session.send(ExecRequest(id=1, code="6 * 7", max_output_chars=100))
            result = session.receive(timeout_s)
        except (EOFError, ReplProtocolError) as exc:
            return f"the sandboxed REPL failed: {exc}"
        finally:
            session.kill()
    if not isinstance(result, CellResult) or result.stdout != "42\n":
        return f"the sandboxed REPL answered {result!r}"
    return session
