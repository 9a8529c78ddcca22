"""The ``docker`` sandbox: the REPL server as the main process of a locked-down container.

One container per REPL (per run, and per RLM depth level when a child RLM runs), created
with the Docker SDK and attached over the Engine API (``POST /containers/{id}/attach``, a
hijacked HTTP connection): the host writes JSON lines to the container's stdin and reads the
multiplexed stdout/stderr frames -- no ``docker exec`` per cell. The container gets

* ``network_mode="none"`` (only a loopback of its own), a read-only root, ``cap_drop=ALL``,
  ``no-new-privileges``, Docker's default seccomp profile, no IPC namespace sharing and no
  ``/dev/shm`` (``ipc_mode="none"``), ``--init`` (tini as PID 1: signals forwarded, zombies
  reaped);
* a non-root user: 65534 when the runner is root (``scratch/`` and ``artifacts/`` are
  chowned to it), else the runner's own uid;
* limits: ``pids_limit`` (the process cap), ``mem_limit`` = memory + tmpfs + slack with no
  swap, ``nano_cpus``, a size-capped ``/tmp`` tmpfs, plus the REPL server's own rlimits
  (address space, CPU seconds, file size, no core files) -- as in the local sandbox;
* mounts: the run's ``scratch/`` and ``artifacts/`` read-write at ``/scratch`` and
  ``/artifacts``, the REPL server (and its bytecode) read-only under ``/opt/rlm``; nothing
  else of the host (the image is self-contained: see :mod:`jobs.rlm.sandbox.image`);
* no log driver (``none``): the channel's traffic is never written to the daemon's logs;
* labels naming the run, the depth level and the process that made it, so a sweeper
  (:func:`sweep_containers`, run by the runner's recovery at start-up and on its timer)
  removes containers whose run is no longer running or whose runner died;
* ``sandbox.docker_runtime = "runsc"``: gVisor, when the engine has it (else a clear refusal).

The container dies with its run: ``kill()`` removes it (cancel, budget, timeout kill), the
REPL exits when the runner's attach connection closes (``stdin_once``: its stdin sees EOF),
and the sweeper removes what a runner killed outright left behind. The engine is the one
``DOCKER_HOST`` names (else the current ``docker context``, else the default socket or the
rootless one); a missing engine or image fails fast with the command to run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.rlm.protocol import Ready, ReplMessage, ReplProtocolError, Shutdown
from jobs.rlm.sandbox.base import (
    Sandbox,
    SandboxCheck,
    SandboxLimits,
    SandboxUnavailable,
)
from jobs.rlm.sandbox.common import (
    PYC_NAME,
    REPL_SERVER,
    SANDBOX_ENV,
    SANDBOX_REPL_DIR,
    SANDBOX_REPL_PATH,
    SANDBOX_UID,
    ChannelSession,
    pop_message,
    precompiled_server,
    probe_repl,
    repl_command,
)
from jobs.rlm.sandbox.image import DEFAULT_IMAGE

__all__ = [
    "DOCKER_INSTALL_HINT",
    "LABEL_PID",
    "LABEL_RUN",
    "LABEL_SANDBOX",
    "DockerReplSession",
    "DockerSandbox",
    "engine_url",
    "sweep_containers",
]

DOCKER_INSTALL_HINT = (
    "install Docker with `sudo apt-get install docker.io` (Debian/Ubuntu; or "
    "scripts/install_sandbox_deps.sh) and start it with `sudo systemctl start docker` -- or "
    "point DOCKER_HOST at an engine that answers (check with `docker info`)"
)
GVISOR_HINT = (
    "install gVisor (https://gvisor.dev/docs/user_guide/install/), register it with "
    "`sudo runsc install && sudo systemctl reload docker`, or set "
    'sandbox.docker_runtime = "" to use the engine\'s default runtime'
)
LABEL_SANDBOX = "codex-delegation.sandbox"  # "rlm"
LABEL_RUN = "codex-delegation.run"  # the run id
LABEL_LEVEL = "codex-delegation.level"  # the REPL's label, e.g. "depth0"
LABEL_RUN_DIR = "codex-delegation.run-dir"
LABEL_HOST = "codex-delegation.host"  # the host of the process that made it
LABEL_PID = "codex-delegation.pid"  # ... its pid
LABEL_PID_START = "codex-delegation.pid-start"  # ... and its start time (pid reuse)
SANDBOX_HOSTNAME = "rlm-sandbox"
_HOST = socket.gethostname()
log = logging.getLogger(__name__)
_READ_CHUNK = 1 << 20
_STDOUT, _STDERR = 1, 2
_STDERR_TAIL = 8192
# As in the local sandbox: the container holds more than the REPL's address space (tini, the
# page cache of what it reads, /tmp); the slack lets one hog get a MemoryError.
_MEMORY_SLACK_MB = 128
_INIT_TASKS = 1  # tini, in the pids cgroup with the REPL
_API_TIMEOUT_S = 30
# Run states in which an engine may still use its containers (a pausing run finishes its step).
_ACTIVE_STATES = frozenset({"running", "pausing"})


# -- the engine ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where the engine is, and why we think so."""

    url: str
    source: str  # "DOCKER_HOST", "docker context NAME", "default socket", "rootless socket"
    tls: Any = None

    def describe(self) -> str:
        return f"{self.url} ({self.source})"

    def socket_exists(self) -> bool:
        """False only for a ``unix://`` endpoint whose socket file is missing."""
        return not self.url.startswith("unix://") or Path(self.url[len("unix://") :]).exists()


