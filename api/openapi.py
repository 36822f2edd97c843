"""The API description, made to match what the API does (README "API description").

Litestar describes each route from its handler's signature. What the signature cannot say
is added here, once, from the same facts the API acts on: the error shape and which
errors a route can answer (api/errors.py), who needs credentials (the `public` opt, the
same one authentication skips), the headers every write or every authenticated request
takes (Idempotency-Key, X-Tenant-ID, X-API-Key), closed request bodies, and the
`:action` spelling of a POST sub-resource that NornApp routes (api/app.py)."""

from __future__ import annotations

import copy
import re
import weakref
from collections.abc import Callable
from typing import Any

import msgspec
import swagger_ui_bundle
from litestar import Request, Router
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router

from api.errors import CODE_BY_STATUS

SECURITY_SCHEMES = {
    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
}
CREDENTIALS: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
WRITES = {"post", "put", "patch", "delete"}
EXTRA_CODES = ("RESOURCE_CONFLICT", "QUOTA_EXCEEDED", "INTERNAL_ERROR")
"""Codes api/errors.py gives besides the one per status."""
_ACTION = re.compile(r"^(/api/v1/[a-z-]+/\{[^}/]+\}(?:/[a-z-]+/\{[^}/]+\})?)/([a-z_-]+)$")
_ACTION_SPELLING = {"runs": "run"}  # {id}:run queues a run, the POST of {id}/runs

_WHY = {
    400: "The request cannot be read: not a JSON object, or a bad or unknown parameter.",
    401: "No credentials, or bad ones.",
    403: "The principal's role may not do this.",
    404: "No such resource (also another tenant's), or an unknown X-Tenant-ID.",
    409: "A name already held, a state that forbids the command (RESOURCE_CONFLICT), a "
    "concurrent write that won (VERSION_CONFLICT) or a quota (QUOTA_EXCEEDED).",
    412: "If-Match names a version that is no longer current; the ETag is the current one.",
    413: "The body is too large.",
    422: "A JSON body whose fields are invalid, each named in details.",
    429: "Past the rate limit (or, on login, the failed-login throttle); see Retry-After.",
    503: "PostgreSQL or NATS unreachable, or a read model slower than ?min_position waits.",
}


def error_schemas() -> dict[str, Schema]:
    string, integer = Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.INTEGER)
    detail = Schema(
        type=OpenAPIType.OBJECT,
        required=["field", "message"],
        properties={
            "field": string,
            "message": string,
            "limit": integer,
            "used": integer,
            "current_version": integer,
            "position": Schema(one_of=[integer, Schema(type=OpenAPIType.NULL)]),
        },
    )
    body = Schema(
        type=OpenAPIType.OBJECT,
        required=["code", "message", "details", "request_id"],
        properties={
            "code": Schema(
                type=OpenAPIType.STRING,
                enum=sorted(
                    {
                        *CODE_BY_STATUS.values(),
                        "RESOURCE_CONFLICT",
                        "QUOTA_EXCEEDED",
                        "INTERNAL_ERROR",
                    }
                ),
            ),
            "message": string,
            "details": Schema(type=OpenAPIType.ARRAY, items=detail),
            "request_id": string,
        },
    )
    return {
        "ErrorBody": body,
        "ErrorResponse": Schema(
            type=OpenAPIType.OBJECT,
            required=["error"],
            properties={"error": Reference("#/components/schemas/ErrorBody")},
        ),
    }


def _error(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=_WHY[status],
        content={
            "application/json": OpenAPIMediaType(
                schema=Reference("#/components/schemas/ErrorResponse")
            )
        },
    )


def _header(name: str, description: str, schema: Schema) -> Parameter:
    return Parameter(
        name=name,
        param_in="header",  # type: ignore[arg-type]
        schema=schema,
        description=description,
        required=False,
    )


IDEMPOTENCY_KEY = _header(
    "Idempotency-Key",
    "1-255 visible ASCII characters: a retry with the same key gets the first answer back "
    "(Idempotent-Replayed: true) instead of acting again.",
    Schema(type=OpenAPIType.STRING, pattern="^[!-~]{1,255}$"),
)
TENANT = _header(
    "X-Tenant-ID",
    "Platform admins: act in this tenant (its id). Ignored for a tenant's own principals.",
    Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
)


