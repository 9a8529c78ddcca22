"""The live event streams over real HTTP against a live runner (``app serve`` subprocess).

Events are written by this test process (or a helper process) straight into the runner's
database, so everything here also exercises the runner noticing commits made by another
process (``PRAGMA data_version``) — the path a stand-alone worker or the CLI takes.
"""

from __future__ import annotations

import io
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.home import Home
from app.wire.events import Actor, AgentMessage, StepStarted
from db.connection import raw_connection
from db.runs import create_run
from db.store import Store, open_store
from tests.conftest import ROOT, LiveRunner, start_runner, subprocess_env

HEARTBEAT_S = 0.3


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRunner]:
    """One runner for the module: fast heartbeats, no in-process workers (runs stay put)."""
    base = tmp_path_factory.mktemp("sse")
    runner = start_runner(
        Home(base / "home"),
        CODEX_DELEGATION_CONFIG_OVERRIDES=(
            f"ui.sse_heartbeat_s={HEARTBEAT_S}; queue.workers=0; runner.sweep_interval_s=1"
        ),
        XDG_CONFIG_HOME=str(base / "xdg-config"),
        XDG_DATA_HOME=str(base / "xdg-data"),
    )
    try:
        yield runner
    finally:
        assert runner.stop() == 0


@pytest.fixture(scope="module")
def store(live: LiveRunner) -> Iterator[Store]:
    """This process's own handle on the runner's database: its commits are another process's."""
    opened = open_store(live.home, auto_migrate=False)
    try:
        yield opened
    finally:
        opened.close()


def new_run(store: Store) -> str:
    return create_run(store.log, task="sse test", engine="rlm", actor=Actor.CLI).id


def append(store: Store, run_id: str, count: int, *, batch: int = 1000, text: str = "") -> None:
    """Append ``count`` events to a run, ``batch`` per transaction."""
    for offset in range(0, count, batch):
        size = min(batch, count - offset)
        store.log.append_many(
            (run_id, AgentMessage(text=text or f"message {offset + i}"), Actor.WORKER)
            for i in range(size)
        )


# -- reading SSE --------------------------------------------------------------------------------


@dataclass
class Sse:
    """One dispatched event (``id:``/``event:``/``data:``), as EventSource would see it."""

    id: str | None
    event: str | None
    data: str


def sse_events(lines: Iterator[str]) -> Iterator[Sse | None]:
    """Parse SSE lines into events; yields None for each comment (heartbeats)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Sse(fields.get("id"), fields.get("event"), "\n".join(data))
            fields, data = {}, []
        elif line.startswith(":"):
            yield None
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


class RawSse:
    """An SSE request on a raw socket we control: we decide when (and whether) to read.

    A small receive buffer makes a consumer that stops reading back up quickly, as a stalled
    browser tab on a slow link would.
    """

    def __init__(self, live: LiveRunner, path: str, *, rcvbuf: int | None = None) -> None:
        host, port = live.host.split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, int(port)))
        self.sock.settimeout(30)
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {live.host}\r\nAuthorization: Bearer {live.token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self._raw = b""
        while b"\r\n\r\n" not in self._raw:
            self._raw += self._recv()
        head, _, self._raw = self._raw.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        assert b"transfer-encoding: chunked" in head.lower(), head
        self._body = b""

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("stream closed")
        return chunk

    def lines(self) -> Iterator[str]:
        """The body's lines, reading (and de-chunking) as needed."""
        while True:
            while b"\n" in self._body:
                line, _, self._body = self._body.partition(b"\n")
                yield line.removesuffix(b"\r").decode()
            self._raw += self._recv()
            while True:
                end = self._raw.find(b"\r\n")
                if end < 0:
                    break
                size = int(self._raw[:end], 16)
                if len(self._raw) < end + 2 + size + 2:
                    break
                self._body += self._raw[end + 2 : end + 2 + size]
                self._raw = self._raw[end + 2 + size + 2 :]

    def close(self) -> None:
        self.sock.close()


