"""/api/v1/secrets: a tenant's secrets (README "Secrets"). Commands go through
SecretService (application/secrets.py); reads come from the `secrets` read model
(projections/secrets.py). Write-only values: a value is taken in a request body and
answered by no route (metadata only)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import principal_of
from api.controllers.common import IfMatch, MinPosition, command_context, etag, expected_version
from api.controllers.paging import paged, query_error
from api.dependencies import PagingDep, ReadYourWritesDep, SecretQueriesDep, SecretServiceDep
from api.schemas.secrets import (
    PipelineRef,
    SecretCreate,
    SecretDeletedOut,
    SecretPage,
    SecretPut,
    SecretRead,
    SecretWritten,
)
from application.authorization import Permission
from application.errors import NotFound
from application.results import Changed
from domain.secret import Secret

READ = {"permission": Permission.SECRETS_READ}
WRITE = {"permission": Permission.SECRETS_WRITE}
# The answer holds no value, but an Idempotency-Key would: the key's request fingerprint
# (kept, and in the events' causation id) is a plain SHA-256 of a body holding the value,
# which a low-entropy value can be guessed back from. So writes with a value refuse it.
WRITE_VALUE = {
    **WRITE,
    "idempotency": "refuse",
    "idempotency_reason": "its request holds a secret value, of which nothing may be kept",
}


class SecretController(Controller):
    path = "/api/v1/secrets"
    tags = ["secrets"]

    @post("/", opt=WRITE_VALUE, summary="Create a secret (the value is never answered)")
    async def create(
        self, data: JSONBody[SecretCreate], request: Request, secrets: SecretServiceDep
    ) -> Response[SecretWritten]:
        result = await secrets.create(
            principal_of(request),
            command_context(request),
            name=data.name,
            value=data.value,
            description=data.description,
            allowed_hosts=tuple(data.allowed_hosts),
            namespaces=tuple(data.namespaces),
        )
        headers = {"Location": f"{self.path}/{result.state.name}", "ETag": etag(result.version)}
        return Response(_written(result), status_code=201, headers=headers)

    @get("/", opt=READ, summary="List secrets' metadata, by name (cursor pagination)")
    async def list_secrets(
        self,
        request: Request,
        secret_queries: SecretQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        min_position: MinPosition = None,
    ) -> Response[SecretPage]:
        await read_your_writes("secrets", min_position)
        try:
            result = await secret_queries.list(
                principal_of(request).tenant_id,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = await _reads(secret_queries, result.items)
        body = SecretPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{secret_name:str}", opt=READ, summary="A secret's metadata (ETag = version)")
    async def get_secret(
        self,
        secret_name: FromPath[str],
        request: Request,
        secret_queries: SecretQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[SecretRead]:
        await read_your_writes("secrets", min_position)
        tenant_id = principal_of(request).tenant_id
        row = (
            None
            if tenant_id is None or "\x00" in secret_name  # no name holds NUL
            else await secret_queries.get(tenant_id, secret_name)
        )
        if row is None:
            raise NotFound("secret", secret_name)
        (read,) = await _reads(secret_queries, [row])
        return Response(read, headers={"ETag": etag(row["version"])})

    @put("/{secret_name:str}", opt=WRITE_VALUE, summary="A new value version (If-Match optional)")
    async def put_version(
        self,
        secret_name: FromPath[str],
        data: JSONBody[SecretPut],
        request: Request,
        secrets: SecretServiceDep,
        if_match: IfMatch = None,
    ) -> Response[SecretWritten]:
        result = await secrets.put_version(
            principal_of(request),
            secret_name,
            command_context(request),
            value=data.value,
            description=data.description,
            allowed_hosts=None if data.allowed_hosts is None else tuple(data.allowed_hosts),
            namespaces=None if data.namespaces is None else tuple(data.namespaces),
            expected_version=expected_version(if_match),
        )
        return Response(_written(result), headers={"ETag": etag(result.version)})

    @delete("/{secret_name:str}", opt=WRITE, status_code=200, summary="Delete (crypto-shred)")
    async def delete_secret(
        self,
        secret_name: FromPath[str],
        request: Request,
        secrets: SecretServiceDep,
        force: FromQuery[bool] = False,
        if_match: IfMatch = None,
    ) -> SecretDeletedOut:
        """Refused (409, naming them) while pipelines reference it, unless force=true."""
        result = await secrets.delete(
            principal_of(request),
            secret_name,
            command_context(request),
            force=force,
            expected_version=expected_version(if_match),
        )
        return SecretDeletedOut(
            name=secret_name, deleted=True, version=result.version, position=result.position
        )


async def _reads(queries: Any, rows: list[dict[str, Any]]) -> list[SecretRead]:
    """Rows with the pipelines referencing each (scoped to each secret's own tenant)."""
    by_tenant: dict[str, list[str]] = {}
    for row in rows:
        by_tenant.setdefault(row["tenant_id"], []).append(row["name"])
    refs = {
        (tenant, name): found
        for tenant, names in by_tenant.items()
        for name, found in (await queries.referenced_by(tenant, names)).items()
    }
    return [
        SecretRead(
            id=row["id"],
            tenant_id=row["tenant_id"],
            name=row["name"],
            description=row["description"],
            allowed_hosts=list(row["allowed_hosts"]),
            namespaces=list(row["namespaces"]),
            value_version=row["value_version"],
            referenced_by=[PipelineRef(*ref) for ref in refs[(row["tenant_id"], row["name"])]],
            version=row["version"],
            created_by=row["created_by"],
            updated_by=row["updated_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        for row in rows
    ]


def _written(result: Changed[Secret]) -> SecretWritten:
    s = result.state
    return SecretWritten(
        id=str(s.id),
        tenant_id=s.tenant_id,
        name=s.name,
        description=s.description,
        allowed_hosts=list(s.allowed_hosts),
        namespaces=list(s.namespaces),
        value_version=s.value_version,
        version=result.version,
        position=result.position,
        changed=result.changed,
    )
