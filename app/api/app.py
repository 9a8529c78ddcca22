"""Assembling the runner's ASGI application: Litestar behind the security layer."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from app.api.errors import handle_exception
from app.api.inbox import ConfirmationsController, QuestionsController
from app.api.routing import PEOPLE, get_principal
from app.api.runs import RunsController
from app.api.security import SecurityLayer, authorize
from app.api.stream import StreamController
from app.api.system import VERSION, SystemController
from app.runtime import Runtime

log = logging.getLogger(__name__)

OPENAPI_PATH = "/schema"


def build_litestar(runtime: Runtime) -> Litestar:
    """The Litestar app with every controller, dependency, guard and error handler."""
    return Litestar(
        route_handlers=[
            SystemController,
            RunsController,
            StreamController,
            QuestionsController,
            ConfirmationsController,
        ],
        dependencies={
            "runtime": Provide(lambda: runtime, sync_to_thread=False, use_cache=True),
            "principal": Provide(get_principal, sync_to_thread=False),
        },
        guards=[authorize],
        exception_handlers={Exception: handle_exception},
        openapi_config=OpenAPIConfig(
            title="Codex Delegation Platform runner API",
            version=VERSION,
            path=OPENAPI_PATH,
            render_plugins=[JsonRenderPlugin()],
            openapi_router=Router(
                OPENAPI_PATH, route_handlers=[], opt={"allow": PEOPLE}, include_in_schema=False
            ),
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer"),
                    "session": SecurityScheme(
                        type="apiKey", name="cdp_session", security_scheme_in="cookie"
                    ),
                }
            ),
            security=[{"bearer": []}, {"session": []}],
        ),
        debug=False,
        logging_config=None,
        request_max_body_size=1_048_576,
    )


def build_app(runtime: Runtime) -> Any:
    """The ASGI app uvicorn serves: the security layer in front of Litestar."""
    return SecurityLayer(build_litestar(runtime), runtime.policy)
