"""The one security layer of the runner's HTTP API.

Two parts, both here:

* :class:`SecurityLayer`, an ASGI middleware in front of the whole Litestar app (so no
  route, schema page or 404 escapes it): Host allow-list (DNS-rebinding defence), same-origin
  ``Origin``, authentication (bearer control token, delegation token, or UI session cookie),
  CSRF on state-changing session requests, JSON-only bodies, security headers.
* :func:`authorize`, the Litestar guard on every handler: the handler's ``opt["allow"]``
  names which principal kinds may call it (nothing listed = nobody), ``opt["person_only"]``
  restricts it to a person's clients (UI, TUI, CLI — not the MCP server a model drives).

Missing or invalid credentials answer 401; valid credentials without the right, 403.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Literal

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    MethodNotAllowedException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler

from app.api.sessions import SESSION_COOKIE, Session, SessionStore
from app.control.tokens import DelegationGrant, same_secret
from app.wire.api import ErrorBody
from app.wire.events import Actor

log = logging.getLogger(__name__)

PRINCIPAL_KEY = "codex.principal"
CLIENT_HEADER = "x-codex-client"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Requests that need no credential (the login code is itself the credential).
PUBLIC_ROUTES = frozenset({("GET", "/api/health"), ("GET", "/ui/login")})
#: Actors a person drives; confirm-to-act approvals must come from one of these.
PERSON_ACTORS = frozenset({Actor.UI, Actor.TUI, Actor.CLI})
_CLIENT_ACTORS = {"cli": Actor.CLI, "tui": Actor.TUI, "mcp": Actor.MCP}

Kind = Literal["control", "session", "delegate"]
ASGIApp = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    kind: Kind
    actor: Actor
    run_id: str | None = None
    profile: str | None = None
    session: Session | None = None


@dataclass
class SecurityPolicy:
    """What the layer checks against; ``allowed_hosts`` is filled in once the port is bound."""

    control_token_hash: str
    sessions: SessionStore
    delegation_lookup: Callable[[str], DelegationGrant | None]
    allowed_hosts: set[str] = field(default_factory=set)

    def allow_host(self, host: str, port: int) -> None:
        """Accept ``host:port`` (and the usual loopback aliases of the same port)."""
        names = {host}
        if host in ("127.0.0.1", "localhost"):
            names |= {"127.0.0.1", "localhost"}
        if host in ("::1", "[::1]"):
            names = {"[::1]"}
        self.allowed_hosts |= {f"{name}:{port}" for name in names}

    @property
    def allowed_origins(self) -> set[str]:
        return {f"http://{host}" for host in self.allowed_hosts}


def _error(status: int, code: str, detail: str) -> tuple[int, bytes]:
    return status, msgspec.json.encode(ErrorBody(error=code, detail=detail))


SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityLayer:
    """ASGI middleware: every HTTP request passes :meth:`check` before reaching the app."""

    def __init__(self, app: ASGIApp, policy: SecurityPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            # No websockets: refuse before anything else runs.
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = _headers(scope)
        try:
            verdict = self.check(scope["method"], scope["path"], headers)
        except Exception:
            # Never a bare 500 page or a trace, whatever a request's headers hold.
            log.exception("security check failed on %s", scope.get("path"))
            verdict = _error(500, "internal_error", "the runner failed; see its log")
        if isinstance(verdict, tuple):
            status, body = verdict
            await _send_error(send, status, body, headers=_challenge(status))
            return
        if verdict is not None:
            scope[PRINCIPAL_KEY] = verdict
        await self.app(scope, receive, _with_security_headers(send))

    def check(
        self, method: str, path: str, headers: dict[str, str]
    ) -> Principal | tuple[int, bytes] | None:
        """Return the caller's principal, None for a public route, or an error response."""
        host = headers.get("host", "")
        if host not in self.policy.allowed_hosts:
            return _error(
                403,
                "host_not_allowed",
                f"Host {host!r} is not this runner's address; use one of "
                f"{sorted(self.policy.allowed_hosts)}",
            )
        origin = headers.get("origin")
        if origin is not None and origin not in self.policy.allowed_origins:
            return _error(
                403,
                "origin_not_allowed",
                "cross-origin requests are refused; load the UI from the runner itself",
            )
        if (method, path) in PUBLIC_ROUTES:
            return None
        principal = self._authenticate(headers)
        if isinstance(principal, tuple):
            return principal
        if method not in SAFE_METHODS:
            if principal.kind == "session":
                assert principal.session is not None
                # Bytes, not str: compare_digest refuses non-ASCII str (headers are latin-1).
                sent = headers.get(CSRF_HEADER, "").encode("latin-1")
                if not hmac.compare_digest(sent, principal.session.csrf_token.encode()):
                    return _error(
                        403,
                        "csrf_failed",
                        "missing or wrong X-CSRF-Token header (read it from GET /api/session)",
                    )
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return _error(
                    415,
                    "unsupported_media_type",
                    "request bodies must be JSON: send Content-Type: application/json "
                    "(an action without fields takes {})",
                )
        return principal

    def _authenticate(self, headers: dict[str, str]) -> Principal | tuple[int, bytes]:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return _error(401, "invalid_credentials", "use Authorization: Bearer <token>")
            if same_secret(token, self.policy.control_token_hash):
                client = headers.get(CLIENT_HEADER, "cli").lower()
                actor = _CLIENT_ACTORS.get(client)
                if actor is None:
                    return _error(
                        401,
                        "invalid_credentials",
                        f"unknown {CLIENT_HEADER} {client!r}; use cli, tui or mcp",
                    )
                return Principal(kind="control", actor=actor)
            grant = self.policy.delegation_lookup(token)
            if grant is not None:
                return Principal(
                    kind="delegate",
                    actor=Actor.DELEGATE,
                    run_id=grant.run_id,
                    profile=grant.profile,
                )
            return _error(
                401,
                "invalid_credentials",
                "the token is not valid for this runner (it changes at every start: re-read "
                "control_auth.json)",
            )
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            cookie = SimpleCookie()
        morsel = cookie.get(SESSION_COOKIE)
        if morsel is not None:
            session = self.policy.sessions.lookup(morsel.value)
            if session is not None:
                return Principal(kind="session", actor=Actor.UI, session=session)
            return _error(401, "session_expired", "the session is not valid; open a new login URL")
        return _error(
            401,
            "missing_credentials",
            "send Authorization: Bearer <token> (see control_auth.json) or sign in through "
            "the UI login URL",
        )


