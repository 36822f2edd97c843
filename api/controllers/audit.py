"""The audit trail over HTTP (README "Audit trail"), read from the `audit_log` read model
(projections/audit_queries.py): GET /api/v1/events, the caller's tenant's events (a
platform admin outside any tenant: every tenant's), and /api/v1/{resource}/{id}/events,
one resource's. A principal sees exactly the events its role may read elsewhere
(application/authorization.py `readable_event_kinds`), as in the live feed."""

from __future__ import annotations

from uuid import UUID

import msgspec
from eventsourcing.persistence import Notification
from litestar import Controller, Request, Response, get
from litestar.params import FromPath, FromQuery

from api.auth import principal_of
from api.controllers.audit_params import AuditQuery
from api.controllers.common import MinPosition
from api.controllers.paging import Paging, paged, parameter_error, query_error
from api.dependencies import AuditQueriesDep, AuditQueryDep, ReadYourWritesDep
from api.schemas.events import AuditEvent, AuditPage
from application.authorization import Permission, readable_event_kinds, sees, sees_tenant
from application.errors import NotFound
from application.principal import Principal
from infrastructure import envelope
from infrastructure.envelope import CloudEvent
from infrastructure.event_feed import parse_resources, parse_types
from projections.audit_queries import PROJECTION, AuditFilter, AuditQueries


def request_id_of(event: CloudEvent) -> str | None:
    """The X-Request-ID of the request that caused the event, where the store holds it:
    the causationid of an event a request caused without an Idempotency-Key
    (api/controllers/common.py `command_context`). What Norn does by itself carries
    other causes (a run's id, a scheduled fire), and a keyed request a digest."""
    cause = event.causationid
    if cause is None or event.actor.startswith("system:") or cause.startswith("idempotent:"):
        return None
    return cause


def audit_event(notification: Notification) -> AuditEvent:
    event = envelope.to_cloud_event(notification)
    return AuditEvent(**msgspec.structs.asdict(event), requestid=request_id_of(event))


def audit_filter(
    query: AuditQuery,
    tenant: str | None,
    kinds: frozenset[str],
    resources: tuple[tuple[str, str], ...],
    only_tenant: str | None = None,
) -> AuditFilter:
    return AuditFilter(
        tenant=tenant,
        kinds=kinds,
        only_tenant=only_tenant,
        types=parse_types(query.types),
        resources=resources,
        actor=query.actor,
        since=query.since,
        until=query.until,
        after=query.after,
        before=query.before,
    )


async def audit_page(
    request: Request, queries: AuditQueries, wanted: AuditFilter, query: AuditQuery
) -> Response[AuditPage]:
    try:
        result = await queries.list(
            wanted, limit=query.limit, cursor=query.cursor, order=query.order
        )
    except ValueError as error:
        if str(error).startswith("types:"):
            raise parameter_error("types", str(error)) from None
        raise query_error(error) from None
    items = [audit_event(n) for n in result.items]
    body = AuditPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
    return paged(request, body, result, Paging(query.limit, query.cursor))  # type: ignore[arg-type]


