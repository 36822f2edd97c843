"""Rules every route's query string follows (README "Query parameters"):

- A parameter the route does not declare is refused with 400, naming it, instead of
  being ignored: `?offset=100` on a cursor-paginated list must not silently answer the
  first page.
- `?fields=a,b` on a GET that answers one object (or a page of them) keeps only those
  top-level fields (of each item, on a page); a field the response does not have is a
  400. The handler still builds the whole response: `fields` saves bytes on the wire,
  not work on the server.

The declared parameters come from litestar's own signature models of each handler
(dependencies' parameters included), read once when the app starts."""

from __future__ import annotations

import contextvars
import re
import typing
from typing import Any
from uuid import UUID

import msgspec
from litestar import Litestar, Request, Response
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

FIELDS = "fields"
DOCS_PATH = "/schema"

_selected: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "norn_fields", default=None
)


class _RouteQuery(msgspec.Struct, frozen=True):
    declared: frozenset[str]
    selectable: frozenset[str] | None
    """Top-level fields `fields=` may select (of each item, on a page); None: no `fields`."""
    paged: bool


def _response_struct(handler: HTTPRouteHandler) -> type[msgspec.Struct] | None:
    annotation = handler.parsed_fn_signature.return_type.annotation
    if typing.get_origin(annotation) is Response:
        (annotation,) = typing.get_args(annotation) or (None,)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    return None


def _describe(handler: HTTPRouteHandler, declared: frozenset[str]) -> _RouteQuery:
    struct = _response_struct(handler) if "GET" in handler.http_methods else None
    if struct is None:
        return _RouteQuery(declared, None, False)
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    items = fields.get("items")
    if items is not None:
        (item_type,) = typing.get_args(items.type) or (None,)
        if isinstance(item_type, type) and issubclass(item_type, msgspec.Struct):
            names = frozenset(f.encode_name for f in msgspec.structs.fields(item_type))
            return _RouteQuery(declared, names, True)
    return _RouteQuery(declared, frozenset(fields), False)


class _TypedPath(msgspec.Struct, frozen=True):
    pattern: re.Pattern[str]
    parsers: dict[str, Any]


class QueryRules:
    """The app's before/after-request hooks: checks each request's query parameters
    before its handler runs and applies `fields=` to what it returns. `install` reads
    the app's routes once it is built."""

    def __init__(self) -> None:
        self._routes: dict[int, _RouteQuery] = {}
        self._typed_paths: list[_TypedPath] = []

    def install(self, app: Litestar) -> None:
        for route in app.routes:
            if not isinstance(route, HTTPRoute):
                continue
            if route.path.startswith(DOCS_PATH):
                continue  # the OpenAPI document and its viewers: litestar's own routes
            self._typed_paths.extend(_typed_path(route))
            for handler, kwargs_model in route.route_handler_map.values():
                declared = frozenset(p.field_alias for p in kwargs_model.expected_query_params)
                self._routes[id(handler)] = _describe(handler, declared)

    def selectable_fields(self, handler: Any) -> frozenset[str] | None:
        """The fields `fields=` may name on this handler's answers (api/openapi.py), or
        None where it does not apply."""
        route = self._routes.get(id(handler))
        return route.selectable if route is not None else None

    def malformed_path_parameter(self, path: str) -> tuple[str, str] | None:
        """(name, type) of a path parameter that made routing miss, e.g. `not-a-uuid` for
        {pipeline_id:uuid}: a 400 for a bad parameter, where Litestar would answer 404."""
        for typed in self._typed_paths:
            match = typed.pattern.fullmatch(path)
            if match is None:
                continue
            for name, parser in typed.parsers.items():
                try:
                    parser(match[name])
                except (TypeError, ValueError):
                    return name, parser.__name__
        return None

    async def before_request(self, request: Request[Any, Any, Any]) -> None:
        route = self._routes.get(id(request.route_handler))
        if route is None:
            return
        names = set(request.query_params.keys())
        unknown = sorted(names - route.declared - ({FIELDS} if route.selectable else set()))
        if unknown:
            raise ValidationException(
                f"unknown query parameter(s): {', '.join(unknown)}",
                extra=[
                    {"message": "not a parameter of this route", "key": name, "source": "query"}
                    for name in unknown
                ],
            )
        _selected.set(None)
        if FIELDS in names and route.selectable is not None:
            _selected.set(_parse_fields(request.query_params.getall(FIELDS), route.selectable))

    async def after_request(self, response: Response[Any]) -> Response[Any]:
        wanted = _selected.get()
        if wanted is None or (response.status_code or 200) >= 300:
            return response
        body = msgspec.to_builtins(response.content)
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            body["items"] = [_select(item, wanted) for item in body["items"]]
        elif isinstance(body, dict):
            body = _select(body, wanted)
        response.content = body
        return response


def _typed_path(route: HTTPRoute) -> list[_TypedPath]:
    typed = {p.name: p.type for p in route.path_parameters.values() if p.type in (UUID, int)}
    if not typed:
        return []
    parts = re.split(r"\{([a-z_]+)\}", route.path_format)
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return [_TypedPath(re.compile(pattern), typed)]


def _parse_fields(values: list[str], selectable: frozenset[str]) -> frozenset[str]:
    names = {name.strip() for value in values for name in value.split(",") if name.strip()}
    if not names:
        raise _fields_error("fields needs at least one field name, e.g. fields=id,name")
    unknown = sorted(names - selectable)
    if unknown:
        raise _fields_error(
            f"unknown field(s) {', '.join(unknown)}; this route has {', '.join(sorted(selectable))}"
        )
    return frozenset(names)


def _fields_error(message: str) -> ValidationException:
    return ValidationException(
        message, extra=[{"message": message, "key": FIELDS, "source": "query"}]
    )


def _select(item: Any, wanted: frozenset[str]) -> Any:
    if not isinstance(item, dict):
        return item
    return {key: value for key, value in item.items() if key in wanted}