def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard on every handler: check the principal against the handler's opt."""
    if handler.opt.get("public"):
        return
    principal = connection.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("missing credentials")
    if _is_automatic_options(handler):
        # Litestar's own OPTIONS answer is not ours to give (there is no CORS here, and its
        # ``Allow`` header misses methods of routes split across handlers): say so plainly.
        raise MethodNotAllowedException(
            "this API does not answer OPTIONS (there is no CORS); each route's methods are "
            "in /schema/openapi.json"
        )
    allowed: Iterable[str] = handler.opt.get("allow", ())
    if principal.kind not in allowed:
        raise PermissionDeniedException(f"a {principal.kind} credential may not call this route")
    if handler.opt.get("person_only") and principal.actor not in PERSON_ACTORS:
        raise PermissionDeniedException(
            "only a person may do this: approve from the UI, the TUI or the CLI"
        )


def _is_automatic_options(handler: BaseRouteHandler) -> bool:
    methods: set[str] = getattr(handler, "http_methods", set())
    name = getattr(handler.fn, "__name__", "")
    return methods == {"OPTIONS"} and name == "options_handler" and "allow" not in handler.opt


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal the security layer attached to this request."""
    principal = connection.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("missing credentials")
    return principal


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        # A repeated security header is ambiguous: keep the first, as the spec's parsers do.
        result.setdefault(key, value.decode("latin-1"))
    return result


def _challenge(status: int) -> list[tuple[bytes, bytes]]:
    return [(b"www-authenticate", b'Bearer realm="codex-delegation"')] if status == 401 else []


async def _send_error(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _with_security_headers(send: Any) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
        await send(message)

    return wrapped
