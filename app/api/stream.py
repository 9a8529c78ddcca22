"""Live events over Server-Sent Events, for one run (``id:`` = seq) or all runs (global cursor).

A client resumes with ``Last-Event-ID`` (or ``?after=``) and gets exactly the events after
it: the subscription catches up from the database, then follows the live hub. Heartbeat
comments keep idle connections (and proxies) alive. A client that stops reading never
slows writers or other clients: its bounded queue overflows and it resumes from the
database when it reads again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from app.api.routing import EVERYONE, PEOPLE, access, require_run_scope
from app.api.security import Principal
from app.runtime import Runtime
from db.eventlog import encode_line
from db.hub import Subscription

LAST_EVENT_ID = "last-event-id"


def _start_cursor(request: Request[Any, Any, Any], after: int | None) -> int:
    header = request.headers.get(LAST_EVENT_ID)
    if header is not None and header.strip():
        try:
            value = int(header.strip())
        except ValueError:
            raise ValueError(
                f"Last-Event-ID must be the integer id of an event, got {header!r}"
            ) from None
        if value < 0:
            raise ValueError("Last-Event-ID must not be negative")
        return value
    return after or 0


async def _messages(
    subscription: Subscription, *, global_ids: bool, heartbeat_s: float
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        while True:
            batch = await subscription.aget(timeout=heartbeat_s)
            if not batch:
                yield ServerSentEventMessage(comment="heartbeat")
                continue
            for stored in batch:
                envelope = stored.event
                yield ServerSentEventMessage(
                    data=encode_line(envelope)[:-1].decode(),
                    event=envelope.type,
                    id=stored.cursor if global_ids else envelope.seq,
                )
    finally:
        subscription.close()


def _response(subscription: Subscription, runtime: Runtime, *, global_ids: bool) -> ServerSentEvent:
    return ServerSentEvent(
        _messages(subscription, global_ids=global_ids, heartbeat_s=runtime.sse_heartbeat_s),
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


AfterParam = Annotated[
    int | None,
    Parameter(ge=0, le=2**53, description="start after this id (Last-Event-ID wins)"),
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
        runtime: Runtime,
        principal: Principal,
        run_id: str,
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
        runtime: Runtime,
        after: AfterParam = None,
    ) -> ServerSentEvent:
        """Follow every run's events in commit order; ``id:`` is the global cursor."""
        subscription = runtime.store.log.subscribe(after=_start_cursor(request, after))
        return _response(subscription, runtime, global_ids=True)
