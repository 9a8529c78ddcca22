"""Shared route plumbing: who may call a handler, the errors it documents, its dependencies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Request
from litestar.handlers.base import BaseRouteHandler
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
    413 and 415 whenever the route takes a body; 400 for any bad parameter)."""
    statuses = {400, 401, 403, *errors}
    if has_body:
        statuses |= {413, 415}
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


#: (handler id, its path parameters) -> (the handler, kept so its id stays its own; names).
_QUERY_NAMES: dict[tuple[int, frozenset[str]], tuple[BaseRouteHandler, frozenset[str]]] = {}


def declared_query_names(handler: BaseRouteHandler, path_params: Iterable[str]) -> frozenset[str]:
    """The query parameter names (aliases as clients send them) a handler declares."""
    path_names = frozenset(path_params)
    cached = _QUERY_NAMES.get((id(handler), path_names))
    if cached is not None:
        return cached[1]
    model = handler.create_kwargs_model(dict.fromkeys(path_names))  # type: ignore[arg-type]
    names = frozenset(param.field_alias for param in model.expected_query_params)
    _QUERY_NAMES[(id(handler), path_names)] = (handler, names)
    return names


def _reject_unknown_query(request: Request[Any, Any, Any]) -> None:
    # An unknown query parameter is an error, not silently ignored (as unknown body fields
    # are), so a typo such as ``?states=`` cannot widen a listing.
    declared = declared_query_names(request.scope["route_handler"], request.path_params)
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        raise ValueError(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; this route takes: {takes}"
        )


def _body_type(handler: BaseRouteHandler) -> Any:
    field = handler.parsed_fn_signature.parameters.get("data")
    return None if field is None else field.annotation


def _where(message: str) -> str:
    """``Expected `int`, got `str` - at `$.ttl_s``` as ``ttl_s: Expected `int`, got `str```."""
    text, _, path = message.partition(" - at `")
    path = path.rstrip("`").removeprefix("$").removeprefix(".")
    return f"{path or 'body'}: {text}"


async def check_request(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: no unknown query parameter, and a body that matches its
    Struct *strictly* (Litestar converts leniently, so ``"auto_pause": 0`` or
    ``"ttl_s": "60"`` would otherwise pass as a bool and an int)."""
    _reject_unknown_query(request)
    body_type = _body_type(request.scope["route_handler"])
    if body_type is None:
        return
    raw = await request.body()
    if not raw.strip():
        raise ValueError("the request needs a JSON body ({} for an action with no fields)")
    try:
        msgspec.json.decode(raw, type=body_type, strict=True)
    except msgspec.ValidationError as error:
        raise ValueError(_where(str(error))) from None
    except msgspec.DecodeError as error:
        raise ValueError(f"the body is not valid JSON: {error}") from None
