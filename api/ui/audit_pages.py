"""The audit trail on the dashboard (/ui/audit): the tenant's events, filtered by
resource, actor, event type and time, newest first, a page at a time by the API's
cursor, each event expandable to its whole payload (redacted as the API shows it).

Reads are the API's own (api/controllers/audit.py): the same parameter declarations
(audit_params.py: lengths, NUL, RFC 3339 times), the same `provide_audit_query`,
`parse_resources`, filter and page query, so a bad filter is the API's 400 and message,
and a principal sees exactly the event kinds its role may read
(`readable_event_kinds`), within its tenant."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.params import FromQuery, Parameter

from api.auth import principal_of
from api.controllers.audit import audit_filter, audit_page
from api.controllers.audit_params import Actor, Time, Types, provide_audit_query
from api.controllers.common import MinPosition
from api.controllers.paging import parameter_error
from api.dependencies import AuditQueriesDep, ReadYourWritesDep
from api.ui.views import page, pretty_json
from application.authorization import Permission, may_read_event, readable_event_kinds
from infrastructure.event_feed import RESOURCE_KINDS, parse_resources
from projections.audit_queries import PROJECTION
from projections.pagination import MAX_LIMIT

READ = {"permission": Permission.EVENTS_READ}  # the permission of GET /api/v1/events
_PAGE_SIZE = 50
_FILTERS = ("resource_type", "resource_id", "actor", "types", "since", "until", "order", "limit")
# The dashboard's page for a resource kind, to link an event to what it is about.
_PAGES = {"pipeline": "pipelines", "run": "runs", "deployment": "deployments", "job": "jobs"}
ResourceType = Annotated[str | None, Parameter(max_length=64)]
ResourceId = Annotated[str | None, Parameter(max_length=64)]
Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT)]  # the API's bounds


class AuditPages(Controller):
    path = "/ui/audit"
    include_in_schema = False

    @get("/", opt=READ)
    async def audit(
        self,
        request: Request,
        audit_queries: AuditQueriesDep,
        read_your_writes: ReadYourWritesDep,
        resource_type: FromQuery[ResourceType] = None,
        resource_id: FromQuery[ResourceId] = None,
        types: FromQuery[Types] = None,
        actor: FromQuery[Actor] = None,
        since: FromQuery[Time] = None,
        until: FromQuery[Time] = None,
        order: FromQuery[Literal["asc", "desc"]] = "desc",
        limit: FromQuery[Limit] = _PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
        min_position: MinPosition = None,
    ) -> Response[Any]:
        await read_your_writes(PROJECTION, min_position)
        principal = principal_of(request)
        # A GET form sends its empty fields as "": empty means "not filtered", as an
        # absent API parameter does. Everything else is read as the API reads it.
        query = provide_audit_query(
            types=types or None,
            actor=actor or None,
            since=since or None,
            until=until or None,
            order=order,
            limit=limit,
            cursor=cursor or None,
        )
        kind, ident = (resource_type or "").strip(), (resource_id or "").strip()
        kinds = readable_event_kinds(principal)
        if kind and kind not in RESOURCE_KINDS:
            message = f"resource_type: a resource is one of {', '.join(RESOURCE_KINDS)}"
            raise parameter_error("resource_type", message)
        resources = _resources(kind, ident)
        events: list[Any] = []
        next_cursor = None
        # A kind alone narrows the kinds the role may read (one it may not: nothing).
        if not kind or ident or may_read_event(kinds, kind):
            if kind and not ident:
                kinds = frozenset({kind})
            wanted = audit_filter(query, principal.tenant_id, kinds, resources)
            body = (await audit_page(request, audit_queries, wanted, query)).content
            events, next_cursor = body.items, body.next_cursor
        shown = {name: request.query_params.get(name, "") for name in _FILTERS}
        shown["order"] = order
        kept = {k: v for k, v in shown.items() if v}
        next_link = None
        if next_cursor:
            next_link = "/ui/audit?" + urlencode({**kept, "cursor": next_cursor})
        return page(
            request,
            "audit.html",
            events=[_shown(e) for e in events],
            filters=shown,
            kinds=RESOURCE_KINDS,
            next_link=next_link,
            first_link=None if cursor is None else "/ui/audit?" + urlencode(kept),
        )


def _resources(kind: str, ident: str) -> tuple[tuple[str, str], ...]:
    """The API's `resources` filter: `kind:id`, or an id alone as any kind's id. Its
    refusals are the API's (parse_resources), named as the API names them."""
    if not ident:
        return ()
    text = f"{kind}:{ident}" if kind else ",".join(f"{k}:{ident}" for k in RESOURCE_KINDS)
    try:
        return parse_resources(text)
    except ValueError as error:
        raise parameter_error("resources", f"resources: {error}") from None


def _shown(event: Any) -> dict[str, Any]:
    """One event as the page shows it: what it is about (linked when the dashboard has
    a page for it) and its payload as indented JSON."""
    kind = event.type.split(".")[1] if event.type.count(".") >= 2 else ""
    target = _PAGES.get(kind)
    return {
        "event": event,
        "kind": kind,
        "link": f"/ui/{target}/{event.subject}" if target else None,
        "payload": pretty_json(event.data),
    }
