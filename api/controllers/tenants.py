"""/api/v1/tenants: platform admins manage tenants; a tenant's own admin reads its own."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from api.auth import principal_of
from api.controllers.common import ContainerDep, command_context, created, read_your_writes
from api.schemas.identity import (
    TenantCreate,
    TenantPage,
    TenantRead,
    TenantWritten,
)
from application.authorization import Permission
from application.errors import NotFound


def _tenant_read(row: dict[str, Any]) -> TenantRead:
    return TenantRead(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        plan=row["plan"],
        status=row["status"],
        labels=dict(row["labels"] or {}),
        created_at=row["created_at"],
    )


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["tenants"]

    @post("/", opt={"permission": Permission.TENANTS_MANAGE}, summary="Create a tenant")
    async def create(
        self, data: JSONBody[TenantCreate], request: Request, container: ContainerDep
    ) -> Response[TenantWritten]:
        tenant, position = await asyncio.to_thread(
            lambda: container.identity.create_tenant(
                principal_of(request),
                name=data.name,
                description=data.description,
                plan=data.plan,
                labels=data.labels,
                ctx=command_context(request),
            )
        )
        body = TenantWritten(
            id=str(tenant.id),
            name=tenant.name,
            description=tenant.description,
            plan=tenant.plan,
            status=tenant.status,
            labels=tenant.labels,
            created_at=tenant.created_on,
            version=tenant.version,
            position=position,
        )
        return created(body, f"{self.path}/{tenant.id}")

    @get(
        "/", opt={"permission": Permission.TENANTS_MANAGE}, summary="List tenants (platform admin)"
    )
    async def list_tenants(
        self,
        container: ContainerDep,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        min_position: Annotated[int | None, Parameter(ge=0)] = None,
    ) -> TenantPage:
        await read_your_writes(container, "tenants", min_position)
        try:
            rows, next_cursor = await container.tenant_queries.list(limit=limit, cursor=cursor)
        except ValueError as error:
            raise ValidationException(str(error)) from None
        return TenantPage(items=[_tenant_read(r) for r in rows], next_cursor=next_cursor)

    @get("/{tenant_id:uuid}", opt={"permission": Permission.TENANTS_READ}, summary="Get a tenant")
    async def get_tenant(
        self,
        tenant_id: FromPath[UUID],
        request: Request,
        container: ContainerDep,
        min_position: Annotated[int | None, Parameter(ge=0)] = None,
    ) -> TenantRead:
        principal = principal_of(request)
        if not principal.is_platform_admin and principal.tenant_id != str(tenant_id):
            raise NotFound("tenant", tenant_id)
        await read_your_writes(container, "tenants", min_position)
        row = await container.tenant_queries.get(tenant_id)
        if row is None:
            raise NotFound("tenant", tenant_id)
        return _tenant_read(row)
