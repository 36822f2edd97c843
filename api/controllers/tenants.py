"""/api/v1/tenants: platform admins manage tenants (plan, status, quotas); a tenant's own
admin reads its tenant, its usage, and changes its description, labels and namespaces."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import principal_of
from api.controllers.common import (
    IfMatch,
    LabelFilter,
    MinPosition,
    command_context,
    created,
    etag,
    expected_version,
    label_filters,
)
from api.controllers.paging import paged, query_error
from api.controllers.tenant_views import changes_of, from_row, quotas_of, written
from api.dependencies import PagingDep, ReadYourWritesDep, TenantQueriesDep, TenantServiceDep
from api.schemas.tenants import (
    EnvironmentPolicyIn,
    EnvironmentPolicyOut,
    NamespaceIn,
    NamespaceOut,
    QuotasIn,
    QuotaUsageOut,
    TenantCreate,
    TenantPage,
    TenantRead,
    TenantUpdate,
    TenantWritten,
    UsageOut,
)
from application.authorization import Permission, sees_tenant
from application.errors import NotFound
from application.results import Changed
from domain.tenant import EnvironmentPolicy, Tenant

MANAGE = {"permission": Permission.TENANTS_MANAGE}
READ = {"permission": Permission.TENANTS_READ}
UPDATE = {"permission": Permission.TENANTS_UPDATE}


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["tenants"]

    @post("/", opt=MANAGE, summary="Create a tenant")
    async def create(
        self, data: JSONBody[TenantCreate], request: Request, tenants: TenantServiceDep
    ) -> Response[TenantWritten]:
        result = await tenants.create(
            principal_of(request),
            name=data.name,
            description=data.description,
            plan=data.plan,
            labels=data.labels,
            owner=data.owner,
            ctx=command_context(request),
        )
        return created(written(result), f"{self.path}/{result.state.id}")

    @get("/", opt=MANAGE, summary="List tenants (platform admin)")
    async def list_tenants(
        self,
        request: Request,
        tenant_queries: TenantQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        status: FromQuery[str | None] = None,
        label: LabelFilter = None,
        min_position: MinPosition = None,
    ) -> Response[TenantPage]:
        await read_your_writes("tenants", min_position)
        try:
            result = await tenant_queries.list(
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
                status=status,
                labels=label_filters(label),
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [from_row(r) for r in result.items]
        body = TenantPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{tenant_id:uuid}", opt=READ, summary="Get a tenant (ETag = version)")
    async def get_tenant(
        self,
        tenant_id: FromPath[UUID],
        request: Request,
        tenant_queries: TenantQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[TenantRead]:
        if not sees_tenant(principal_of(request), str(tenant_id)):
            raise NotFound("tenant", tenant_id)
        await read_your_writes("tenants", min_position)
        row = await tenant_queries.get(tenant_id)
        if row is None:
            raise NotFound("tenant", tenant_id)
        return Response(from_row(row), headers={"ETag": etag(row["version"])})

    @put("/{tenant_id:uuid}", opt=UPDATE, summary="Change a tenant (fields given only)")
    async def update(
        self,
        tenant_id: FromPath[UUID],
        data: JSONBody[TenantUpdate],
        request: Request,
        tenants: TenantServiceDep,
        if_match: IfMatch = None,
    ) -> Response[TenantWritten]:
        result = await tenants.update(
            principal_of(request),
            tenant_id,
            changes_of(data),
            command_context(request),
            expected_version(if_match),
        )
        return _with_etag(result)

    @delete(
        "/{tenant_id:uuid}",
        opt=MANAGE,
        status_code=200,
        summary="Delete a tenant (soft: its users and keys stop working, its events stay)",
    )
    async def delete_tenant(
        self,
        tenant_id: FromPath[UUID],
        request: Request,
        tenants: TenantServiceDep,
        if_match: IfMatch = None,
    ) -> TenantWritten:
        result = await tenants.delete(
            principal_of(request), tenant_id, command_context(request), expected_version(if_match)
        )
        return written(result)

    @post("/{tenant_id:uuid}/namespaces", opt=UPDATE, summary="Add a namespace")
    async def add_namespace(
        self,
        tenant_id: FromPath[UUID],
        data: JSONBody[NamespaceIn],
        request: Request,
        tenants: TenantServiceDep,
        if_match: IfMatch = None,
    ) -> Response[TenantWritten]:
        result = await tenants.add_namespace(
            principal_of(request),
            tenant_id,
            data.namespace,
            command_context(request),
            expected_version(if_match),
        )
        response = created(written(result), f"{self.path}/{tenant_id}/namespaces/{data.namespace}")
        response.headers["ETag"] = etag(result.version)
        return response

    @put(
        "/{tenant_id:uuid}/environments/{environment:str}",
        opt=UPDATE,
        summary="Set what deployments to an environment require",
    )
    async def set_environment_policy(
        self,
        tenant_id: FromPath[UUID],
        environment: FromPath[str],
        data: JSONBody[EnvironmentPolicyIn],
        request: Request,
        tenants: TenantServiceDep,
        if_match: IfMatch = None,
    ) -> Response[EnvironmentPolicyOut]:
        policy = EnvironmentPolicy(
            protected=data.protected, require_verification=data.require_verification
        )
        result = await tenants.set_environment_policy(
            principal_of(request),
            tenant_id,
            environment,
            policy,
            command_context(request),
            expected_version(if_match),
        )
        body = EnvironmentPolicyOut(
            tenant_id=result.state.tenant_id,
            environment=environment,
            protected=policy.protected,
            require_verification=policy.require_verification,
            version=result.version,
            position=result.position,
        )
        return Response(body, headers={"ETag": etag(result.version)})

    @get(
        "/{tenant_id:uuid}/namespaces/{namespace:str}",
        opt=READ,
        summary="A namespace and what it holds",
    )
    async def get_namespace(
        self,
        tenant_id: FromPath[UUID],
        namespace: FromPath[str],
        request: Request,
        tenants: TenantServiceDep,
    ) -> NamespaceOut:
        tenant, pipelines = await tenants.namespace(principal_of(request), tenant_id, namespace)
        return NamespaceOut(tenant.tenant_id, namespace, pipelines)

    @delete(
        "/{tenant_id:uuid}/namespaces/{namespace:str}",
        opt=UPDATE,
        status_code=200,
        summary="Remove an empty namespace",
    )
    async def remove_namespace(
        self,
        tenant_id: FromPath[UUID],
        namespace: FromPath[str],
        request: Request,
        tenants: TenantServiceDep,
        if_match: IfMatch = None,
    ) -> Response[TenantWritten]:
        result = await tenants.remove_namespace(
            principal_of(request),
            tenant_id,
            namespace,
            command_context(request),
            expected_version(if_match),
        )
        return _with_etag(result)

    @put("/{tenant_id:uuid}/quotas", opt=MANAGE, summary="Override the plan's quotas")
    async def set_quotas(
        self,
        tenant_id: FromPath[UUID],
        data: JSONBody[QuotasIn],
        request: Request,
        tenants: TenantServiceDep,
        if_match: IfMatch = None,
    ) -> Response[TenantWritten]:
        result = await tenants.set_quotas(
            principal_of(request),
            tenant_id,
            quotas_of(data),
            command_context(request),
            expected_version(if_match),
        )
        return _with_etag(result)

    @get("/{tenant_id:uuid}/usage", opt=READ, summary="Each quota's limit and current usage")
    async def usage(
        self,
        tenant_id: FromPath[UUID],
        request: Request,
        tenants: TenantServiceDep,
    ) -> UsageOut:
        tenant, usage = await tenants.usage(principal_of(request), tenant_id)
        return UsageOut(
            tenant_id=tenant.tenant_id,
            plan=tenant.plan,
            quotas={name: QuotaUsageOut(u.limit, u.used) for name, u in usage.items()},
        )


def _with_etag(result: Changed[Tenant]) -> Response[TenantWritten]:
    return Response(written(result), headers={"ETag": etag(result.version)})
