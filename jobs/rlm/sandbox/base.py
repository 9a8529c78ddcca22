"""The sandbox interface: start the REPL server isolated, talk to it, stop it.

A sandbox gives the REPL exactly: a Python interpreter, the REPL server file (read-only),
the run's ``scratch/`` and ``artifacts/`` (read-write, mounted at ``/scratch`` and
``/artifacts``), no network, no other host path (the run's events, manifest, control file
and token are never visible), resource limits, and death with the runner.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from jobs.rlm.protocol import HostMessage, ReplMessage


class SandboxUnavailable(Exception):
    """This sandbox cannot run here; the message says how to fix that (start Docker, allow
    `local` in the repo config, install bubblewrap, ...). Never fall back silently."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits (from ``sandbox.*`` config)."""

    memory_mb: int = 1024
    pids: int = 128
    cpus: float = 1.0
    tmpfs_mb: int = 64
    network: bool = False
    #: CPU seconds for the REPL and each process it starts (RLIMIT_CPU; SIGXCPU kills it).
    cpu_seconds: int = 1800
    #: Largest file the REPL may write (RLIMIT_FSIZE), in MiB.
    file_size_mb: int = 256


@dataclass(frozen=True)
class SandboxCheck:
    """What ``app sandbox check`` reports for one sandbox."""

    name: str
    available: bool
    detail: str


class ReplSession(abc.ABC):
    """A live REPL process inside a sandbox."""

    @abc.abstractmethod
    def send(self, message: HostMessage) -> None:
        """Write one message to the REPL."""

    @abc.abstractmethod
    def receive(self, timeout: float | None) -> ReplMessage | None:
        """The REPL's next message, or None on timeout; raises EOFError when it died."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Interrupt the running cell (SIGINT to the REPL)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the REPL and everything it started, now (idempotent)."""

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether the REPL process is still running."""


class Sandbox(abc.ABC):
    """A kind of sandbox."""

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def check(cls) -> SandboxCheck:
        """Whether this sandbox works on this machine, and what is missing if not."""

    @abc.abstractmethod
    def start(self, *, run_dir: Path, limits: SandboxLimits, label: str) -> ReplSession:
        """Start the REPL server for the run; returns once it said ``ready``."""
