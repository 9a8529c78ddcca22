"""Live events over Server-Sent Events, for one run (``id:`` = seq) or all runs (global cursor).

A client resumes with ``Last-Event-ID`` (or ``?after=``) and gets exactly the events after
it: the subscription catches up from the database, then follows the live hub. Heartbeat
comments keep idle connections (and proxies) alive. A client that stops reading never
slows writers or other clients: its bounded queue overflows and it resumes from the
database when it reads again.

Frames are encoded here rather than by Litestar's per-message encoder: an event's
``event:``/``data:`` lines are encoded once and shared by every stream that sends it, and all
the events one wake-up hands a stream go out in one write.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import ServerSentEvent, Stream

from app.api.routing import EVERYONE, PEOPLE, access, require_run_scope
from app.api.security import Principal
from app.runtime import Runtime
from app.wire.events import StoredEvent
from db.eventlog import encode_line
from db.hub import EventHub, Subscription

LAST_EVENT_ID = "last-event-id"
MAX_CURSOR = 2**53
HEARTBEAT = b": heartbeat\n\n"
#: How many recent events' encoded frames are kept for the other streams that send them.
FRAME_CACHE_SIZE = 4096


def _start_cursor(request: Request[Any, Any, Any], after: int | None, default: int = 0) -> int:
    header = request.headers.get(LAST_EVENT_ID)
    if header is not None and header.strip():
        text = header.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 16) or int(text) > MAX_CURSOR:
            raise ValueError(
                f"Last-Event-ID must be the id of an event this stream sent (an integer from 0"
                f" to {MAX_CURSOR}), got {header[:40]!r}"
            )
        return int(text)
    return default if after is None else after


class FrameCache:
    """The ``event:`` and ``data:`` lines of recent events, encoded once for every stream.

    Only the ``id:`` line differs between a run's stream (seq) and the all-runs stream
    (global cursor), so it is prefixed per stream. Used from the event loop's thread only.
    """

    def __init__(self, size: int = FRAME_CACHE_SIZE) -> None:
        self._size = size
        self._tails: dict[int, bytes] = {}

    def tail(self, stored: StoredEvent) -> bytes:
        tail = self._tails.get(stored.cursor)
        if tail is None:
            envelope = stored.event
            # The envelope's JSON has no raw line breaks, and event types are identifiers,
            # so each field is one line.
            tail = b"event: %s\ndata: %s\n" % (envelope.type.encode(), encode_line(envelope))
            if len(self._tails) >= self._size:
                del self._tails[next(iter(self._tails))]
            self._tails[stored.cursor] = tail
        return tail


_caches: weakref.WeakKeyDictionary[EventHub, FrameCache] = weakref.WeakKeyDictionary()


def frame_cache(hub: EventHub) -> FrameCache:
    """The frame cache shared by every stream of one hub (cursors are per database)."""
    cache = _caches.get(hub)
    if cache is None:
        cache = _caches[hub] = FrameCache()
    return cache


async def sse_frames(
    subscription: Subscription, cache: FrameCache, *, global_ids: bool, heartbeat_s: float
) -> AsyncIterator[bytes]:
    """The encoded SSE stream of a subscription: one chunk per batch, heartbeats when idle."""
    tail = cache.tail
    try:
        while not subscription.closed:
            batch = await subscription.aget(timeout=heartbeat_s)
            if batch:
                if global_ids:
                    yield b"".join([b"id: %d\n%s" % (s.cursor, tail(s)) for s in batch])
                else:
                    yield b"".join([b"id: %d\n%s" % (s.event.seq, tail(s)) for s in batch])
            elif not subscription.closed:
                yield HEARTBEAT
    finally:
        subscription.close()


class EventStream(ServerSentEvent):
    """A ``text/event-stream`` response of frames already encoded by :func:`sse_frames`.

    (Litestar's :class:`ServerSentEvent` would re-encode every message for every client;
    this keeps its type, and so its OpenAPI description, and streams the bytes as they are.)
    """

    def __init__(self, frames: AsyncIterator[bytes]) -> None:
        Stream.__init__(
            self,
            frames,
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )


def _response(subscription: Subscription, runtime: Runtime, *, global_ids: bool) -> EventStream:
    frames = sse_frames(
        subscription,
        frame_cache(runtime.store.log.hub),
        global_ids=global_ids,
        heartbeat_s=runtime.sse_heartbeat_s,
    )
    # The generator closes the subscription when it ends; if the response never starts it
    # (the client left first), dropping the generator must release the subscription too.
    weakref.finalize(frames, subscription.close)
    return EventStream(frames)


AfterParam = Annotated[
    int | None,
    QueryParameter(ge=0, le=MAX_CURSOR, description="start after this id (Last-Event-ID wins)"),
]


class StreamController(Controller):
    """SSE streams."""

    tags = ["events"]

    @get(
        "/api/runs/{run_id:str}/events/stream",
        **access(EVERYONE, errors=(404,)),
    )
    async def run_stream(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        run_id: FromPath[str],
        after: AfterParam = None,
    ) -> ServerSentEvent:
        """Follow one run's events; ``id:`` is the event's seq."""
        require_run_scope(principal, run_id)
        start = _start_cursor(request, after)
        runtime.store.log.last_seq(run_id)  # 404 for an unknown run, before streaming
        subscription = runtime.store.log.subscribe(run_id=run_id, after=start)
        return _response(subscription, runtime, global_ids=False)

    @get("/api/events/stream", **access(PEOPLE))
    async def all_stream(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        after: AfterParam = None,
    ) -> ServerSentEvent:
        """Follow every run's events in commit order; ``id:`` is the global cursor.

        Without ``Last-Event-ID`` or ``after`` it starts at the newest event (live only):
        the whole history of every run is not what a new viewer wants; ``?after=0`` asks
        for it.
        """
        start = _start_cursor(request, after, default=runtime.store.log.latest_cursor())
        subscription = runtime.store.log.subscribe(after=start)
        return _response(subscription, runtime, global_ids=True)
