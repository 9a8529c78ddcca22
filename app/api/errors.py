"""Every API error is JSON ``{error, detail}``, one status per kind of error, never a trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.config import ConfigError
from app.control.errors import (
    Conflict,
    ControlError,
    Forbidden,
    LimitReached,
    NotFound,
    Unavailable,
)
from app.redact import redact_text
from app.wire.api import ErrorBody
from db.eventlog import UnknownRun
from db.lifecycle import IllegalTransition

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "invalid_request",
    401: "missing_credentials",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "limit_reached",
}

#: Status and description of every error the API can answer, for the OpenAPI document.
ERROR_DESCRIPTIONS = {
    400: "The request is malformed; `detail` says which field and why.",
    401: "Missing or invalid credentials.",
    403: "Valid credentials without the right, a foreign Host/Origin, or a failed CSRF check.",
    404: "No such resource.",
    409: "The request does not fit the current state.",
    413: "The request body is larger than the runner accepts (1 MiB).",
    415: "Request bodies must be `application/json`.",
    429: "A configured limit would be exceeded.",
    503: "The runner cannot do this now for a reason on its side (e.g. its home is not writable).",
}

#: Litestar's own one-line details, replaced by ones that say what to do.
_HTTP_DETAILS = {
    404: "no such route; the API is described at /schema/openapi.json",
    405: "this route does not take that method; see /schema/openapi.json",
    413: "the request body is larger than the runner accepts (1 MiB)",
}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    """A JSON error response."""
    return Response(
        ErrorBody(error=code, detail=detail),
        status_code=status,
        media_type=MediaType.JSON,
        headers={**(headers or {}), "cache-control": "no-store"},
    )


def _public_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a client uses for a parameter (its query alias), not the handler's."""
    if key == "data":
        return "body"
    handler = request.scope.get("route_handler")
    field = getattr(handler, "parsed_fn_signature", None)
    parameter = field.parameters.get(key) if field is not None else None
    definition = getattr(parameter, "kwarg_definition", None)
    alias = getattr(definition, "query", None)
    return alias if isinstance(alias, str) and alias else key


def _validation_detail(request: Request[Any, Any, Any], exc: ValidationException) -> str:
    extra = exc.extra
    if isinstance(extra, list) and extra:
        parts = []
        for item in extra:
            if isinstance(item, dict):
                key = str(item.get("key") or "data")
                message = str(item.get("message", "")).strip()
                if key == "data" and message == "'data'":
                    # Litestar's KeyError text when there is no body at all.
                    parts.append("the request needs a JSON body ({} for an action with no fields)")
                    continue
                parts.append(f"{_public_name(request, key)}: {message}")
        if parts:
            return "; ".join(parts)
    return str(exc.detail)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """Map any exception raised by a handler to a JSON error response."""
    if isinstance(exc, ValidationException):
        return error_response(400, "invalid_request", _validation_detail(request, exc))
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status >= 500:
            log.error("HTTP %s on %s: %s", status, request.url.path, redact_text(str(exc.detail)))
            return error_response(500, "internal_error", "the runner failed; see its log")
        detail = str(exc.detail)
        if status in _HTTP_DETAILS and detail == HTTPStatus(status).phrase:
            detail = _HTTP_DETAILS[status]
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        return error_response(status, _STATUS_CODES.get(status, "error"), detail, headers)
    if isinstance(exc, UnknownRun):
        return error_response(404, "run_not_found", str(exc))
    if isinstance(exc, NotFound):
        return error_response(404, exc.code, str(exc))
    if isinstance(exc, Forbidden):
        return error_response(403, exc.code, str(exc))
    if isinstance(exc, Unavailable):
        return error_response(503, exc.code, str(exc))
    if isinstance(exc, LimitReached):
        return error_response(429, exc.code, str(exc))
    if isinstance(exc, Conflict | IllegalTransition):
        code = exc.code if isinstance(exc, ControlError) else "illegal_transition"
        return error_response(409, code, str(exc))
    if isinstance(exc, ConfigError):
        return error_response(400, "invalid_config", str(exc))
    if isinstance(exc, ValueError | msgspec.ValidationError):
        return error_response(400, "invalid_request", str(exc))
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, "internal_error", "the runner failed; see its log")
