"""The docker sandbox's own checks: the container the engine actually runs, the sweeper and
its recovery hook, engine discovery, the fail-fast messages, the attach channel's lifetime,
gVisor, and ``app sandbox build-image``. The attacks (network, writes, secrets, fork bomb,
memory hog, infinite loop, ...) are in tests/test_sandbox.py, parametrized over both
sandboxes, and the engine suites in tests/test_rlm_engine.py.

Tests that need an engine skip with the reason outside CI and fail in CI (``make test`` runs
them under scripts/with_docker.sh, which starts a private ``dockerd`` when none answers).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.control.spawn import spawn_run
from app.wire.events import Actor
from db.store import Store
from jobs.recovery import recover
from jobs.rlm.protocol import ExecRequest
from jobs.rlm.sandbox.base import SandboxLimits, SandboxUnavailable
from jobs.rlm.sandbox.docker import (
    LABEL_PID,
    LABEL_PID_START,
    LABEL_RUN,
    DockerReplSession,
    DockerSandbox,
    Endpoint,
    connect,
    engine_runtimes,
    engine_url,
    sweep_containers,
)
from jobs.rlm.sandbox.image import DEFAULT_IMAGE, build_image
from tests.conftest import APP, subprocess_env
from tests.test_sandbox import assert_no_containers, require_sandbox, sandbox_containers

LIMITS = SandboxLimits(memory_mb=256, pids=16, tmpfs_mb=8, cpus=0.5)


@pytest.fixture
def docker_ok(tmp_path: Path) -> Iterator[None]:
    """The engine works here (else skip, or fail in CI); no container is left afterwards."""
    require_sandbox("docker")
    yield
    assert_no_containers(tmp_path, wait_s=5)


def run_dir(tmp_path: Path, name: str = "r-docker") -> Path:
    path = tmp_path / "home" / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- the container as the engine runs it ------------------------------------------------------


def test_the_container_is_locked_down(docker_ok: None, tmp_path: Path) -> None:
    sandbox = DockerSandbox()
    run = run_dir(tmp_path)
    with sandbox.start(run_dir=run, limits=LIMITS, label="depth0") as session:
        attrs = session.inspect()
        assert attrs is not None
        host = attrs["HostConfig"]
        config = attrs["Config"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["Privileged"] is False
        assert host["IpcMode"] == "none"
        assert host["Init"] is True
        assert host["PidsLimit"] == LIMITS.pids + 1  # + tini
        assert host["Memory"] == host["MemorySwap"] == (256 + 8 + 128) << 20
        assert host["NanoCpus"] == 500_000_000
        assert host["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=8m,mode=1777"}
        assert host["LogConfig"]["Type"] == "none"
        assert host.get("Runtime") in (None, "", "runc")
        assert config["User"] in ("65534:65534", f"{_uid()}:{_gid()}")
        assert config["Labels"][LABEL_RUN] == "r-docker"
        assert config["Labels"]["codex-delegation.level"] == "depth0"
        assert config["Labels"][LABEL_PID] == str(_pid())
        assert config["Env"] and not any(e.startswith("PYTHON") for e in config["Env"])
        mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in attrs["Mounts"]}
        repl_dir = "/opt/rlm"
        assert mounts.pop("/scratch") == (str((run / "scratch").resolve()), True)
        assert mounts.pop("/artifacts") == (str((run / "artifacts").resolve()), True)
        assert mounts.pop(f"{repl_dir}/repl_server.py")[1] is False
        assert [rw for _, rw in mounts.values()] == [False] * len(mounts)  # the .pyc, read-only
        assert all(dest.startswith(f"{repl_dir}/__pycache__/") for dest in mounts)
        # From inside: no capabilities, no new privileges, nothing of the host's mounts.
        session.send(
            ExecRequest(
                id=1,
                code=(
                    "status = open('/proc/self/status').read().splitlines()\n"
                    "print([l.split()[1] for l in status if l.startswith(('CapEff', 'CapBnd', "
                    "'NoNewPrivs', 'Seccomp:'))])\n"
                    "print(sorted({l.split()[4] for l in open('/proc/self/mountinfo')} & "
                    "{'/scratch', '/artifacts', '/', '/tmp', '/usr', '/home', '/root'}))"
                ),
            )
        )
        result = session.receive(10)
        assert result is not None and getattr(result, "error", "x") is None, result
        assert getattr(result, "stdout", "").splitlines() == [
            "['0000000000000000', '0000000000000000', '1', '2']",  # seccomp filter mode
            "['/', '/artifacts', '/scratch', '/tmp']",
        ]


def _uid() -> int:
    import os

    return os.geteuid()


def _gid() -> int:
    import os

    return os.getegid()


def _pid() -> int:
    import os

    return os.getpid()


def test_killing_a_blocked_reader_and_the_runner_going_away(
    docker_ok: None, tmp_path: Path
) -> None:
    sandbox = DockerSandbox()
    session = sandbox.start(run_dir=run_dir(tmp_path), limits=LIMITS, label="depth0")
    session.send(ExecRequest(id=1, code="import time\ntime.sleep(60)"))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            session.receive(30)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    started = time.monotonic()
    session.kill()  # from another thread, while the reader is blocked
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - started < 3
    assert errors and isinstance(errors[0], EOFError), errors
    assert session.inspect() is None and not session.alive

    # A runner that dies drops the attach connection: the container's stdin closes
    # (stdin_once) and the REPL, idle between cells, exits on its own.
    second = sandbox.start(run_dir=run_dir(tmp_path), limits=LIMITS, label="depth0")
    try:
        second._close()  # what the kernel does to a dead runner's sockets
        deadline = time.monotonic() + 10
        while (second.inspect() or {}).get("State", {}).get("Running"):
            assert time.monotonic() < deadline, "the REPL outlived its runner's connection"
            time.sleep(0.05)
    finally:
        second.kill()


# -- the sweeper and recovery -------------------------------------------------------------------


class _DeadMaker(DockerSandbox):
    """Labels its containers as made by a process that no longer exists."""

    def labels(self, run_dir: Path, label: str) -> dict[str, str]:
        labels = super().labels(run_dir, label)
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        labels[LABEL_PID] = str(gone.pid)
        labels[LABEL_PID_START] = "1"
        return labels


def test_the_sweeper_removes_what_no_running_run_owns(docker_ok: None, tmp_path: Path) -> None:
    sandbox = DockerSandbox()
    finished = sandbox.start(run_dir=run_dir(tmp_path, "r-finished"), limits=LIMITS, label="a")
    running = sandbox.start(run_dir=run_dir(tmp_path, "r-running"), limits=LIMITS, label="a")
    pausing = sandbox.start(run_dir=run_dir(tmp_path, "r-pausing"), limits=LIMITS, label="a")
    foreign = sandbox.start(run_dir=run_dir(tmp_path, "r-foreign"), limits=LIMITS, label="a")
    orphan = _DeadMaker().start(run_dir=run_dir(tmp_path, "r-orphan"), limits=LIMITS, label="a")
    states = {
        "r-finished": "succeeded",
        "r-running": "running",
        "r-pausing": "pausing",  # its engine is finishing a step: still in use
        "r-orphan": "running",
    }
    try:
        removed = sweep_containers(states.get)  # (another engine user's leftovers go too)
        assert {finished.name, orphan.name} <= set(removed)
        assert not {running.name, pausing.name, foreign.name} & set(removed)
        assert finished.inspect() is None and orphan.inspect() is None
        assert all(s.inspect() is not None for s in (running, pausing, foreign))
        assert sweep_containers(states.get) == []
        # A session whose container went away notices it without a read.
        assert running.alive
        running.client.api.remove_container(running.container_id, force=True)
        deadline = time.monotonic() + 5
        while running.alive:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        for session in (finished, running, pausing, foreign, orphan):
            session.kill()


def test_recovery_sweeps_containers_of_runs_that_are_not_running(
    docker_ok: None, store: Store, tmp_path: Path
) -> None:
    run = spawn_run(store.log, task="t", actor=Actor.CLI, engine="rlm")  # queued, not running
    session = DockerSandbox().start(
        run_dir=store.home.run_dir(run.id), limits=LIMITS, label="depth0"
    )
    try:
        assert session.inspect() is not None
        recover(store.log)
        assert session.inspect() is None
        assert sandbox_containers(tmp_path) == []
    finally:
        session.kill()


def test_the_sweeper_costs_nothing_without_an_engine(tmp_path: Path) -> None:
    missing = Endpoint(f"unix://{tmp_path}/no.sock", "DOCKER_HOST")
    started = time.monotonic()
    assert sweep_containers(lambda run_id: "failed", endpoint=missing) == []
    assert time.monotonic() - started < 0.05


# -- discovery and fail-fast messages -----------------------------------------------------------


def test_engine_discovery(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert engine_url() == Endpoint("tcp://127.0.0.1:2375", "DOCKER_HOST")
    # Without DOCKER_HOST: the docker CLI's current context, when it is not `default`.
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "private"}))
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"private").hexdigest()
    meta.mkdir(parents=True)
    endpoint = {"Host": f"unix://{tmp_path}/private.sock", "SkipTLSVerify": False}
    (meta / "meta.json").write_text(
        json.dumps({"Name": "private", "Metadata": {}, "Endpoints": {"docker": endpoint}})
    )
    found = engine_url()
    assert (found.url, found.source) == (
        f"unix://{tmp_path}/private.sock",
        "docker context 'private'",
    )
    with pytest.raises(SandboxUnavailable) as refused:
        connect(found)
    text = str(refused.value)
    assert f"no Docker engine answers at unix://{tmp_path}/private.sock" in text
    assert "apt-get install docker.io" in text and "scripts/with_docker.sh" in text
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert engine_url().source in ("default socket", "rootless socket")


def test_a_missing_image_or_python_fails_fast_saying_what_to_run(
    docker_ok: None, tmp_path: Path
) -> None:
    with pytest.raises(SandboxUnavailable) as missing:
        DockerSandbox(image="codex-delegation-no-such-image:1").preflight()
    assert "app sandbox build-image" in str(missing.value)
    assert "rlm.docker_image" in str(missing.value)
    # An image without python3: refused at start, with what to do, and nothing left behind.
    client = connect()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("etc")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    client.api.import_image_from_data(
        data.getvalue(), repository="codex-delegation-test-nopython", tag="1"
    )
    try:
        with pytest.raises(SandboxUnavailable) as no_python:
            DockerSandbox(image="codex-delegation-test-nopython:1").start(
                run_dir=run_dir(tmp_path), limits=LIMITS, label="depth0"
            )
        assert "has no python3" in str(no_python.value)
    finally:
        client.api.remove_image("codex-delegation-test-nopython:1", force=True)


def test_gvisor_is_used_when_asked_and_there(docker_ok: None, tmp_path: Path) -> None:
    runtimes = engine_runtimes(connect())
    sandbox = DockerSandbox(runtime="runsc")
    if "runsc" not in runtimes:
        with pytest.raises(SandboxUnavailable) as refused:
            sandbox.preflight()
        assert "has no such runtime" in str(refused.value) and "gvisor.dev" in str(refused.value)
        assert "gVisor (runsc): no" in DockerSandbox.check().detail
        return
    with sandbox.start(run_dir=run_dir(tmp_path), limits=LIMITS, label="depth0") as session:
        attrs = session.inspect()
        assert attrs is not None and attrs["HostConfig"]["Runtime"] == "runsc"
    assert "gVisor (runsc): yes" in DockerSandbox.check().detail


# -- build-image --------------------------------------------------------------------------------


def test_build_image_is_idempotent_and_any_python_works(docker_ok: None, tmp_path: Path) -> None:
    client = connect()
    again = build_image(client, DEFAULT_IMAGE)
    assert not again.built  # make test built it: same fingerprint, nothing to do
    # The runner's own base interpreter (a pyenv build outside /usr here): another layout.
    base = str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
    tag = "codex-delegation-test-python:1"
    built = build_image(client, tag, python=base, force=True)
    try:
        assert built.built and built.description["python"] == base
        with DockerSandbox(image=tag).start(
            run_dir=run_dir(tmp_path), limits=LIMITS, label="depth0"
        ) as session:
            assert session.ready is not None
            assert session.ready.python == ".".join(map(str, sys.version_info[:3]))
            session.send(ExecRequest(id=1, code="import ssl, sqlite3, json, decimal; print('ok')"))
            result: Any = session.receive(10)
            assert result.error is None and result.stdout == "ok\n", result
    finally:
        client.api.remove_image(tag, force=True)


def test_app_sandbox_build_image(docker_ok: None, tmp_path: Path) -> None:
    ok = subprocess.run(
        [str(APP), "sandbox", "build-image", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{DEFAULT_IMAGE}: up to date"), ok.stdout
    refused = subprocess.run(
        [str(APP), "sandbox", "build-image", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(DOCKER_HOST=f"unix://{tmp_path}/none.sock"),
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert "no Docker engine answers" in refused.stderr and "DOCKER_HOST" in refused.stderr


def test_sessions_are_docker_sessions(docker_ok: None, tmp_path: Path) -> None:
    """The driver-facing type; ``shutdown`` asks the REPL to exit and removes the container."""
    session = DockerSandbox().start(run_dir=run_dir(tmp_path), limits=LIMITS, label="x")
    assert isinstance(session, DockerReplSession) and session.alive
    session.shutdown()
    assert not session.alive and session.inspect() is None
