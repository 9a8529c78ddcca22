"""Health, settings, the UI session and its login."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation
from litestar.params import JSONBody, QueryParameter
from litestar.response import Redirect

from app.api.errors import error_response
from app.api.routing import EVERYONE, PEOPLE, access
from app.api.security import Principal
from app.api.sessions import CSRF_COOKIE, SESSION_COOKIE, SESSION_TTL
from app.config import resolve_config
from app.control.spawn import resolve_repo
from app.runtime import Runtime
from app.wire.api import EmptyBody, ErrorBody, Health, LoginCodeView, SessionInfo, SettingsView

try:
    VERSION = version("codex-delegation")
except PackageNotFoundError:  # running from a checkout without installing
    VERSION = "0.0.0"

UI_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Codex Delegation</title></head>
<body><h1>Codex Delegation Platform</h1>
<p>Signed in. The control center UI lands with the UI issue; the JSON API is at
<code>/api/</code> and its description at <code>/schema/openapi.json</code>.</p>
</body></html>
"""


@dataclass
class PublicOperation(Operation):
    """The OpenAPI operation of a public route: ``security: []`` overrides the document-wide
    requirement (Litestar drops an empty ``security=[]`` given to the route decorator)."""

    def __post_init__(self) -> None:
        self.security = []


FOREIGN_HOST = ResponseSpec(
    data_container=ErrorBody,
    description="A foreign Host or Origin.",
    generate_examples=False,
)


class SystemController(Controller):
    """Routes that are about the runner itself."""

    tags = ["system"]

    @get(
        "/api/health",
        opt={"public": True},
        operation_class=PublicOperation,
        responses={403: FOREIGN_HOST},
    )
    async def health(self) -> Health:
        """Liveness; the only API route that needs no credential."""
        return Health(status="ok", version=VERSION)

    @get("/api/session", **access(EVERYONE))
    async def session(self, principal: NamedDependency[Principal]) -> SessionInfo:
        """Who the caller is; a browser session also learns its CSRF token here."""
        csrf = principal.session.csrf_token if principal.session is not None else None
        return SessionInfo(principal=principal.kind, csrf_token=csrf)

    @get("/api/settings", sync_to_thread=True, **access(PEOPLE))
    def settings(
        self,
        repo: Annotated[
            str | None, QueryParameter(max_length=4096, description="absolute repo path")
        ] = None,
    ) -> SettingsView:
        """The effective global + repo configuration with the layer of every key (read-only)."""
        config = resolve_config(repo=resolve_repo(repo))
        return SettingsView(
            config=config.as_dict(),
            sources={key: item.layer for key, item in config.provenance().items()},
            files=dict(config.files),
        )

    @post(
        "/api/ui/login-codes",
        status_code=201,
        **access(("control",), person_only=True, has_body=True),
    )
    async def login_code(
        self, runtime: NamedDependency[Runtime], data: JSONBody[EmptyBody]
    ) -> LoginCodeView:
        """A fresh one-time UI login URL (for the desktop window or `app` to open)."""
        code, expires_at = runtime.sessions.new_login_code()
        return LoginCodeView(url=f"{runtime.base_url}/ui/login?code={code}", expires_at=expires_at)

    @get(
        "/ui/login",
        opt={"public": True},
        operation_class=PublicOperation,
        status_code=303,
        responses={
            303: ResponseSpec(
                data_container=None,
                description="Signed in: the session and CSRF cookies are set; on to /ui/.",
            ),
            401: ResponseSpec(
                data_container=ErrorBody,
                description="The code is unknown, used or expired.",
                generate_examples=False,
            ),
            400: ResponseSpec(
                data_container=ErrorBody,
                description="Missing or malformed code.",
                generate_examples=False,
            ),
            403: FOREIGN_HOST,
        },
    )
    async def login(
        self,
        runtime: NamedDependency[Runtime],
        code: Annotated[str, QueryParameter(max_length=200)],
    ) -> Response[Any]:
        """Trade a one-time login code for a session cookie and go to the UI."""
        redeemed = runtime.sessions.redeem(code)
        if redeemed is None:
            return error_response(
                401, "invalid_login_code", "this login link is used or expired; ask for a new one"
            )
        session_id, session = redeemed
        max_age = int(SESSION_TTL.total_seconds())
        return Redirect(
            "/ui/",
            status_code=303,
            cookies=[
                Cookie(
                    key=SESSION_COOKIE,
                    value=session_id,
                    httponly=True,
                    samesite="strict",
                    path="/",
                    max_age=max_age,
                ),
                Cookie(
                    key=CSRF_COOKIE,
                    value=session.csrf_token,
                    httponly=False,
                    samesite="strict",
                    path="/",
                    max_age=max_age,
                ),
            ],
        )

    @get("/ui/", media_type=MediaType.HTML, **access(PEOPLE))
    async def ui(self, request: Request[Any, Any, Any]) -> Response[str]:
        """The UI's entry page."""
        return Response(
            UI_PAGE,
            media_type=MediaType.HTML,
            headers={
                "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
                "cache-control": "no-store",
            },
        )
