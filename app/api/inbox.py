"""The inboxes a person works through: questions from delegates and confirmations to approve."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.api.routing import EVERYONE, PEOPLE, access, require_run_scope
from app.api.security import Principal
from app.control.confirmations import ConfirmationView
from app.control.errors import Forbidden
from app.control.questions import QuestionView
from app.runtime import Runtime
from app.wire.api import AnswerBody, DismissBody, EmptyBody, QuestionCreate

Limit = Annotated[int, QueryParameter(ge=1, le=500)]
RunIdFilter = Annotated[str | None, QueryParameter(max_length=200)]


class QuestionList(msgspec.Struct, frozen=True, kw_only=True):
    questions: list[QuestionView]


class ConfirmationList(msgspec.Struct, frozen=True, kw_only=True):
    confirmations: list[ConfirmationView]


class QuestionsController(Controller):
    """Questions delegates ask; people (or the parent agent) answer."""

    tags = ["questions"]

    @post(
        "/api/runs/{run_id:str}/questions",
        sync_to_thread=True,
        status_code=201,
        **access(EVERYONE, errors=(404, 409), has_body=True),
    )
    def enqueue(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        run_id: FromPath[str],
        data: JSONBody[QuestionCreate],
    ) -> QuestionView:
        """Ask a question on behalf of ``run_id`` (a delegate may only ask for its own run)."""
        require_run_scope(principal, run_id)
        return runtime.questions.enqueue(
            run_id,
            prompt=data.prompt,
            actor=principal.actor,
            auto_pause=data.auto_pause,
            ttl_s=data.ttl_s,
            expiry_fallback=data.expiry_fallback,
        )

    @get("/api/questions", sync_to_thread=True, **access(PEOPLE))
    def list_questions(
        self,
        runtime: NamedDependency[Runtime],
        status: FromQuery[Literal["pending", "answered", "expired", "dismissed"] | None] = None,
        run_id: RunIdFilter = None,
        limit: Limit = 100,
    ) -> QuestionList:
        """Questions, newest first, optionally by status and asking run."""
        return QuestionList(
            questions=runtime.questions.list(status=status, run_id=run_id, limit=limit)
        )

    @get("/api/questions/{question_id:str}", **access(EVERYONE, errors=(404,)))
    async def show(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        question_id: FromPath[str],
        wait_ms: Annotated[int, QueryParameter(ge=0, le=3_600_000)] = 0,
    ) -> QuestionView:
        """One question; with ``wait_ms`` it long-polls until it is no longer pending
        (capped by ``questions.max_wait_ms``)."""
        view = runtime.questions.get(question_id)
        if principal.kind == "delegate" and principal.run_id not in (
            view.run_id,
            view.parent_run_id,
        ):
            raise Forbidden("a delegation token only gives access to its own run's questions")
        if wait_ms and view.status == "pending":
            view = await runtime.questions.wait(question_id, wait_ms)
        return view

    @post(
        "/api/questions/{question_id:str}/answer",
        sync_to_thread=True,
        status_code=200,
        **access(EVERYONE, errors=(404, 409), has_body=True),
    )
    def answer(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        question_id: FromPath[str],
        data: JSONBody[AnswerBody],
    ) -> QuestionView:
        """Answer a pending question (a delegate may answer its children's questions)."""
        self._check_answerer(runtime, principal, question_id)
        return runtime.questions.answer(question_id, answer=data.answer, by=principal.actor)

    @post(
        "/api/questions/{question_id:str}/dismiss",
        sync_to_thread=True,
        status_code=200,
        **access(EVERYONE, errors=(404, 409), has_body=True),
    )
    def dismiss(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        question_id: FromPath[str],
        data: JSONBody[DismissBody],
    ) -> QuestionView:
        """Dismiss a pending question without an answer."""
        self._check_answerer(runtime, principal, question_id)
        return runtime.questions.dismiss(question_id, by=principal.actor, reason=data.reason)

    @staticmethod
    def _check_answerer(runtime: Runtime, principal: Principal, question_id: str) -> None:
        if principal.kind != "delegate":
            return
        view = runtime.questions.get(question_id)
        if view.parent_run_id is None or view.parent_run_id != principal.run_id:
            raise Forbidden("a delegate may only answer questions its own child runs asked")


class ConfirmationsController(Controller):
    """Destructive actions waiting for a person."""

    path = "/api/confirmations"
    tags = ["confirmations"]

    @get("/", sync_to_thread=True, **access(PEOPLE))
    def list_confirmations(
        self,
        runtime: NamedDependency[Runtime],
        status: FromQuery[Literal["pending", "approved", "denied", "expired"] | None] = None,
        run_id: RunIdFilter = None,
        limit: Limit = 100,
    ) -> ConfirmationList:
        """Confirmations, newest first."""
        return ConfirmationList(
            confirmations=runtime.confirmations.list(status=status, run_id=run_id, limit=limit)
        )

    @post(
        "/{confirmation_id:str}/approve",
        sync_to_thread=True,
        status_code=200,
        **access(PEOPLE, person_only=True, errors=(404, 409), has_body=True),
    )
    def approve(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        confirmation_id: FromPath[str],
        data: JSONBody[EmptyBody],
    ) -> ConfirmationView:
        """Approve: the runner performs the stored action itself."""
        return runtime.confirmations.approve(confirmation_id, by=principal.actor)

    @post(
        "/{confirmation_id:str}/deny",
        sync_to_thread=True,
        status_code=200,
        **access(PEOPLE, person_only=True, errors=(404, 409), has_body=True),
    )
    def deny(
        self,
        runtime: NamedDependency[Runtime],
        principal: NamedDependency[Principal],
        confirmation_id: FromPath[str],
        data: JSONBody[EmptyBody],
    ) -> ConfirmationView:
        """Deny: the action is dropped."""
        return runtime.confirmations.deny(confirmation_id, by=principal.actor)
