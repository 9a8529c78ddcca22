"""Shared route plumbing: who may call a handler, the errors it documents, its dependencies."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.openapi.datastructures import ResponseSpec

from app.api.errors import ERROR_DESCRIPTIONS
from app.api.security import Principal, principal_of
from app.control.errors import Forbidden
from app.wire.api import ErrorBody

PEOPLE = ("control", "session")
EVERYONE = ("control", "session", "delegate")


def access(
    allow: tuple[str, ...],
    *,
    errors: tuple[int, ...] = (),
    person_only: bool = False,
    has_body: bool = False,
    extra: dict[int, ResponseSpec] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator: its ``opt`` for :func:`authorize` and every
    error status it can answer, documented in OpenAPI (the security layer's 401/403 always;
    415 whenever the route takes a body; 400 for any bad parameter)."""
    statuses = {400, 401, 403, *errors}
    if has_body:
        statuses.add(415)
    return {
        "opt": {"allow": allow, "person_only": person_only},
        "responses": {
            status: ResponseSpec(
                data_container=ErrorBody,
                description=ERROR_DESCRIPTIONS[status],
                generate_examples=False,
            )
            for status in sorted(statuses)
        }
        | (extra or {}),
    }


def get_principal(request: Request[Any, Any, Any]) -> Principal:
    """Dependency: the caller, as authenticated by the security layer."""
    return principal_of(request)


def require_run_scope(principal: Principal, run_id: str) -> None:
    """A delegate may only touch its own run."""
    if principal.kind == "delegate" and principal.run_id != run_id:
        raise Forbidden("a delegation token only gives access to its own run")
