"""/api/v1/api-keys: credentials for machines, scoped to the caller's tenant. The key is
in the create response only; lists and gets show metadata."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, JSONBody

from api.auth import principal_of
from api.controllers.common import MinPosition, body_time, command_context, etag
from api.controllers.paging import paged, query_error
from api.dependencies import ApiKeyQueriesDep, ApiKeyServiceDep, PagingDep, ReadYourWritesDep
from api.schemas.api_keys import ApiKeyCreate, ApiKeyIssued, ApiKeyPage, ApiKeyRead
from application.api_keys import IssuedKey
from application.authorization import Permission, require_tenant
from application.errors import NotFound

READ = {"permission": Permission.API_KEYS_READ}
# The create response carries the plaintext key: the Idempotency-Key middleware must not
# keep it (it stores 2xx bodies), so that route refuses an Idempotency-Key.
CREATE = {"permission": Permission.API_KEYS_WRITE, "idempotency": "refuse"}
REVOKE = {"permission": Permission.API_KEYS_WRITE}


def _issued(issued: IssuedKey) -> ApiKeyIssued:
    k = issued.state
    return ApiKeyIssued(
        id=str(k.id),
        tenant_id=k.tenant_id,
        name=k.name,
        prefix=k.prefix,
        roles=list(k.roles),
        created_at=k.created_on,
        created_by=k.created_by,
        last_used_at=None,
        expires_at=k.expires_at,
        revoked=k.revoked,
        revoked_at=None,
        key=issued.key,
        version=issued.version,
        position=issued.position,
    )


def _read(row: dict[str, Any]) -> ApiKeyRead:
    return ApiKeyRead(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        prefix=row["prefix"],
        roles=list(row["roles"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        revoked=row["revoked"],
        revoked_at=row["revoked_at"],
    )


class ApiKeyController(Controller):
    path = "/api/v1/api-keys"
    tags = ["api-keys"]

    @post("/", opt=CREATE, summary="Create an API key (the key is shown once)")
    async def create(
        self, data: JSONBody[ApiKeyCreate], request: Request, api_keys: ApiKeyServiceDep
    ) -> Response[ApiKeyIssued]:
        issued = await api_keys.create(
            principal_of(request),
            name=data.name,
            roles=tuple(data.roles),
            expires_at=body_time(data.expires_at, "expires_at"),
            ctx=command_context(request),
        )
        # Cache-Control: the body is a secret, keep it out of every cache.
        headers = {"Location": f"{self.path}/{issued.state.id}", "Cache-Control": "no-store"}
        return Response(_issued(issued), status_code=201, headers=headers)

    @get("/", opt=READ, summary="List the tenant's API keys (metadata only)")
    async def list_keys(
        self,
        request: Request,
        api_key_queries: ApiKeyQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        min_position: MinPosition = None,
    ) -> Response[ApiKeyPage]:
        tenant_id = require_tenant(principal_of(request))
        await read_your_writes("api_keys", min_position)
        try:
            result = await api_key_queries.list(
                tenant_id, limit=paging.limit, cursor=paging.cursor, page=paging.page
            )
        except ValueError as error:
            raise query_error(error) from None
        items = [_read(r) for r in result.items]
        body = ApiKeyPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{key_id:uuid}", opt=READ, summary="Get an API key's metadata (ETag = version)")
    async def get_key(
        self,
        key_id: FromPath[UUID],
        request: Request,
        api_key_queries: ApiKeyQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[ApiKeyRead]:
        tenant_id = require_tenant(principal_of(request))
        await read_your_writes("api_keys", min_position)
        row = await api_key_queries.get(tenant_id, key_id)
        if row is None:
            raise NotFound("api key", key_id)
        return Response(_read(row), headers={"ETag": etag(row["version"])})

    @delete("/{key_id:uuid}", opt=REVOKE, summary="Revoke an API key, effective at once")
    async def revoke(
        self, key_id: FromPath[UUID], request: Request, api_keys: ApiKeyServiceDep
    ) -> None:
        await api_keys.revoke(principal_of(request), key_id, command_context(request))