def read_until(
    live: LiveRunner,
    path: str,
    last: int,
    *,
    headers: dict[str, str] | None = None,
    on_open: threading.Event | None = None,
) -> list[Sse]:
    """Follow ``path`` until an event with id >= ``last`` arrives; return every event."""
    received: list[Sse] = []
    with (
        live.client() as api,
        api.stream("GET", path, headers=headers or {}) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        if on_open is not None:
            on_open.set()
        for event in sse_events(response.iter_lines()):
            if event is not None:
                received.append(event)
                if int(event.id or 0) >= last:
                    break
    return received


# -- resume: no gap, no duplicate ---------------------------------------------------------------


def test_run_stream_resumes_after_disconnects_with_no_gap_or_duplicate(
    live: LiveRunner, store: Store
) -> None:
    """10,000 events, half written while the client reads; it disconnects at random points
    (mid-chunk included) and reconnects with Last-Event-ID (or ``?after=``)."""
    total = 10_000
    run_id = new_run(store)  # seq 1 is its run_queued
    append(store, run_id, total // 2 - 1)
    writer = threading.Thread(target=append, args=(store, run_id, total // 2), kwargs={"batch": 50})
    rng = random.Random(20_260_101)
    cuts = [*sorted(rng.sample(range(1, total), 5)), total]
    seen: list[int] = []
    last_id: str | None = None
    path = f"/api/runs/{run_id}/events/stream"
    with live.client() as api:
        writer.start()
        for attempt, cut in enumerate(cuts):
            if last_id is None:
                url, headers = f"{path}?after=0", {}
            elif attempt % 3 == 1:
                url, headers = f"{path}?after={last_id}", {}
            else:
                # The header wins over a (stale) ?after=.
                url, headers = f"{path}?after=0", {"Last-Event-ID": last_id}
            with api.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                for event in sse_events(response.iter_lines()):
                    if event is None:
                        continue
                    envelope = json.loads(event.data)
                    assert event.id == str(envelope["seq"])
                    assert event.event == envelope["type"]
                    assert envelope["run_id"] == run_id
                    seen.append(envelope["seq"])
                    last_id = event.id
                    if envelope["seq"] >= cut:
                        break  # disconnect: close the response mid-stream
        writer.join()
    assert seen == list(range(1, total + 1))


def test_global_stream_resumes_by_cursor_with_no_gap_or_duplicate(
    live: LiveRunner, store: Store
) -> None:
    start = store.log.latest_cursor()
    runs = [new_run(store) for _ in range(3)]
    done = threading.Event()

    def write() -> None:
        for step in range(100):
            store.log.append_many(
                (runs[(step + i) % 3], StepStarted(step=step, kind="k"), Actor.WORKER)
                for i in range(40)
            )
        done.set()

    writer = threading.Thread(target=write)
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, 4000), 4))
    seen: list[int] = []
    last_id = str(start)
    final: int | None = None
    with live.client() as api:
        writer.start()
        for attempt in range(100):
            cut = cuts[attempt] if attempt < len(cuts) else None
            with api.stream(
                "GET", "/api/events/stream", headers={"Last-Event-ID": last_id}
            ) as response:
                assert response.status_code == 200
                for event in sse_events(response.iter_lines()):
                    if event is not None:
                        envelope = json.loads(event.data)
                        assert event.event == envelope["type"]
                        seen.append(int(event.id or 0))
                        last_id = event.id or ""
                        if cut is not None and len(seen) >= cut:
                            break
                    if final is None and done.is_set():
                        final = store.log.latest_cursor()
                    if final is not None and seen and seen[-1] >= final:
                        break
            if final is not None and seen and seen[-1] >= final:
                break
        writer.join()
    assert final is not None
    expected = [
        row[0]
        for row in raw_connection(store.db)
        .execute("SELECT id FROM event WHERE id > ? AND id <= ? ORDER BY id", (start, final))
        .fetchall()
    ]
    assert len(expected) >= 4000 + 3
    assert seen == expected


def test_after_query_and_bad_last_event_id(live: LiveRunner, store: Store) -> None:
    run_id = new_run(store)
    append(store, run_id, 9)  # seqs 1..10
    events = read_until(live, f"/api/runs/{run_id}/events/stream?after=7", 10)
    assert [event.id for event in events] == ["8", "9", "10"]
    cursor = store.log.latest_cursor()
    events = read_until(live, f"/api/events/stream?after={cursor - 2}", cursor)
    assert [event.id for event in events] == [str(cursor - 1), str(cursor)]
    with live.client() as api:
        for path in (f"/api/runs/{run_id}/events/stream", "/api/events/stream"):
            for bad in ("abc", "-1", "1.5", "1_000", "+1", str(2**63), "9" * 5000):
                response = api.get(path, headers={"Last-Event-ID": bad})
                assert response.status_code == 400, (path, bad)
                assert response.headers["content-type"].startswith("application/json")
                body = response.json()
                assert set(body) == {"error", "detail"}
                assert body["error"] == "invalid_request"
                assert "Last-Event-ID" in body["detail"]
            for bad in ("-1", "x", str(2**63)):
                assert api.get(f"{path}?after={bad}").status_code == 400


# -- slow consumers -----------------------------------------------------------------------------


def _burst_through(
    live: LiveRunner, store: Store, run_id: str, count: int, text: str
) -> tuple[float, float]:
    """A healthy subscriber follows the run while ``count`` events are written.

    Returns (seconds until it has them all, seconds the writer took)."""
    after = store.log.last_seq(run_id)
    opened = threading.Event()
    result: list[list[Sse]] = []
    reader = threading.Thread(
        target=lambda: result.append(
            read_until(
                live,
                f"/api/runs/{run_id}/events/stream?after={after}",
                after + count,
                on_open=opened,
            )
        )
    )
    reader.start()
    assert opened.wait(10)
    started = time.perf_counter()
    append(store, run_id, count, batch=500, text=text)
    wrote = time.perf_counter() - started
    reader.join(60)
    delivered = time.perf_counter() - started
    assert result, "the healthy subscriber got everything"
    assert [int(event.id or 0) for event in result[0]] == list(range(after + 1, after + count + 1))
    return delivered, wrote


def test_stalled_subscriber_slows_nobody_and_catches_up_from_the_database(
    live: LiveRunner, store: Store
) -> None:
    # ~1 KB per event, 20,000 events: ~20 MB, far more than the stalled client's socket
    # buffers (4 MB at most here) plus its bounded queue (10,000 events) can hold, so its
    # queue overflows and it must resume from the database.
    count, text = 20_000, "lorem ipsum dolor sit amet " * 38
    run_id = new_run(store)
    base_delivered, base_wrote = _burst_through(live, store, run_id, count, text)

    start = store.log.last_seq(run_id)
    stalled = RawSse(live, f"/api/runs/{run_id}/events/stream?after={start}", rcvbuf=4096)
    assert stalled.status == 200
    try:
        delivered, wrote = _burst_through(live, store, run_id, count, text)
        # Generous bounds (a shared 2-core machine): the stalled client must not make the
        # healthy one or the writer wait for it.
        assert delivered <= 3 * base_delivered + 2, (delivered, base_delivered)
        assert wrote <= 3 * base_wrote + 1, (wrote, base_wrote)

        # It reads again: every event, in order, once.
        last = store.log.last_seq(run_id)
        seqs: list[int] = []
        for event in sse_events(stalled.lines()):
            if event is not None:
                seqs.append(int(event.id or 0))
                if seqs[-1] >= last:
                    break
        assert seqs == list(range(start + 1, last + 1))
    finally:
        stalled.close()


# -- other processes, heartbeats, access --------------------------------------------------------


def test_events_of_another_process_reach_subscribers_promptly(
    live: LiveRunner, store: Store
) -> None:
    run_id = new_run(store)
    with (
        live.client() as api,
        api.stream("GET", f"/api/runs/{run_id}/events/stream?after=1") as response,
    ):
        assert response.status_code == 200
        events = sse_events(response.iter_lines())
        # One event at a time from this (other) process: each arrives promptly.
        delays = []
        for step in range(10):
            sent = time.perf_counter()
            store.log.append(run_id, StepStarted(step=step, kind="ping"), actor=Actor.WORKER)
            event = next(e for e in events if e is not None)
            delays.append(time.perf_counter() - sent)
            assert event.id == str(step + 2)
        assert sorted(delays)[len(delays) // 2] < 0.2, delays

        # A stand-alone writer process: everything it appends arrives, in order.
        script = str(ROOT / "tests/procs/append_events.py")
        proc = subprocess.Popen(
            [sys.executable, script, str(live.home.root), "500", run_id],
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.split() == ["ready", "done"]
        finished = time.perf_counter()
        seqs = []
        for event in events:
            if event is not None:
                assert event.event == "step_started"
                seqs.append(int(event.id or 0))
                if seqs[-1] >= 511:
                    break
        assert time.perf_counter() - finished < 5
    assert seqs == list(range(12, 512))


def test_idle_stream_sends_heartbeats(live: LiveRunner, store: Store) -> None:
    run_id = new_run(store)
    stream = RawSse(live, f"/api/runs/{run_id}/events/stream?after=1")
    try:
        started = time.monotonic()
        lines = []
        for line in stream.lines():
            lines.append(line)
            if sum(1 for x in lines if x.startswith(":")) == 3:
                break
        elapsed = time.monotonic() - started
    finally:
        stream.close()
    assert [x for x in lines if x] == [": heartbeat"] * 3
    assert 2 * HEARTBEAT_S * 0.8 <= elapsed < 3 * HEARTBEAT_S + 2


def test_unknown_run_is_404_before_streaming(live: LiveRunner) -> None:
    with live.client() as api:
        response = api.get("/api/runs/run_NOPE/events/stream")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "run_not_found"


def test_delegation_token_streams_only_its_own_run(live: LiveRunner, store: Store) -> None:
    with live.client() as api:
        mine = api.post("/api/runs", json={"task": "mine"}).json()["run"]["id"]
        other = api.post("/api/runs", json={"task": "other"}).json()["run"]["id"]
    token = live.delegation_token(mine)
    events = read_until(live, f"/api/runs/{mine}/events/stream", 1, headers={})
    assert events[0].event == "run_queued"
    with live.client(token=token) as delegate:
        with delegate.stream("GET", f"/api/runs/{mine}/events/stream") as response:
            assert response.status_code == 200
            first = next(e for e in sse_events(response.iter_lines()) if e is not None)
            assert first.id == "1" and json.loads(first.data)["run_id"] == mine
        for path in (f"/api/runs/{other}/events/stream", "/api/events/stream"):
            response = delegate.get(path)
            assert response.status_code == 403, path
            assert response.json()["error"]


def test_streams_release_their_subscriptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner in this process, so its hub can be inspected: every stream a client drops —
    mid-stream, before reading anything, or while stalled — gives its subscription back."""
    from app.runner import serve

    monkeypatch.setenv("CODEX_DELEGATION_CONFIG_OVERRIDES", "queue.workers=0")
    home = Home(tmp_path / "home")
    ready: list[Any] = []
    stop = threading.Event()
    server = threading.Thread(
        target=serve,
        args=(home,),
        kwargs={"port": 0, "out": io.StringIO(), "stop": stop, "on_ready": ready.append},
        daemon=True,
    )
    server.start()
    deadline = time.monotonic() + 30
    while not (ready and home.endpoint_path.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
    runtime = ready[0]
    hub = runtime.store.log.hub
    endpoint = json.loads(home.endpoint_path.read_text())
    token = json.loads(Path(endpoint["token_path"]).read_text())["token"]
    live = LiveRunner(home=home, base_url=endpoint["base_url"], token=token, proc=None)  # type: ignore[arg-type]
    try:
        run_id = create_run(runtime.store.log, task="t", engine="rlm", actor=Actor.CLI).id
        baseline = hub.subscriber_count
        streams = [RawSse(live, f"/api/runs/{run_id}/events/stream") for _ in range(10)]
        streams += [RawSse(live, "/api/events/stream?after=0", rcvbuf=4096) for _ in range(5)]
        assert hub.subscriber_count == baseline + 15
        append(runtime.store, run_id, 3000, text="x" * 500)  # the stalled ones back up
        for stream in streams:
            stream.close()
        deadline = time.monotonic() + 10
        while hub.subscriber_count > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.subscriber_count == baseline
    finally:
        stop.set()
        server.join(30)
    assert not server.is_alive()
