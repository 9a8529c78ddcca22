"""Assembling the runner's ASGI application: Litestar behind the security layer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar, MediaType, Response, Router

# Litestar's own Struct schema plugin; extended below, it has no public import path.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from app.api.errors import error_response, handle_exception
from app.api.inbox import ConfirmationsController, QuestionsController
from app.api.routing import PEOPLE, check_request, get_principal
from app.api.runs import RunsController
from app.api.security import SecurityLayer, authorize
from app.api.stream import StreamController
from app.api.system import VERSION, SystemController
from app.api.violations import ViolationsController
from app.runtime import Runtime

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Schema
    from litestar.typing import FieldDefinition

log = logging.getLogger(__name__)

OPENAPI_PATH = "/schema"


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Request Structs forbid unknown fields; their OpenAPI schemas say so
    (``additionalProperties: false``), so a client knows an extra field is an error."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        if not super().is_plugin_supported_field(field_definition):
            return False
        info = msgspec.inspect.type_info(field_definition.type_)
        return isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema


def _json_not_found(response: Response[Any]) -> Response[Any]:
    """Litestar's OpenAPI router answers unknown ``/schema/...`` pages with an HTML 404; keep
    the one error shape instead."""
    if response.status_code == 404 and response.media_type == MediaType.HTML:
        return error_response(
            404,
            "not_found",
            f"no such page; the API description is at {OPENAPI_PATH}/openapi.json",
        )
    return response


def build_litestar(runtime: Runtime) -> Litestar:
    """The Litestar app with every controller, dependency, guard and error handler."""
    return Litestar(
        route_handlers=[
            SystemController,
            RunsController,
            StreamController,
            QuestionsController,
            ConfirmationsController,
            ViolationsController,
        ],
        dependencies={
            "runtime": Provide(lambda: runtime, sync_to_thread=False, use_cache=True),
            "principal": Provide(get_principal, sync_to_thread=False),
        },
        guards=[authorize],
        before_request=check_request,
        exception_handlers={Exception: handle_exception},
        plugins=[ClosedStructSchemaPlugin()],
        openapi_config=OpenAPIConfig(
            title="Codex Delegation Platform runner API",
            version=VERSION,
            path=OPENAPI_PATH,
            render_plugins=[JsonRenderPlugin()],
            openapi_router=Router(
                OPENAPI_PATH,
                route_handlers=[],
                opt={"allow": PEOPLE},
                include_in_schema=False,
                after_request=_json_not_found,
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