def _answer_header(description: str, kind: OpenAPIType = OpenAPIType.STRING) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=kind), description=description)


RESPONSE_HEADERS = {"X-Request-ID": _answer_header("This request's id (or the one sent).")}
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": _answer_header("Requests per hour.", OpenAPIType.INTEGER),
    "X-RateLimit-Remaining": _answer_header("Requests allowed now.", OpenAPIType.INTEGER),
    "X-RateLimit-Reset": _answer_header(
        "Seconds until a request is allowed again (0 while one is).", OpenAPIType.INTEGER
    ),
}
RETRY_AFTER = {"Retry-After": _answer_header("Seconds to wait.", OpenAPIType.INTEGER)}
REPLAYED = {
    "Idempotent-Replayed": _answer_header(
        "true when this is the kept answer of an earlier request with the same key."
    )
}
PAGED = {
    "Link": _answer_header('The next page (rel="next"); by number also first, prev and last.'),
    "X-Total-Count": _answer_header("Rows in all (numbered pages only).", OpenAPIType.INTEGER),
}


def _answer_headers(status: str, method: str, public: bool, paged: bool) -> dict[str, Any]:
    """The headers an answer of this status carries (api/app.py, api/rate_limit.py,
    api/idempotency.py, api/controllers/paging.py)."""
    headers: dict[str, Any] = dict(RESPONSE_HEADERS)
    if not public:
        headers |= RATE_LIMIT_HEADERS
    if status in ("429", "503"):
        headers |= RETRY_AFTER
    if status.startswith("2") and method in WRITES and not public:
        headers |= REPLAYED
    if status == "200" and paged:
        headers |= PAGED
    return headers


def _allow_fields(operation: Operation, names: frozenset[str]) -> None:
    """`fields=` (api/query_rules.py): the 200 answer may be a part of the resource."""
    one = "(" + "|".join(sorted(names)) + ")"
    fields = Parameter(
        name="fields",
        param_in="query",  # type: ignore[arg-type]
        schema=Schema(type=OpenAPIType.STRING, pattern=f"^{one}(,{one})*$"),
        description="Comma-separated top-level fields to send (of each item, on a page); "
        "the answer then has only those.",
        required=False,
    )
    operation.parameters = [*(operation.parameters or []), fields]
    ok = (operation.responses or {}).get("200")
    if not isinstance(ok, OpenAPIResponse) or not ok.content:
        return
    media = ok.content.get("application/json")
    if media is None or media.schema is None:
        return
    partial = Schema(
        type=OpenAPIType.OBJECT, description="With fields=: only the fields asked for."
    )
    media.schema = Schema(any_of=[media.schema, partial])


def describe_operation(
    method: str, operation: Operation, public: bool, answers: tuple[int, ...] = ()
) -> None:
    """Make one operation say what the route really answers and takes."""
    parameters = list(operation.parameters or [])
    names = {p.name.lower() for p in parameters if isinstance(p, Parameter)}
    # Every route refuses a query parameter it does not take (api/query_rules.py).
    statuses: set[int] = {400}
    if operation.request_body is not None:
        statuses |= {413, 422}
    if public:
        operation.security = []
        if method in WRITES:  # login and refresh
            statuses |= {401, 429, 503}
    else:
        operation.security = CREDENTIALS
        statuses |= {401, 403, 404, 429, 503}
        if "x-tenant-id" not in names:
            parameters.append(TENANT)
        if method in WRITES:
            statuses |= {400, 409, 422}
            if "idempotency-key" not in names:
                parameters.append(IDEMPOTENCY_KEY)
    if "if-match" in names:
        statuses.add(412)
    statuses |= set(answers)
    operation.parameters = parameters or None
    responses = dict(operation.responses or {})
    for status in sorted(statuses):
        responses[str(status)] = _error(status)
    paged = "cursor" in names
    for status, response in responses.items():
        if isinstance(response, OpenAPIResponse):
            extra = _answer_headers(status, method, public, paged)
            response.headers = {**(response.headers or {}), **extra}
    operation.responses = responses


