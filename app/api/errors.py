"""Every API error is JSON ``{error, detail}``, one status per kind of error, never a trace."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.config import ConfigError
from app.control.errors import Conflict, ControlError, Forbidden, LimitReached, NotFound
from app.redact import redact_text
from app.wire.api import ErrorBody
from db.eventlog import UnknownRun
from db.lifecycle import IllegalTransition

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
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
    415: "Request bodies must be `application/json`.",
    429: "A configured limit would be exceeded.",
}


def error_response(status: int, code: str, detail: str) -> Response[ErrorBody]:
    """A JSON error response."""
    return Response(
        ErrorBody(error=code, detail=detail),
        status_code=status,
        headers={"cache-control": "no-store"},
    )


def _validation_detail(exc: ValidationException) -> str:
    extra = exc.extra
    if isinstance(extra, list) and extra:
        parts = []
        for item in extra:
            if isinstance(item, dict):
                where = item.get("key") or item.get("source") or "body"
                parts.append(f"{where}: {item.get('message', '')}".strip())
        if parts:
            return "; ".join(parts)
    return str(exc.detail)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """Map any exception raised by a handler to a JSON error response."""
    if isinstance(exc, ValidationException):
        return error_response(400, "invalid_request", _validation_detail(exc))
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status >= 500:
            log.error("HTTP %s on %s: %s", status, request.url.path, redact_text(str(exc.detail)))
            return error_response(500, "internal_error", "the runner failed; see its log")
        return error_response(status, _STATUS_CODES.get(status, "error"), str(exc.detail))
    if isinstance(exc, UnknownRun):
        return error_response(404, "run_not_found", str(exc))
    if isinstance(exc, NotFound):
        return error_response(404, exc.code, str(exc))
    if isinstance(exc, Forbidden):
        return error_response(403, exc.code, str(exc))
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