def engine_url() -> Endpoint:
    """The engine to use: ``DOCKER_HOST``; else the docker CLI's current context (or
    ``DOCKER_CONTEXT``); else ``/var/run/docker.sock``; else the rootless socket."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return Endpoint(host, "DOCKER_HOST")
    context = _cli_context()
    if context is not None:
        return context
    rootless = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    for path, source in (
        (Path("/var/run/docker.sock"), "default socket"),
        (rootless / "docker.sock", "rootless socket"),
    ):
        if path.exists():
            return Endpoint(f"unix://{path}", source)
    return Endpoint("unix:///var/run/docker.sock", "default socket")


def _cli_context() -> Endpoint | None:
    """The docker CLI's current context when it is not ``default`` (cheap: two small files)."""
    name = os.environ.get("DOCKER_CONTEXT")
    config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    if not name:
        try:
            name = json.loads((config_dir / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError, AttributeError):
            return None
    if not name or name == "default":
        return None
    try:
        from docker.context import ContextAPI

        context = ContextAPI.get_context(name)
    except Exception:
        return None
    if context is None or not context.Host:
        return None
    return Endpoint(str(context.Host), f"docker context {name!r}", context.TLSConfig)


def no_engine_message(endpoint: Endpoint, reason: str) -> str:
    return (
        f"no Docker engine answers at {endpoint.describe()}: {reason}. To fix it, "
        f"{DOCKER_INSTALL_HINT}. For a private engine without systemd: "
        "`sudo dockerd --host unix:///tmp/docker/docker.sock --data-root /tmp/docker/data &` "
        "then `export DOCKER_HOST=unix:///tmp/docker/docker.sock` "
        "(`scripts/with_docker.sh CMD` does exactly that around CMD)"
    )


def missing_image_message(image: str, endpoint: Endpoint) -> str:
    return (
        f"the docker sandbox's image {image!r} (rlm.docker_image) is not in the engine at "
        f"{endpoint.describe()}: build it with `app sandbox build-image` (needs no registry), "
        f"or set rlm.docker_image to an image that has python3, e.g. "
        f'`docker pull python:3.12-slim` and `-c rlm.docker_image="python:3.12-slim"`'
    )


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def connect(endpoint: Endpoint | None = None) -> Any:
    """A ``docker.DockerClient`` for the engine, pinged; one per endpoint per process.
    Raises :class:`SandboxUnavailable` saying what to run when no engine answers."""
    endpoint = endpoint or engine_url()
    with _clients_lock:
        client = _clients.get(endpoint.url)
    if client is not None:
        return client
    if not endpoint.socket_exists():
        raise SandboxUnavailable(no_engine_message(endpoint, "the socket does not exist"))
    try:
        import docker
        import docker.errors
    except ImportError:  # pragma: no cover - a declared dependency
        raise SandboxUnavailable("the docker sandbox needs the `docker` package") from None
    try:
        if endpoint.source == "DOCKER_HOST":
            client = docker.from_env(timeout=_API_TIMEOUT_S, max_pool_size=32)
        else:
            client = docker.DockerClient(
                base_url=endpoint.url,
                tls=endpoint.tls or False,
                timeout=_API_TIMEOUT_S,
                max_pool_size=32,
            )
        client.ping()
    except Exception as exc:  # DockerException, requests' errors, OSError: all "no engine"
        raise SandboxUnavailable(no_engine_message(endpoint, _short(exc))) from None
    with _clients_lock:
        _clients.setdefault(endpoint.url, client)
        return _clients[endpoint.url]


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def engine_runtimes(client: Any) -> list[str]:
    """The OCI runtimes the engine knows (``runc``, ``runsc`` for gVisor, ...)."""
    info = client.info()
    return sorted((info.get("Runtimes") or {}).keys())


# -- process identity for the labels ----------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _creator_is_dead(labels: dict[str, str]) -> bool:
    """True when the process that made the container ran on this host and is gone (or its
    pid now belongs to another process)."""
    if labels.get(LABEL_HOST) != _HOST:
        return False
    pid_text = labels.get(LABEL_PID, "")
    if not pid_text.isdigit():
        return False
    start = _process_start(int(pid_text))
    if start is None:
        return True
    return labels.get(LABEL_PID_START, start) != start


# -- the session --------------------------------------------------------------------------------


class DockerReplSession(ChannelSession):
    """A REPL server as a container's main process; JSON lines over the attach stream."""

    def __init__(self, client: Any, container_id: str, name: str, raw: Any) -> None:
        self.client = client
        self.container_id = container_id
        self.name = name
        self.ready: Ready | None = None
        self._raw = raw  # keeps the HTTP response (and so the connection) alive
        self._sock: socket.socket = getattr(raw, "_sock", raw)
        self._fd = self._sock.fileno()
        self._frames = bytearray()  # attach stream bytes not yet demultiplexed
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._eof = False
        # As in the local sandbox: kill() may come from another thread while send/receive
        # run; it marks the session killed at once, closes the socket only when no I/O is in
        # flight, and removes the container (which ends the stream under a blocked reader).
        self._lock = threading.Lock()
        self._busy = 0
        self._killed = False
        self._closed = False
        self._removed = False

    # -- ReplSession --

    def _write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _receive(self, deadline: float | None) -> ReplMessage | None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            message = pop_message(self._stdout, self._decoder)
            if message is not None:
                return message  # type: ignore[no-any-return]
            if self._killed:
                raise EOFError("the REPL was killed")
            if self._eof:
                raise EOFError(f"the REPL exited{self._exit_detail()}")
            pending = getattr(self._sock, "pending", None)  # TLS: bytes already decrypted
            if not (pending is not None and pending()):
                left_ms = None
                if deadline is not None:
                    left_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
                if not poller.poll(left_ms):
                    return None
            try:
                chunk = self._sock.recv(_READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise EOFError(f"the REPL is gone ({exc})") from None
            if not chunk:
                self._eof = True
                continue
            self._frames += chunk
            self._demux()

    def _demux(self) -> None:
        """Move complete frames (8-byte header: stream, 0, 0, 0, big-endian size) from the
        attach stream to stdout/stderr."""
        frames = self._frames
        offset = 0
        while len(frames) - offset >= 8:
            stream, size = struct.unpack_from(">BxxxL", frames, offset)
            if len(frames) - offset - 8 < size:
                break
            body = frames[offset + 8 : offset + 8 + size]
            if stream == _STDOUT:
                self._stdout += body
            elif stream == _STDERR:
                self._stderr += body
                del self._stderr[:-_STDERR_TAIL]
            offset += 8 + size
        del frames[:offset]

    def interrupt(self) -> None:
        """SIGINT to the container's init, which forwards it to the REPL alone."""
        if self._killed or self._eof:
            return
        import docker.errors

        try:
            self.client.api.kill(self.container_id, signal="SIGINT")
        except (docker.errors.DockerException, OSError) as exc:  # gone, or the engine is
            log.warning("could not interrupt sandbox container %s: %s", self.name, _short(exc))

    def kill(self) -> None:
        with self._lock:
            if self._killed:
                return
            self._killed = True
        try:
            self._remove()
        finally:
            with self._lock:
                if not self._busy:
                    self._close()

    @property
    def alive(self) -> bool:
        if self._killed or self._eof:
            return False
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        for _, events in poller.poll(0):
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return False
            if events & select.POLLIN and not self._frames_pending():
                return False  # end of stream: the container is gone
        return True

    def _frames_pending(self) -> bool:
        """Whether the readable stream has data (not its end), without consuming it."""
        try:
            return bool(self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return True
        except (OSError, ValueError, TypeError):  # TLS/SSH channels refuse MSG_PEEK: assume data
            return True

    # -- extras --

    def shutdown(self, timeout: float = 2.0) -> None:
        """Ask the REPL to exit, then make sure the container is gone."""
        if self.alive:
            with contextlib.suppress(EOFError):
                self.send(Shutdown())
        self.kill()

    def stderr_tail(self, limit: int = 4000) -> str:
        """What the interpreter wrote to stderr before the REPL took it over."""
        return bytes(self._stderr[-limit:]).decode("utf-8", "replace")

    def inspect(self) -> dict[str, Any] | None:
        """The container as the engine sees it (None once it is gone)."""
        import docker.errors

        try:
            found: dict[str, Any] = self.client.api.inspect_container(self.container_id)
        except docker.errors.NotFound:
            return None
        return found

    def __enter__(self) -> DockerReplSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def _exit_detail(self) -> str:
        state = (self.inspect() or {}).get("State") or {}
        parts = []
        if state.get("ExitCode") is not None and not state.get("Running"):
            parts.append(f" with code {state['ExitCode']}")
        if state.get("OOMKilled"):
            parts.append(" (out of memory: the container hit its memory limit)")
        tail = self.stderr_tail(1000).strip()
        detail = "".join(parts)
        return f"{detail}: {tail}" if tail else detail

    def _remove(self) -> None:
        """Remove the container (and so kill everything in it). Never raises: a container
        the engine could not remove now is left to the sweeper (its run is over)."""
        if self._removed:
            return
        import docker.errors

        try:
            self.client.api.remove_container(self.container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                log.warning("could not remove sandbox container %s: %s", self.name, _short(exc))
                return
        except (docker.errors.DockerException, OSError) as exc:
            log.warning("could not remove sandbox container %s: %s", self.name, _short(exc))
            return
        self._removed = True

    def _close(self) -> None:
        """Close the attach connection (with the lock held, no I/O in flight)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        for closable in (self._raw, self._sock, getattr(self._raw, "_response", None)):
            with contextlib.suppress(Exception):
                if closable is not None:
                    closable.close()


# -- the sandbox ----------------------------------------------------------------------------------


class DockerSandbox(Sandbox):
    """A container per REPL on the Docker engine ``DOCKER_HOST`` (or the default) names."""

    name = "docker"

    def __init__(
        self,
        *,
        image: str | None = None,
        runtime: str = "",
        start_timeout_s: float = 20.0,
        endpoint: Endpoint | None = None,
    ) -> None:
        self.image = image or DEFAULT_IMAGE
        self.runtime = runtime
        self.start_timeout_s = start_timeout_s
        self.endpoint = endpoint or engine_url()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.endpoint)
        return self._client

    def preflight(self) -> None:
        """The engine answers, the image is there, the runtime exists: else a
        :class:`SandboxUnavailable` that says exactly what to run. Pulls nothing."""
        import docker.errors

        client = self.client
        try:
            client.api.inspect_image(self.image)
        except docker.errors.ImageNotFound:
            raise SandboxUnavailable(missing_image_message(self.image, self.endpoint)) from None
        except docker.errors.APIError as exc:
            raise SandboxUnavailable(no_engine_message(self.endpoint, _short(exc))) from None
        if self.runtime and self.runtime not in engine_runtimes(client):
            raise SandboxUnavailable(
                f"sandbox.docker_runtime = {self.runtime!r} but the engine at "
                f"{self.endpoint.describe()} has no such runtime "
                f"(it has {', '.join(engine_runtimes(client))}): {GVISOR_HINT}"
            )

    @classmethod
    def check(cls, image: str | None = None, runtime: str = "") -> SandboxCheck:
        """Actually start a sandboxed REPL, run one cell in it, and say whether gVisor is
        there."""
        sandbox = cls(image=image, runtime=runtime)
        try:
            sandbox.preflight()
        except SandboxUnavailable as exc:
            return SandboxCheck(cls.name, False, str(exc))
        session = probe_repl(sandbox, sandbox.start_timeout_s)
        if isinstance(session, str):
            return SandboxCheck(cls.name, False, session)
        assert session.ready is not None
        version = sandbox.client.version().get("Version", "?")
        runtimes = engine_runtimes(sandbox.client)
        gvisor = "yes" if "runsc" in runtimes else "no"
        return SandboxCheck(
            cls.name,
            True,
            f"engine {version} at {sandbox.endpoint.describe()}; image {sandbox.image} "
            f"(python {session.ready.python}); runtime {sandbox.runtime or 'default'}; "
            f"gVisor (runsc): {gvisor}; runs as uid {sandbox.user().split(':')[0]}; "
            "limits: pids+memory+cpu cgroups, rlimits",
        )

    def user(self) -> str:
        """The container's ``uid:gid``: 65534 for a root runner, else the runner's own."""
        if os.geteuid() == 0:
            return f"{SANDBOX_UID}:{SANDBOX_UID}"
        return f"{os.geteuid()}:{os.getegid()}"

    def labels(self, run_dir: Path, label: str) -> dict[str, str]:
        pid = os.getpid()
        return {
            LABEL_SANDBOX: "rlm",
            LABEL_RUN: run_dir.name,
            LABEL_LEVEL: label,
            LABEL_RUN_DIR: str(run_dir),
            LABEL_HOST: _HOST,
            LABEL_PID: str(pid),
            LABEL_PID_START: _process_start(pid) or "",
        }

    def container_options(
        self, *, run_dir: Path, limits: SandboxLimits, label: str
    ) -> dict[str, Any]:
        """The ``create_container`` arguments (``host_config`` as a plain dict of the
        ``create_host_config`` arguments). Creates ``scratch/`` and ``artifacts/`` (owned by
        the sandbox uid when the runner is root)."""
        scratch = (run_dir / "scratch").resolve()
        artifacts = (run_dir / "artifacts").resolve()
        for path in (scratch, artifacts):
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, SANDBOX_UID, SANDBOX_UID)
        binds = {
            str(scratch): {"bind": "/scratch", "mode": "rw"},
            str(artifacts): {"bind": "/artifacts", "mode": "rw"},
            str(REPL_SERVER): {"bind": SANDBOX_REPL_PATH, "mode": "ro"},
        }
        pyc = precompiled_server()
        if pyc is not None:
            binds[str(pyc)] = {"bind": f"{SANDBOX_REPL_DIR}/__pycache__/{PYC_NAME}", "mode": "ro"}
        memory = f"{limits.memory_mb + limits.tmpfs_mb + _MEMORY_SLACK_MB}m"
        host_config: dict[str, Any] = {
            "binds": binds,
            "network_mode": "bridge" if limits.network else "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "ipc_mode": "none",
            "init": True,
            "pids_limit": limits.pids + _INIT_TASKS,
            "mem_limit": memory,
            "memswap_limit": memory,
            "nano_cpus": max(1, int(limits.cpus * 1e9)),
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_mb}m,mode=1777"},  # noqa: S108
            "log_config": {"type": "none", "config": {}},
        }
        if self.runtime:
            host_config["runtime"] = self.runtime
        safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in run_dir.name)[:40]
        level = "".join(c if c.isalnum() or c in "_.-" else "_" for c in label)[:20]
        return {
            "image": self.image,
            "command": repl_command("python3", limits, nproc=False),
            "name": f"rlm-{safe or 'run'}-{level or 'repl'}-{uuid.uuid4().hex[:8]}",
            "user": self.user(),
            "working_dir": "/scratch",
            "environment": dict(SANDBOX_ENV),
            "hostname": SANDBOX_HOSTNAME,
            "labels": self.labels(run_dir, label),
            # Not detached, with stdin: the SDK sets AttachStdin/StdinOnce -- the container's
            # stdin closes when our attach connection does (the REPL then exits).
            "stdin_open": True,
            "tty": False,
            "host_config": host_config,
        }

    def start(self, *, run_dir: Path, limits: SandboxLimits, label: str) -> DockerReplSession:
        import docker.errors

        client = self.client
        options = self.container_options(run_dir=run_dir, limits=limits, label=label)
        host_config = client.api.create_host_config(**options.pop("host_config"))
        try:
            created = client.api.create_container(host_config=host_config, **options)
        except docker.errors.ImageNotFound:
            raise SandboxUnavailable(missing_image_message(self.image, self.endpoint)) from None
        except docker.errors.APIError as exc:
            raise SandboxUnavailable(self._refused(exc)) from None
        except (docker.errors.DockerException, OSError) as exc:
            raise SandboxUnavailable(no_engine_message(self.endpoint, _short(exc))) from None
        container_id = str(created["Id"])
        session: DockerReplSession | None = None
        try:
            raw = client.api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            session = DockerReplSession(client, container_id, options["name"], raw)
            client.api.start(container_id)
            message = session.receive(self.start_timeout_s)
        except docker.errors.APIError as exc:
            self._discard(session, container_id)
            raise SandboxUnavailable(self._refused(exc)) from None
        except (EOFError, ReplProtocolError, OSError) as exc:
            self._discard(session, container_id)
            if "exec python3 failed" in str(exc):  # tini could not start it
                raise SandboxUnavailable(self._no_python(str(exc))) from None
            raise SandboxUnavailable(f"the docker sandbox failed to start: {exc}") from None
        except BaseException:
            self._discard(session, container_id)
            raise
        if not isinstance(message, Ready):
            detail = session.stderr_tail()
            self._discard(session, container_id)
            what = "no answer in time" if message is None else f"{message!r}"
            raise SandboxUnavailable(f"the docker sandbox failed to start: {what} {detail}")
        session.ready = message
        return session

    def _discard(self, session: DockerReplSession | None, container_id: str) -> None:
        import docker.errors

        if session is not None:
            session.kill()
            return
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.client.api.remove_container(container_id, force=True)

    def _no_python(self, detail: str) -> str:
        return (
            f"the image {self.image!r} (rlm.docker_image) has no python3 on its PATH "
            f"({detail}): build the sandbox's own with `app sandbox build-image`, or name an "
            "image with python3 (>= 3.9)"
        )

    def _refused(self, exc: Exception) -> str:
        text = _short(exc)
        if "executable file not found" in text or "no such file or directory" in text:
            return self._no_python(text)
        if "runtime" in text and self.runtime:
            return f"the engine cannot use the runtime {self.runtime!r}: {text}. {GVISOR_HINT}"
        return f"the engine refused the sandbox container: {text}"


# -- the sweeper ---------------------------------------------------------------------------------


def sweep_containers(
    run_state: Callable[[str], str | None], *, endpoint: Endpoint | None = None
) -> list[str]:
    """Remove sandbox containers left behind: those whose run is known and neither running nor
    pausing, and those made by a process on this host that is gone (a runner killed outright).
    Returns the names removed. ``run_state(run_id)`` is the run's state, or None when the run
    is not this runner's (such containers are left to their own runner, unless their maker
    died).

    Costs nothing without an engine: a missing socket is not even connected to."""
    endpoint = endpoint or engine_url()
    if not endpoint.socket_exists():
        return []
    try:
        client = connect(endpoint)
    except SandboxUnavailable:
        return []
    import docker.errors

    removed = []
    for container in client.api.containers(all=True, filters={"label": f"{LABEL_SANDBOX}=rlm"}):
        labels: dict[str, str] = container.get("Labels") or {}
        stale = _creator_is_dead(labels)
        if not stale:
            state = run_state(labels.get(LABEL_RUN, ""))
            stale = state is not None and state not in _ACTIVE_STATES
        if not stale:
            continue
        name = str((container.get("Names") or [container["Id"]])[0]).lstrip("/")
        try:
            client.api.remove_container(container["Id"], force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        removed.append(name)
    return removed