def _close(schemas: dict[str, Schema], name: str, seen: set[str]) -> None:
    """additionalProperties: false on a request body schema and every object it holds:
    request bodies refuse unknown fields (api/schemas/common.py Request)."""
    if name in seen or name not in schemas:
        return
    seen.add(name)
    stack: list[Any] = [schemas[name]]
    while stack:
        node = stack.pop()
        if isinstance(node, Reference):
            _close(schemas, node.ref.rsplit("/", 1)[-1], seen)
        elif isinstance(node, Schema):
            if node.type == OpenAPIType.OBJECT and node.properties is not None:
                node.additional_properties = False
            stack.extend((node.properties or {}).values())
            stack.extend(node.one_of or [])
            stack.extend(node.any_of or [])
            stack.extend(node.all_of or [])
            if isinstance(node.items, Schema | Reference):
                stack.append(node.items)


def _closed_request_bodies(openapi: OpenAPI, closed: set[str]) -> None:
    schemas = openapi.components.schemas or {}
    seen: set[str] = set()
    for name in closed:
        _close(schemas, name, seen)


def _action_aliases(openapi: OpenAPI) -> None:
    """POST /x/{id}/action is also POST /x/{id}:action (NornApp rewrites it)."""
    paths = openapi.paths or {}
    for path, item in list(paths.items()):
        match = _ACTION.match(path)
        if not match or item.post is None:
            continue
        action = _ACTION_SPELLING.get(match.group(2), match.group(2))
        alias = copy.deepcopy(item.post)
        alias.operation_id = f"{item.post.operation_id or path}Action"
        alias.summary = f"{item.post.summary or ''} (the :{action} spelling)".strip()
        paths[f"{match.group(1)}:{action}"] = PathItem(post=alias, parameters=item.parameters)


def _request_struct_names(route: HTTPRoute) -> set[str]:
    names: set[str] = set()
    for handler, _ in route.route_handler_map.values():
        data = handler.parsed_fn_signature.parameters.get("data")
        if data is None:
            continue
        annotation = data.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
                if candidate.__struct_config__.forbid_unknown_fields:
                    names.add(candidate.__name__)
    return names


_described: weakref.WeakValueDictionary[int, OpenAPI] = weakref.WeakValueDictionary()
"""The descriptions finished already, by id (OpenAPI objects are not hashable)."""


def describe(
    openapi: OpenAPI,
    routes: list[Any],
    selectable_fields: Callable[[Any], frozenset[str] | None] = lambda handler: None,
) -> None:
    """Finish the description Litestar built from the handlers (see the module)."""
    closed: set[str] = set()
    for route in routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = (openapi.paths or {}).get(route.path_format or "/")
        if item is None:
            continue
        closed |= _request_struct_names(route)
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            if isinstance(operation, Operation):
                public, answers = bool(handler.opt.get("public")), handler.opt.get("answers", ())
                describe_operation(method.lower(), operation, public, tuple(answers))
                if (names := selectable_fields(handler)) is not None:
                    _allow_fields(operation, names)
    openapi.components.schemas = {**(openapi.components.schemas or {}), **error_schemas()}
    openapi.components.security_schemes = SECURITY_SCHEMES
    openapi.security = CREDENTIALS
    _closed_request_bodies(openapi, closed)
    _action_aliases(openapi)


async def describe_once(request: Request[Any, Any, Any]) -> None:
    """before_request of the /schema router: Litestar builds the description on the
    first request for it and keeps it; finish it before it is first rendered."""
    openapi = request.app.plugins.get(OpenAPIPlugin).provide_openapi()
    if _described.get(id(openapi)) is not openapi:
        rules = getattr(request.app.state, "query_rules", None)
        describe(openapi, request.app.routes, rules.selectable_fields if rules else lambda h: None)
        _described[id(openapi)] = openapi


DOCS_ASSETS = "/schema/assets"


def docs_assets() -> Router:
    """Swagger UI's files, served under the docs page (mounted in the /schema router)."""
    return create_static_files_router(
        path="/assets",
        directories=[swagger_ui_bundle.swagger_ui_path],
        opt={"public": True},
        include_in_schema=False,
    )
