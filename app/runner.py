"""The runner process: owns the home, its database and its run files while it is up.

Only one runner may own a home at a time; an exclusive ``flock`` on ``runner.lock`` enforces
it (the kernel drops the lock when the process dies, so a crashed runner never blocks the
next one, and whatever endpoint files it left are simply overwritten). Start-up applies
migrations, re-syncs every ``events.jsonl`` from the database, binds the HTTP socket, then
writes ``control_endpoint.json`` and ``control_auth.json`` (0600) for clients.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import uvicorn

from app.home import Home
from app.logs import configure_logging

log = logging.getLogger(__name__)


class RunnerAlreadyUp(RuntimeError):
    """Another live process holds this home's runner lock."""


@contextmanager
def runner_lock(home: Home) -> Iterator[None]:
    """Hold the home's runner lock for the duration of the block, or raise RunnerAlreadyUp."""
    home.ensure()
    fd = os.open(home.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunnerAlreadyUp(
                f"a runner (pid {holder}) already owns {home.root}; stop it or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _Server(uvicorn.Server):
    """uvicorn, with the runner owning signals (see :func:`_stop_on_signals`).

    uvicorn's own handling re-delivers SIGINT/SIGTERM once it has stopped, which would turn
    a clean exit into a death by signal, and it installs them only once serving starts.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextmanager
def _stop_on_signals(server: uvicorn.Server) -> Iterator[None]:
    """From now on, SIGINT/SIGTERM stop ``server`` gracefully (a second SIGINT forcefully)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(sig: int, frame: Any) -> None:
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio turns TCP_NODELAY on for accepted connections only
    # when the socket says it is TCP; without it every keep-alive response waits ~40 ms for
    # the client's delayed ACK (Nagle). Accepted sockets also inherit the listener's option.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def serve(
    home: Home,
    *,
    host: str | None = None,
    port: int | None = None,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
    on_ready: Callable[[Any], None] | None = None,
) -> int:
    """Run the runner until SIGINT/SIGTERM (or ``stop`` is set); return an exit code.

    ``host``/``port`` override ``ui.bind_host``/``ui.port`` and are capped like them.
    """
    from app.config import ConfigError, resolve_config
    from app.runtime import Runtime

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["ui.bind_host"] = host
    if port is not None:
        overrides["ui.port"] = port
    try:
        config = resolve_config(overrides=overrides)
    except ConfigError as error:
        print(f"app serve: {error}", file=sys.stderr)
        return 2
    configure_logging(config.get("log.level"))
    bind_host = str(config.get("ui.bind_host"))
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(runner_lock(home))
            runtime = Runtime.open(home, config)
            stack.callback(runtime.stop)
            report = runtime.store.log.reconcile()
            try:
                sock = stack.enter_context(
                    contextlib.closing(bind_socket(bind_host, int(config.get("ui.port"))))
                )
            except OSError as error:
                print(f"app serve: cannot listen on {bind_host}: {error}", file=sys.stderr)
                return 1
            runtime.start(bind_host, sock.getsockname()[1])
            from app.api.app import build_app

            server = _Server(
                uvicorn.Config(
                    build_app(runtime),
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=2,
                    server_header=False,
                )
            )
            # Signals stop the server from here on, before anyone is told to press Ctrl-C.
            stack.enter_context(_stop_on_signals(server))
            _announce(out, home, runtime, report.runs_checked, len(report.mirrors_repaired))
            if on_ready is not None:
                on_ready(runtime)
            if stop is not None:
                threading.Thread(target=_stop_when_set, args=(stop, server), daemon=True).start()
            server.run(sockets=[sock])
    except RunnerAlreadyUp as error:
        print(f"app serve: {error}", file=sys.stderr)
        return 1
    print("runner stopped", file=out, flush=True)
    return 0


def _announce(out: TextIO, home: Home, runtime: Any, checked: int, repaired: int) -> None:
    print(f"codex-delegation runner (pid {os.getpid()})", file=out)
    print(f"home: {home.root}", file=out)
    print(f"event mirrors: {checked} runs checked, {repaired} repaired", file=out)
    print(f"API: {runtime.base_url}/api/ (token in {home.auth_path})", file=out)
    print(f"UI login (one-time): {runtime.login_url()}", file=out)
    print("Press Ctrl-C to stop.", file=out, flush=True)


def _stop_when_set(stop: threading.Event, server: uvicorn.Server) -> None:
    stop.wait()
    server.should_exit = True