class AuditController(Controller):
    path = "/api/v1/events"
    tags = ["events"]

    @get(
        "/",
        opt={"permission": Permission.EVENTS_READ},
        summary="The audit trail: your tenant's events, filtered, in position order",
    )
    async def list_events(
        self,
        request: Request,
        audit_queries: AuditQueriesDep,
        audit_query: AuditQueryDep,
        read_your_writes: ReadYourWritesDep,
        resources: FromQuery[str | None] = None,
        tenant: FromQuery[UUID | None] = None,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        await read_your_writes(PROJECTION, min_position)
        principal = principal_of(request)
        try:
            wanted_resources = parse_resources(resources)
        except ValueError as error:
            raise parameter_error("resources", f"resources: {error}") from None
        wanted = audit_filter(
            audit_query,
            principal.tenant_id,
            readable_event_kinds(principal),
            wanted_resources,
            only_tenant=None if tenant is None else str(tenant),
        )
        return await audit_page(request, audit_queries, wanted, audit_query)


async def _resource_events(
    request: Request,
    queries: AuditQueries,
    query: AuditQuery,
    kind: str,
    resource_id: UUID,
) -> Response[AuditPage]:
    """One resource's events, if the caller sees the resource (by the tenant its events
    belong to, the rule a GET of it follows): else 404, as for a missing one. A deleted
    resource's events stay readable, as its /history does."""
    principal = principal_of(request)
    found, owner = await queries.owner(kind, resource_id)
    if not found or not _sees(principal, kind, owner, resource_id):
        raise NotFound(kind, resource_id)
    # Scoped to the owner's tenant (a platform admin acting in another tenant may read
    # a tenant's own events: it sees every tenant).
    resources = ((kind, str(resource_id)),)
    wanted = audit_filter(query, owner, readable_event_kinds(principal), resources)
    return await audit_page(request, queries, wanted, query)


def _sees(principal: Principal, kind: str, owner: str | None, resource_id: UUID) -> bool:
    if kind == "tenant":
        return sees_tenant(principal, str(resource_id))
    return sees(principal, owner)


class ResourceEventsController(Controller):
    path = "/api/v1"
    tags = ["events"]

    @get(
        "/pipelines/{pipeline_id:uuid}/events",
        opt={"permission": Permission.PIPELINES_READ},
        summary="A pipeline's events (audit trail), in position order",
    )
    async def pipeline_events(
        self,
        pipeline_id: FromPath[UUID],
        request: Request,
        audit_queries: AuditQueriesDep,
        audit_query: AuditQueryDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        await read_your_writes(PROJECTION, min_position)
        return await _resource_events(request, audit_queries, audit_query, "pipeline", pipeline_id)

    @get(
        "/runs/{run_id:uuid}/events",
        opt={"permission": Permission.RUNS_READ},
        summary="A run's events (audit trail), in position order",
    )
    async def run_events(
        self,
        run_id: FromPath[UUID],
        request: Request,
        audit_queries: AuditQueriesDep,
        audit_query: AuditQueryDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        await read_your_writes(PROJECTION, min_position)
        return await _resource_events(request, audit_queries, audit_query, "run", run_id)

    @get(
        "/deployments/{deployment_id:uuid}/events",
        opt={"permission": Permission.DEPLOYMENTS_READ},
        summary="A deployment's events (audit trail), in position order",
    )
    async def deployment_events(
        self,
        deployment_id: FromPath[UUID],
        request: Request,
        audit_queries: AuditQueriesDep,
        audit_query: AuditQueryDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        await read_your_writes(PROJECTION, min_position)
        return await _resource_events(
            request, audit_queries, audit_query, "deployment", deployment_id
        )

    @get(
        "/tenants/{tenant_id:uuid}/events",
        opt={"permission": Permission.TENANTS_READ},
        summary="A tenant's own events (its settings, quotas, status), in position order",
    )
    async def tenant_events(
        self,
        tenant_id: FromPath[UUID],
        request: Request,
        audit_queries: AuditQueriesDep,
        audit_query: AuditQueryDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        await read_your_writes(PROJECTION, min_position)
        return await _resource_events(request, audit_queries, audit_query, "tenant", tenant_id)

    @get(
        "/users/{user_id:uuid}/events",
        opt={"permission": Permission.USERS_READ},
        summary="A user's events (audit trail), in position order",
    )
    async def user_events(
        self,
        user_id: FromPath[UUID],
        request: Request,
        audit_queries: AuditQueriesDep,
        audit_query: AuditQueryDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        await read_your_writes(PROJECTION, min_position)
        return await _resource_events(request, audit_queries, audit_query, "user", user_id)

    @get(
        "/scheduler/jobs/{job_id:uuid}/events",
        opt={"permission": Permission.JOBS_READ},
        summary="A scheduled job's events (audit trail), in position order",
    )
    async def job_events(
        self,
        job_id: FromPath[UUID],
        request: Request,
        audit_queries: AuditQueriesDep,
        audit_query: AuditQueryDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[AuditPage]:
        await read_your_writes(PROJECTION, min_position)
        return await _resource_events(request, audit_queries, audit_query, "job", job_id)
