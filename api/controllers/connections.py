"""/api/v1/connections: a tenant's connections (README "Connections"), and
/api/v1/connectors: the connection types. Commands go through ConnectionService
(application/connections.py); reads come from the `connections` read model
(projections/connections.py). Configs hold secret references, never credentials."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import principal_of
from api.controllers.common import (
    IfMatch,
    MinPosition,
    TextFilter,
    command_context,
    etag,
    expected_version,
)
from api.controllers.paging import paged, query_error
from api.dependencies import (
    ConnectionQueriesDep,
    ConnectionServiceDep,
    PagingDep,
    ReadYourWritesDep,
)
from api.schemas.connections import (
    ConnectionCreate,
    ConnectionDeletedOut,
    ConnectionPage,
    ConnectionRead,
    ConnectionUpdate,
    ConnectionWritten,
    ConnectorList,
    ConnectorOut,
    PipelineRef,
)
from application.authorization import Permission
from application.errors import NotFound
from application.results import Changed
from domain.connection import Connection
from infrastructure.connectors import CONNECTORS

READ = {"permission": Permission.CONNECTIONS_READ}
WRITE = {"permission": Permission.CONNECTIONS_WRITE}


class ConnectionController(Controller):
    path = "/api/v1/connections"
    tags = ["connections"]

    @post("/", opt=WRITE, summary="Create a connection (credentials as secret references)")
    async def create(
        self, data: JSONBody[ConnectionCreate], request: Request, connections: ConnectionServiceDep
    ) -> Response[ConnectionWritten]:
        result = await connections.create(
            principal_of(request),
            command_context(request),
            name=data.name,
            type_=data.type,
            config=data.config,
            description=data.description,
        )
        headers = {"Location": f"{self.path}/{result.state.name}", "ETag": etag(result.version)}
        return Response(_written(result), status_code=201, headers=headers)

    @get("/", opt=READ, summary="List connections, by name (cursor pagination)")
    async def list_connections(
        self,
        request: Request,
        connection_queries: ConnectionQueriesDep,
        read_your_writes: ReadYourWritesDep,
        paging: PagingDep,
        min_position: MinPosition = None,
        type: TextFilter = None,
    ) -> Response[ConnectionPage]:
        await read_your_writes("connections", min_position)
        try:
            result = await connection_queries.list(
                principal_of(request).tenant_id,
                type_=type,
                limit=paging.limit,
                cursor=paging.cursor,
                page=paging.page,
            )
        except ValueError as error:
            raise query_error(error) from None
        items = await _reads(connection_queries, result.items)
        body = ConnectionPage(items=items, next_cursor=result.next_cursor, has_more=result.has_more)
        return paged(request, body, result, paging)

    @get("/{connection_name:str}", opt=READ, summary="A connection (ETag = version)")
    async def get_connection(
        self,
        connection_name: FromPath[str],
        request: Request,
        connection_queries: ConnectionQueriesDep,
        read_your_writes: ReadYourWritesDep,
        min_position: MinPosition = None,
    ) -> Response[ConnectionRead]:
        await read_your_writes("connections", min_position)
        tenant_id = principal_of(request).tenant_id
        row = (
            None
            if tenant_id is None or "\x00" in connection_name  # no name holds NUL
            else await connection_queries.get(tenant_id, connection_name)
        )
        if row is None:
            raise NotFound("connection", connection_name)
        (read,) = await _reads(connection_queries, [row])
        return Response(read, headers={"ETag": etag(row["version"])})

    @put("/{connection_name:str}", opt=WRITE, summary="Replace the config (If-Match optional)")
    async def update(
        self,
        connection_name: FromPath[str],
        data: JSONBody[ConnectionUpdate],
        request: Request,
        connections: ConnectionServiceDep,
        if_match: IfMatch = None,
    ) -> Response[ConnectionWritten]:
        result = await connections.update(
            principal_of(request),
            connection_name,
            command_context(request),
            config=data.config,
            description=data.description,
            type_=data.type,
            expected_version=expected_version(if_match),
        )
        return Response(_written(result), headers={"ETag": etag(result.version)})

    @delete("/{connection_name:str}", opt=WRITE, status_code=200, summary="Delete a connection")
    async def delete_connection(
        self,
        connection_name: FromPath[str],
        request: Request,
        connections: ConnectionServiceDep,
        force: FromQuery[bool] = False,
        if_match: IfMatch = None,
    ) -> ConnectionDeletedOut:
        """Refused (409, naming them) while pipelines use it, unless force=true."""
        result = await connections.delete(
            principal_of(request),
            connection_name,
            command_context(request),
            force=force,
            expected_version=expected_version(if_match),
        )
        return ConnectionDeletedOut(
            name=connection_name, deleted=True, version=result.version, position=result.position
        )


class ConnectorController(Controller):
    """The connection types: no tenant's data, so readable as the plugin catalog is."""

    path = "/api/v1/connectors"
    tags = ["connections"]
    opt = {"permission": Permission.PLUGINS_READ}

    @get("/", summary="Connection types, their config schemas and the plugins they serve")
    async def list_connectors(self) -> ConnectorList:
        return ConnectorList(
            items=[
                ConnectorOut(
                    type=c.type,
                    description=c.description,
                    serves=list(c.serves),
                    config_schema=c.schema(),
                )
                for c in CONNECTORS.values()
            ]
        )


async def _reads(queries: Any, rows: list[dict[str, Any]]) -> list[ConnectionRead]:
    """Rows with the pipelines using each (scoped to each connection's own tenant)."""
    by_tenant: dict[str, list[str]] = {}
    for row in rows:
        by_tenant.setdefault(row["tenant_id"], []).append(row["name"])
    refs = {
        (tenant, name): found
        for tenant, names in by_tenant.items()
        for name, found in (await queries.referenced_by(tenant, names)).items()
    }
    return [
        ConnectionRead(
            id=row["id"],
            tenant_id=row["tenant_id"],
            name=row["name"],
            type=row["type"],
            config=row["config"],
            description=row["description"],
            referenced_by=[PipelineRef(*ref) for ref in refs[(row["tenant_id"], row["name"])]],
            version=row["version"],
            created_by=row["created_by"],
            updated_by=row["updated_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        for row in rows
    ]


def _written(result: Changed[Connection]) -> ConnectionWritten:
    c = result.state
    return ConnectionWritten(
        id=str(c.id),
        tenant_id=c.tenant_id,
        name=c.name,
        type=c.type,
        config=c.config,
        description=c.description,
        version=result.version,
        position=result.position,
        changed=result.changed,
    )
