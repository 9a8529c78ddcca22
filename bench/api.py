"""Live-stream latency and API read latency, measured against a real runner over HTTP.

    .venv/bin/python bench/api.py --json [--quick]

The runner is the real one (``app.runner.serve``: uvicorn, Litestar, the security layer, the
hub, the ``data_version`` watcher) in its own process on a temporary home. For the in-process
figures that process also runs a writer thread, as the runner's own run loop would; the bench
process drives it over stdin and reads the streams over HTTP with raw sockets. Each written
event carries its send time (``time.time_ns()`` taken *before* the append, so the commit itself
is counted) in an ``agent_message`` payload; latency = arrival at the SSE client - send time,
on the same machine clock.

Figures:
- ``sse_latency_p50_ms_1sub``: commit (runner process) -> one run-stream client, median.
- ``sse_latency_p50_ms_50subs`` / ``sse_latency_p99_ms_50subs``: the same with 50 clients on
  the run's stream, every one receiving every event (median / 99th percentile over all).
- ``sse_latency_p50_ms_xproc``: commit by a separate writer process (a stand-alone worker or
  the CLI) -> one client; the runner notices it through ``PRAGMA data_version``.
- ``sse_burst_eps``: one client, a burst written with ``append_many`` (100 per transaction):
  events / (arrival of the last - send time of the first).
- ``runs_list_p50_ms``: ``GET /api/runs?limit=50``; ``events_page_p50_ms``:
  ``GET /api/runs/{id}/events?after=X&limit=100`` on random runs and offsets (mostly full
  pages); both after seeding the database with 10,000 runs and 1,000,000 events (raw batched
  inserts into the migrated schema while the runner is up; their ``events.jsonl`` mirrors are
  not written).

Also reported, without targets: p99s and maxima, ``burst_write_eps`` (the writer's own rate,
which bounds the burst figure), ``seed_s``. ``--quick`` shrinks every size for a smoke run.
Events are written to a run created already ``cancelled`` (in the same transaction), so no
worker executes it and its stream carries only the bench's events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.clock import format_ts  # noqa: E402
from app.home import Home  # noqa: E402
from app.ids import new_id  # noqa: E402
from bench.stats import percentile  # noqa: E402

TARGETS = {
    "sse_latency_p50_ms_1sub": "<= 5",
    "sse_latency_p50_ms_50subs": "<= 5",
    "sse_latency_p99_ms_50subs": "<= 25",
    "sse_latency_p50_ms_xproc": "<= 20",
    "sse_burst_eps": ">= 5000",
    "runs_list_p50_ms": "<= 20",
    "events_page_p50_ms": "<= 20",
}


@dataclass(frozen=True)
class Params:
    """Sizes of one bench run."""

    latency_events: int
    interval_ms: float
    subscribers: int
    fanout_events: int
    fanout_interval_ms: float
    xproc_events: int
    burst_events: int
    runs: int
    events: int
    requests: int


FULL = Params(
    latency_events=400,
    interval_ms=10,
    subscribers=50,
    fanout_events=300,
    fanout_interval_ms=20,
    xproc_events=300,
    burst_events=50_000,
    runs=10_000,
    events=1_000_000,
    requests=400,
)
QUICK = Params(
    latency_events=100,
    interval_ms=10,
    subscribers=50,
    fanout_events=60,
    fanout_interval_ms=20,
    xproc_events=60,
    burst_events=5_000,
    runs=500,
    events=20_000,
    requests=60,
)


# -- the runner process, with an in-process writer ---------------------------------------------


def serve_main(home: str) -> int:
    """``--serve HOME``: the real runner plus a writer thread driven by JSON lines on stdin.

    Commands: ``{"op": "quiet-run"}`` creates a run for the bench to write to;
    ``{"op": "tick", "run": id, "count": n, "interval_ms": x}`` appends ``n`` events
    ``x`` ms apart (one transaction each); ``{"op": "burst", "run": id, "count": n, "batch": b}``
    appends them ``b`` per transaction as fast as possible. Each answers one JSON line on
    stdout. End of stdin stops the runner.
    """
    from app.runner import serve
    from app.runtime import Runtime

    stop = threading.Event()

    def on_ready(runtime: Runtime) -> None:
        threading.Thread(
            target=_writer_loop, args=(runtime, sys.stdin, sys.stdout, stop), daemon=True
        ).start()

    return serve(Home(Path(home)), host="127.0.0.1", port=0, stop=stop, on_ready=on_ready)


def _writer_loop(runtime: Any, commands: TextIO, out: TextIO, stop: threading.Event) -> None:
    from app.wire.events import Actor, AgentMessage

    log = runtime.store.log
    try:
        for line in commands:
            command = json.loads(line)
            if command["op"] == "quiet-run":
                out.write(json.dumps({"run": quiet_run(log)}) + "\n")
                out.flush()
                continue
            run_id, count = command["run"], int(command["count"])
            started = time.perf_counter()
            if command["op"] == "tick":
                _paced(count, command["interval_ms"] / 1000, _stamp_writer(log, run_id))
            elif command["op"] == "burst":
                batch = int(command["batch"])
                for offset in range(0, count, batch):
                    size = min(batch, count - offset)
                    log.append_many(
                        (run_id, AgentMessage(text=str(time.time_ns())), Actor.WORKER)
                        for _ in range(size)
                    )
            out.write(json.dumps({"ok": True, "write_s": time.perf_counter() - started}) + "\n")
            out.flush()
    finally:
        stop.set()


def quiet_run(log: Any) -> str:
    """A run no worker will execute (created and cancelled in one transaction), so its stream
    carries only what the bench writes."""
    from app.wire.events import Actor, RunCancelled
    from db.runs import create_run, transition

    with log.transaction() as tx:
        run = create_run(log, task="bench api", engine="rlm", actor=Actor.CLI)
        transition(log, run.id, RunCancelled(reason="bench stream"), actor=Actor.CLI, tx=tx)
    return str(run.id)


def _stamp_writer(log: Any, run_id: str) -> Callable[[], object]:
    """Appends one event to ``run_id`` carrying the time it was sent (ns since the epoch)."""
    from app.wire.events import Actor, AgentMessage

    def write() -> object:
        return log.append(run_id, AgentMessage(text=str(time.time_ns())), actor=Actor.WORKER)

    return write


def _paced(count: int, interval_s: float, write: Callable[[], object]) -> None:
    """Call ``write`` ``count`` times, ``interval_s`` apart (with jitter, so no phase lock)."""
    deadline = time.perf_counter()
    for _ in range(count):
        deadline += interval_s * random.uniform(0.5, 1.5)
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        write()


def xwriter_main(home: str, run_id: str, count: int, interval_ms: float) -> None:
    """``--xwriter``: a separate writer process (like ``app worker`` or the CLI)."""
    from db.store import open_store

    store = open_store(Home(Path(home)), auto_migrate=False)
    print("ready", flush=True)
    sys.stdin.readline()
    _paced(count, interval_ms / 1000, _stamp_writer(store.log, run_id))
    store.close()
    print("done", flush=True)


def child_env(base: Path) -> dict[str, str]:
    """Environment for child processes: no developer config, the project importable."""
    env = dict(os.environ)
    env.pop("CODEX_DELEGATION_CONFIG_OVERRIDES", None)
    env.pop("CODEX_DELEGATION_HOME", None)
    env["XDG_CONFIG_HOME"] = str(base / "xdg-config")
    env["XDG_DATA_HOME"] = str(base / "xdg-data")
    env["PYTHONPATH"] = str(ROOT)
    return env


class BenchRunner:
    """The runner subprocess (``--serve``) and its writer's command pipe."""

    def __init__(self, base: Path) -> None:
        self.home = Home(base / "home").ensure()
        self._stderr = (base / "runner.stderr").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.home.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=child_env(base),
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "Ctrl-C" in line:
                break
        else:
            raise SystemExit(f"runner exited early ({self.proc.wait()}); see {base}")
        endpoint = json.loads(self.home.endpoint_path.read_text())
        self.base_url: str = endpoint["base_url"]
        self.token: str = json.loads(Path(endpoint["token_path"]).read_text())["token"]
        parts = urlsplit(self.base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )

    def command(self, **command: Any) -> dict[str, Any]:
        """Send a writer command and wait for its answer (blocking: call it in a thread)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def stop(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


# -- a minimal SSE client over a raw socket -----------------------------------------------------


class _Envelope(msgspec.Struct):
    seq: int
    payload: dict[str, Any]


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


class _Arrivals(asyncio.Protocol):
    """Records each piece of data with the time it reached this process (parsed later, so
    one client's parsing never delays another's timestamp)."""

    def __init__(self) -> None:
        self.pieces: list[tuple[int, bytes]] = []
        self.ready = asyncio.Event()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.pieces.append((time.time_ns(), data))
        self.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.ready.set()


class SseClient:
    """One ``text/event-stream`` response read off a raw socket (HTTP/1.1, chunked)."""

    def __init__(self, transport: asyncio.Transport, arrivals: _Arrivals) -> None:
        self.transport, self.arrivals = transport, arrivals
        self._raw = b""
        self._body = b""
        self._head = True

    @classmethod
    async def open(cls, runner: BenchRunner, path: str) -> SseClient:
        loop = asyncio.get_running_loop()
        transport, arrivals = await loop.create_connection(_Arrivals, runner.host, runner.port)
        transport.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {runner.host}:{runner.port}\r\n"
                f"Authorization: Bearer {runner.token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        client = cls(transport, arrivals)
        while client._head:  # the handler subscribed before it answered
            await client._take()
        return client

    async def _take(self) -> list[tuple[int, bytes]]:
        arrivals = self.arrivals
        while not arrivals.pieces:
            if arrivals.lost:
                raise ConnectionError("stream closed")
            arrivals.ready.clear()
            await arrivals.ready.wait()
        pieces, arrivals.pieces = arrivals.pieces, []
        if self._head:
            self._raw += b"".join(piece for _, piece in pieces)
            if b"\r\n\r\n" in self._raw:
                head, _, self._raw = self._raw.partition(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                if status != b"200" or b"chunked" not in head.lower():
                    raise RuntimeError(f"unexpected SSE response: {head[:200]!r}")
                self._head = False
            return []
        return pieces

    async def read(self) -> list[tuple[bytes, bytes, int]]:
        """Wait for data; return the complete events received: ``(id, data, arrival)``, the
        arrival being that of the data that completed the event."""
        while True:
            events: list[tuple[bytes, bytes, int]] = []
            for arrived, piece in await self._take():
                self._raw += piece
                self._dechunk()
                events += [(event_id, data, arrived) for event_id, data in self._events()]
            if events:
                return events

    def _dechunk(self) -> None:
        raw, pos = self._raw, 0
        parts = [self._body]
        while True:
            end = raw.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(raw[pos:end], 16)
            if len(raw) < end + 2 + size + 2:
                break
            parts.append(raw[end + 2 : end + 2 + size])
            pos = end + 2 + size + 2
        self._raw = raw[pos:]
        self._body = b"".join(parts)

    def _events(self) -> list[tuple[bytes, bytes]]:
        body = self._body.replace(b"\r\n", b"\n")
        *blocks, rest = body.split(b"\n\n")
        self._body = rest
        events = []
        for block in blocks:
            event_id = data = b""
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data = line[5:].lstrip(b" ")
                elif line.startswith(b"id:"):
                    event_id = line[3:].strip()
            if data:
                events.append((event_id, data))
        return events

    def close(self) -> None:
        self.transport.close()


async def collect_latencies(
    client: SseClient, expected: int, sink: list[float], timeout: float
) -> tuple[int, int]:
    """Read ``expected`` events; append each one's latency (ms) to ``sink``.

    Returns (send time of the first event, arrival time of the last), in ns.
    """
    first_sent = last_arrived = 0
    received = 0
    async with asyncio.timeout(timeout):
        while received < expected:
            for _, data, arrived in await client.read():
                text = _decode_envelope(data).payload.get("text")
                if not (isinstance(text, str) and text.isdigit()):
                    continue  # not one the bench wrote
                sent = int(text)
                received += 1
                if not first_sent:
                    first_sent = sent
                sink.append((arrived - sent) / 1e6)
                last_arrived = arrived
    return first_sent, last_arrived


# -- the figures --------------------------------------------------------------------------------


async def bench_stream_latency(
    runner: BenchRunner, run_id: str, subscribers: int, count: int, interval_ms: float
) -> list[float]:
    """``subscribers`` clients on the run's stream; ``count`` events written ``interval_ms``
    apart by the runner's writer thread; every client's latency for every event."""
    with runner.client() as api:
        last = api.get(f"/api/runs/{run_id}").json()["last_seq"]
    clients = [
        await SseClient.open(runner, f"/api/runs/{run_id}/events/stream?after={last}")
        for _ in range(subscribers)
    ]
    latencies: list[float] = []
    try:
        readers = [
            asyncio.create_task(collect_latencies(client, count, latencies, timeout=120))
            for client in clients
        ]
        await asyncio.to_thread(
            runner.command, op="tick", run=run_id, count=count, interval_ms=interval_ms
        )
        await asyncio.gather(*readers)
    finally:
        for client in clients:
            client.close()
    return latencies


async def bench_xproc_latency(
    runner: BenchRunner, base: Path, run_id: str, count: int, interval_ms: float
) -> list[float]:
    """One client; the events are committed by a separate writer process."""
    with runner.client() as api:
        last = api.get(f"/api/runs/{run_id}").json()["last_seq"]
    client = await SseClient.open(runner, f"/api/runs/{run_id}/events/stream?after={last}")
    writer = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--xwriter",
            str(runner.home.root),
            run_id,
            str(count),
            str(interval_ms),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(base),
    )
    assert writer.stdin is not None and writer.stdout is not None
    latencies: list[float] = []
    try:
        assert writer.stdout.readline().strip() == "ready"
        reader = asyncio.create_task(collect_latencies(client, count, latencies, timeout=120))
        writer.stdin.write("go\n")
        writer.stdin.flush()
        await reader
        await asyncio.to_thread(writer.communicate, timeout=60)
    finally:
        client.close()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    return latencies


async def bench_burst(runner: BenchRunner, run_id: str, count: int) -> tuple[float, float]:
    """One client, a burst of ``count`` events; returns (delivered events/s, written events/s)."""
    with runner.client() as api:
        last = api.get(f"/api/runs/{run_id}").json()["last_seq"]
    client = await SseClient.open(runner, f"/api/runs/{run_id}/events/stream?after={last}")
    try:
        reader = asyncio.create_task(collect_latencies(client, count, [], timeout=300))
        answer = await asyncio.to_thread(
            runner.command, op="burst", run=run_id, count=count, batch=100
        )
        first_sent, last_arrived = await reader
    finally:
        client.close()
    return count / ((last_arrived - first_sent) / 1e9), count / answer["write_s"]


def seed(db_path: Path, runs: int, events: int) -> list[tuple[str, int]]:
    """Insert ``runs`` runs and ``events`` events through the migrated schema (raw, batched).

    Ten runs get a tenth of the events between them; the rest are spread evenly. Events of
    different runs are interleaved in the table, as concurrent runs leave them.
    Returns (run id, last seq) of every seeded run.
    """
    big = min(10, runs)
    counts = [events // 10 // big] * big
    rest = events - sum(counts)
    small = runs - big
    counts += [rest // small + (1 if i < rest % small else 0) for i in range(small)]
    start = time.time() - runs
    seeded = [(new_id("run"), n) for n in counts]
    conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=60)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO run (id, state, engine, task, created_at, updated_at, last_seq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (run_id, "succeeded", "rlm", f"seeded task {i}", created, created, n)
            for i, (run_id, n) in enumerate(seeded)
            if (created := format_ts_at(start + i))
        ),
    )
    conn.execute("COMMIT")
    ts = format_ts_at(time.time())

    def rows() -> Iterator[tuple[str, int, str, str, str, str]]:
        step = 50
        for first in range(0, max(counts), step):
            for run_id, n in seeded:
                for seq in range(first + 1, min(first + step, n) + 1):
                    text = f"seeded message {seq} of {run_id}: " + "lorem ipsum " * 4
                    payload = json.dumps({"text": text, "truncated": False})
                    yield (run_id, seq, ts, "agent_message", "worker", payload)

    batch: list[tuple[str, int, str, str, str, str]] = []
    for row in rows():
        batch.append(row)
        if len(batch) == 100_000:
            _insert_events(conn, batch)
            batch = []
    _insert_events(conn, batch)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return seeded


def format_ts_at(epoch: float) -> str:
    from datetime import UTC, datetime

    return format_ts(datetime.fromtimestamp(epoch, UTC))


def _insert_events(
    conn: sqlite3.Connection, batch: list[tuple[str, int, str, str, str, str]]
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO event (run_id, seq, ts, type, actor, payload) VALUES (?, ?, ?, ?, ?, ?)",
        batch,
    )
    conn.execute("COMMIT")


def time_requests(api: httpx.Client, paths: list[str]) -> list[float]:
    """Milliseconds per request, each checked for 200."""
    timings = []
    for path in paths:
        started = time.perf_counter()
        response = api.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
    return timings


@dataclass
class Results:
    figures: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


async def run_stream_figures(runner: BenchRunner, base: Path, params: Params, out: Results) -> None:
    run_id = runner.command(op="quiet-run")["run"]
    # Warm up the path (imports, connections, caches) before measuring.
    await bench_stream_latency(runner, run_id, 2, 20, 2)

    one = await bench_stream_latency(runner, run_id, 1, params.latency_events, params.interval_ms)
    out.figures["sse_latency_p50_ms_1sub"] = round(statistics.median(one), 3)
    out.extra["sse_latency_p99_ms_1sub"] = round(percentile(one, 0.99), 3)

    many = await bench_stream_latency(
        runner, run_id, params.subscribers, params.fanout_events, params.fanout_interval_ms
    )
    out.figures["sse_latency_p50_ms_50subs"] = round(statistics.median(many), 3)
    out.figures["sse_latency_p99_ms_50subs"] = round(percentile(many, 0.99), 3)
    out.extra["sse_latency_max_ms_50subs"] = round(max(many), 3)

    xproc = await bench_xproc_latency(runner, base, run_id, params.xproc_events, params.interval_ms)
    out.figures["sse_latency_p50_ms_xproc"] = round(statistics.median(xproc), 3)
    out.extra["sse_latency_p99_ms_xproc"] = round(percentile(xproc, 0.99), 3)

    delivered, written = await bench_burst(runner, run_id, params.burst_events)
    out.figures["sse_burst_eps"] = round(delivered)
    out.extra["burst_write_eps"] = round(written)


def run_read_figures(runner: BenchRunner, params: Params, out: Results) -> None:
    started = time.perf_counter()
    seeded = seed(runner.home.db_path, params.runs, params.events)
    out.extra["seed_s"] = round(time.perf_counter() - started, 1)
    rng = random.Random(1)
    with runner.client() as api:
        time_requests(api, ["/api/runs?limit=50"] * 20)  # warm-up
        listed = time_requests(api, ["/api/runs?limit=50"] * params.requests)
        pages = []
        for _ in range(params.requests):
            run_id, last_seq = rng.choice(seeded)
            after = rng.randrange(0, max(1, last_seq - 100))
            pages.append(f"/api/runs/{run_id}/events?after={after}&limit=100")
        paged = time_requests(api, pages)
        total = api.get("/api/runs?limit=1").json()
    assert total["runs"], "the seeded runs are listed"
    out.figures["runs_list_p50_ms"] = round(statistics.median(listed), 3)
    out.extra["runs_list_p99_ms"] = round(percentile(listed, 0.99), 3)
    out.figures["events_page_p50_ms"] = round(statistics.median(paged), 3)
    out.extra["events_page_p99_ms"] = round(percentile(paged, 0.99), 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--xwriter", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        raise SystemExit(serve_main(args.serve))
    if args.xwriter:
        home, run_id, count, interval = args.xwriter
        xwriter_main(home, run_id, int(count), float(interval))
        return
    params = QUICK if args.quick else FULL
    results = Results()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        base = Path(tmp)
        runner = BenchRunner(base)
        try:
            asyncio.run(run_stream_figures(runner, base, params, results))
            run_read_figures(runner, params, results)
        finally:
            runner.stop()
    figures = {key: results.figures[key] for key in TARGETS} | results.extra
    result = {
        "bench": "api",
        "figures": figures,
        "targets": TARGETS,
        "params": asdict(params),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            # Other processes' load skews latency tails on a small machine: report it.
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
