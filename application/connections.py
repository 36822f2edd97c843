"""Connection use cases (README "Connections"): create, update (If-Match), delete
(refused while pipelines reference it, unless forced), and `config_of`, which step
validation and the executor call to fill in what a step's config leaves out.

A config is checked by its type (application/ports.py `ConnectionChecker`: the schema,
credentials only as secret references, references only where accepted), and every
secret it references must exist in the connection's own tenant, at the version it
pins: a reference is looked up by (tenant, name), so a name of another tenant's secret
is simply not found. Nothing is stored unless all of that holds, so no event holds a
plain credential.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from application.authorization import sees
from application.commands import Aggregates
from application.errors import NotFound
from application.event_store import NornEventStore
from application.idempotency import earlier_change, earlier_creation
from application.ports import ConnectionChecker, ConnectionReference, ConnectionReferences
from application.principal import Principal
from application.results import Changed
from application.tenants import writable_tenant
from domain.connection import (
    Connection,
    ConnectionConfig,
    InvalidConnection,
    check_fields,
    check_name,
    connection_id,
)
from domain.errors import Conflict, FieldError, InvalidCommand, NameTaken
from domain.events import CommandContext
from domain.secret import Secret, secret_id


class ConnectionReferenced(Conflict):
    """A delete refused while pipelines reference the connection (?force=true deletes)."""

    def __init__(self, name: str, references: list[ConnectionReference]) -> None:
        self.references = references
        names = ", ".join(sorted(r.pipeline_name for r in references))
        super().__init__(
            f"connection {name!r} is used by pipeline(s) {names}; delete with force=true"
            " to delete it anyway",
            "name",
        )


def connection_config(store: NornEventStore, tenant_id: str, name: str) -> ConnectionConfig | None:
    """The tenant's live connection called `name` (type and config, secret references
    unresolved), or None: what step validation and the executor merge under a step."""
    try:
        check_name(name)
    except InvalidCommand:
        return None
    connection = store.find(Connection, connection_id(tenant_id, name))
    return None if connection is None else connection.live_config


class ConnectionService:
    def __init__(
        self,
        store: NornEventStore,
        check: ConnectionChecker,
        references: ConnectionReferences,
    ) -> None:
        self._store = store
        self._check = check
        self._references = references
        self._connections = Aggregates(
            store,
            Connection,
            "connection",
            scope=lambda principal, connection: sees(principal, connection.tenant_id),
            gone=lambda connection: connection.deleted,
        )

    def load(self, principal: Principal, name: str) -> Connection:
        """The connection by name in the principal's tenant; NotFound otherwise."""
        return self._connections.load(principal, self._id(principal, name))

    def create(
        self,
        principal: Principal,
        ctx: CommandContext,
        *,
        name: str,
        type_: str,
        config: dict[str, Any],
        description: str = "",
    ) -> Changed[Connection]:
        """A new connection, or the name of a deleted one taken again."""
        tenant = writable_tenant(self._store, principal)
        check_name(name)
        check_fields(type_, config, description)
        aggregate_id = connection_id(tenant.tenant_id, name)
        existing = self._store.find(Connection, aggregate_id)
        # An earlier attempt of this idempotent request made it (or took the name again).
        earlier = earlier_creation(self._store, Connection, aggregate_id, ctx)
        if earlier is None and existing is not None:
            earlier = earlier_change(self._store, Connection, existing, ctx)
        if earlier is not None:
            return earlier
        if existing is not None and not existing.deleted:
            raise NameTaken("connection", name, str(existing.id))
        self._validate(tenant.tenant_id, type_, config)
        if existing is None:
            connection = Connection.create(
                tenant_id=tenant.tenant_id,
                name=name,
                type_=type_,
                config=config,
                ctx=ctx,
                description=description,
            )
        else:
            connection = existing
            connection.recreate(ctx, type_=type_, config=config, description=description)
        return self._connections.save(connection)

    def update(
        self,
        principal: Principal,
        name: str,
        ctx: CommandContext,
        *,
        config: dict[str, Any],
        description: str | None = None,
        type_: str | None = None,
        expected_version: int | None = None,
    ) -> Changed[Connection]:
        """Replace the config (and the description, if given). `type_`, if given, must
        be the connection's: a type is for life."""
        tenant = writable_tenant(self._store, principal)

        def decide(connection: Connection) -> None:
            if type_ is None or type_ == connection.type:
                self._validate(tenant.tenant_id, connection.type, config)
            connection.update(ctx, config=config, description=description, type_=type_)

        return self._connections.change(
            principal, self._id(principal, name), decide, expected_version, ctx
        )

    def delete(
        self,
        principal: Principal,
        name: str,
        ctx: CommandContext,
        *,
        force: bool = False,
        expected_version: int | None = None,
    ) -> Changed[Connection]:
        """Refused (409, naming them) while pipelines reference it, unless `force`; the
        runs of those pipelines then fail validation of the step (no such connection)."""
        tenant = writable_tenant(self._store, principal)

        def decide(connection: Connection) -> None:
            references = self._references.referencing(tenant.tenant_id, connection.name)
            if references and not force:
                raise ConnectionReferenced(connection.name, references)
            connection.delete(ctx, forced=bool(references))

        return self._connections.change(
            principal, self._id(principal, name), decide, expected_version, ctx
        )

    def references(self, principal: Principal, name: str) -> list[ConnectionReference]:
        connection = self.load(principal, name)
        return self._references.referencing(connection.tenant_id, connection.name)

    def config_of(self, tenant_id: str, name: str) -> ConnectionConfig | None:
        """The tenant's live connection called `name` (type and config, secret references
        unresolved), or None. The caller is trusted to name the pipeline's own tenant:
        this is not an API use case."""
        return connection_config(self._store, tenant_id, name)

    def _validate(self, tenant_id: str, type_: str, config: dict[str, Any]) -> None:
        checked = self._check(type_, config)
        problems = list(checked.problems)
        for ref in checked.secrets:
            secret = self._store.find(Secret, secret_id(tenant_id, ref.name))
            if secret is None or secret.deleted:
                problems.append(
                    FieldError(
                        ref.field,
                        f"no secret named {ref.name!r} in this tenant"
                        " (POST /api/v1/secrets creates one)",
                    )
                )
            elif ref.version is not None and secret.value_id_of(ref.version) is None:
                problems.append(
                    FieldError(ref.field, f"secret {ref.name!r} has no version {ref.version}")
                )
        if problems:
            raise InvalidConnection(problems)

    def _id(self, principal: Principal, name: str) -> UUID:
        """The id of `name` in the principal's tenant. A platform admin outside any
        tenant names none, so it finds nothing: connections are the tenant's business."""
        if principal.tenant_id is None:
            raise NotFound("connection", name)
        try:
            check_name(name)
        except InvalidCommand:
            raise NotFound("connection", name) from None
        return connection_id(principal.tenant_id, name)
