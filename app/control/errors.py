"""Domain errors of the control plane; the API maps each kind to one HTTP status."""

from __future__ import annotations


class ControlError(Exception):
    """Base: ``code`` is a stable machine-readable name, the message says what to do."""

    code = "control_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(ControlError, LookupError):
    """No such run, question or confirmation (HTTP 404)."""

    code = "not_found"


class Conflict(ControlError):
    """The request does not fit the current state (HTTP 409)."""

    code = "conflict"


class LimitReached(ControlError):
    """A configured limit would be exceeded (HTTP 429)."""

    code = "limit_reached"


class Unavailable(ControlError):
    """The runner cannot do this right now for a reason on its side (HTTP 503)."""

    code = "unavailable"


class Forbidden(ControlError):
    """The caller is authenticated but may not do this (HTTP 403)."""

    code = "forbidden"
