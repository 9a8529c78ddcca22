"""Runs: list, spawn, show, page of events, control."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.routing import EVERYONE, PEOPLE, access, require_run_scope
from app.api.security import Principal
from app.control.actions import ControlAction, control_state, request_control
from app.control.confirmations import required_view
from app.control.errors import Forbidden
from app.control.spawn import spawn_run
from app.runtime import Runtime
from app.wire.api import (
    ConfirmationRequiredBody,
    ControlRequest,
    ControlResult,
    ControlStateView,
    EventPage,
    LatestActionView,
    RunList,
    SpawnRequest,
    SpawnResponse,
)
from app.wire.events import Actor
from app.wire.runs import RunSummary
from db.runs import get_run, list_runs

RunStateName = Literal[
    "queued",
    "running",
    "pausing",
    "paused",
    "interrupted",
    "succeeded",
    "failed",
    "cancelled",
    "budget_exceeded",
]
APPROVE_HINT = (
    "A person must approve confirmation {cid}: in the UI's confirmations inbox, the TUI, "
    "or `app confirmations approve {cid}`. Then check the run with delegate.status."
)


def _encode_cursor(run: RunSummary) -> str:
    return base64.urlsafe_b64encode(f"{run.created_at}|{run.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        created_at, _, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned; start without it") from None
    if not created_at or not run_id:
        raise ValueError("cursor is not one this API returned; start without it")
    return created_at, run_id


def control_view(runtime: Runtime, run_id: str) -> ControlStateView:
    """The control.json shape of a run, as a wire Struct."""
    state = control_state(runtime.store.log, run_id)
    return ControlStateView(
        run_id=state.run_id,
        control_seq=state.control_seq,
        latest_action=None
        if state.latest_action is None
        else LatestActionView(**msgspec.structs.asdict(state.latest_action)),
        feature_toggles=state.feature_toggles,
    )


class RunsController(Controller):
    """``/api/runs``: the runs of this runner."""

    path = "/api/runs"
    tags = ["runs"]

    @get("/", sync_to_thread=True, **access(PEOPLE))
    def list_runs(
        self,
        runtime: NamedDependency[Runtime],
        states: Annotated[
            list[RunStateName] | None,
            QueryParameter(name="state", description="filter by state"),
        ] = None,
        parent_run_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=1000)] = None,
    ) -> RunList:
        """List runs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        before = _decode_cursor(cursor) if cursor else None
        runs = list_runs(
            runtime.store.log,
            states=states or (),
            parent_run_id=parent_run_id,
            limit=limit,
            before=before,
        )
        next_cursor = _encode_cursor(runs[-1]) if len(runs) == limit else None
        return RunList(runs=runs, next_cursor=next_cursor)

    @post(
        "/",
        sync_to_thread=True,
        status_code=201,
        **access(PEOPLE, errors=(404, 503), has_body=True),
    )
    def spawn(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        data: JSONBody[SpawnRequest],
    ) -> SpawnResponse:
        """Spawn a delegate run; it is queued at once and this returns without waiting."""
        run = spawn_run(
            runtime.store.log,
            task=data.task,
            actor=principal.actor,
            repo=data.repo,
            parent_run_id=data.parent_run_id,
            task_id=data.task_id,
            engine=data.engine,
            mode=data.mode,
            rlm_policy=data.rlm_policy,
            overrides=data.config,
        )
        return SpawnResponse(
            run=run,
            events_url=f"/api/runs/{run.id}/events",
            stream_url=f"/api/runs/{run.id}/events/stream",
        )

    @get("/{run_id:str}", sync_to_thread=True, **access(EVERYONE, errors=(404,)))
    def show(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        run_id: FromPath[str],
    ) -> RunSummary:
        """One run."""
        require_run_scope(principal, run_id)
        return get_run(runtime.store.log, run_id)

    @get("/{run_id:str}/events", sync_to_thread=True, **access(EVERYONE, errors=(404,)))
    def events(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        run_id: FromPath[str],
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> EventPage:
        """A page of the run's events with ``seq > after``, in seq order."""
        require_run_scope(principal, run_id)
        log = runtime.store.log
        last_seq = log.last_seq(run_id)
        events = log.page(run_id, after=after, limit=limit)
        return EventPage(
            events=events, next_after=events[-1].seq if events else after, last_seq=last_seq
        )

    @get("/{run_id:str}/control", sync_to_thread=True, **access(EVERYONE, errors=(404,)))
    def control_status(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        run_id: FromPath[str],
    ) -> ControlStateView:
        """The run's control state (the shape of its ``control.json``)."""
        require_run_scope(principal, run_id)
        return control_view(runtime, run_id)

    @post(
        "/{run_id:str}/control",
        sync_to_thread=True,
        status_code=200,
        **access(
            PEOPLE,
            errors=(404, 409, 429),
            has_body=True,
            extra={
                202: ResponseSpec(
                    data_container=ConfirmationRequiredBody,
                    description="A person must approve this action first.",
                    generate_examples=False,
                )
            },
        ),
    )
    def control(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        run_id: FromPath[str],
        data: JSONBody[ControlRequest],
    ) -> Response[ControlResult | ConfirmationRequiredBody]:
        """Pause, resume or cancel; idempotent per ``request_id``.

        A cancel from the MCP server (a model's request) is not executed: it answers 202
        with ``confirmation_required`` until a person approves it.
        """
        log = runtime.store.log
        action = ControlAction(data.action)
        if principal.kind == "delegate":
            raise Forbidden("a delegation token cannot control runs")
        if action is ControlAction.CANCEL and principal.actor is Actor.MCP:
            view = runtime.confirmations.require(
                run_id,
                action="cancel",
                params={"reason": data.reason} if data.reason else {},
                requested_by=principal.actor,
            )
            required = required_view(view, approve_hint=APPROVE_HINT.format(cid=view.id))
            return Response(
                ConfirmationRequiredBody(
                    status="confirmation_required",
                    confirmation_id=required.confirmation_id,
                    action=required.action,
                    expires_at=required.expires_at,
                    how_to_approve=required.how_to_approve,
                ),
                status_code=202,
            )
        outcome = request_control(
            log,
            run_id,
            action=action,
            request_id=data.request_id,
            requested_by=principal.actor,
            reason=data.reason,
        )
        return Response(
            ControlResult(
                run_id=run_id,
                action=outcome.action.value,
                request_id=outcome.request_id,
                state=outcome.state.value,
                applied=outcome.applied,
                changed=outcome.changed,
                control=control_view(runtime, run_id),
            )
        )
