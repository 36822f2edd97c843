"""The Connection aggregate: a tenant's named, typed config of an external system (a
PostgreSQL database, an HTTP API) that steps name with `connection`, so that hosts and
credentials are written once per tenant (README "Connections").

Its events hold the config as written, whose credential fields are secret references
(`{"secret": "<name>"}`), never values: the service (application/connections.py)
refuses a plain credential before any event exists. The domain does not know which
fields are credentials (the connection types are infrastructure's); it keeps the
type fixed for the connection's life and the config a JSON object.

The id is derived from (tenant, name), as a secret's is: a name is unique in its tenant
by the store itself, another tenant's connection is another id even under a guessed
name, and a deleted connection's name is taken again by the same aggregate
(`recreate`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, Conflict, FieldError, InvalidCommand, InvalidDefinition
from domain.events import CommandContext, NornCreated, NornEvent
from domain.pipeline import STEP_NAME
from domain.text import nul_errors

DESCRIPTION_MAX = 1_000
TYPE_MAX = 50


@dataclass(frozen=True)
class ConnectionConfig:
    """What a step's `connection` stands for: the live connection's type and config
    (secret references unresolved)."""

    type: str
    config: dict[str, Any]


class InvalidConnection(InvalidDefinition):
    """A connection's config breaks one or more rules; every problem is listed."""

    summary = "the connection is invalid"


def connection_id(tenant_id: str, name: str) -> UUID:
    """Names are case-sensitive, like the step names they look like."""
    return uuid5(NAMESPACE_URL, f"norn:connection:{tenant_id}:{name}")


def check_name(name: str) -> None:
    if not STEP_NAME.fullmatch(name):
        raise InvalidCommand(
            "1 to 100 letters, digits, '_', '.' or '-', not starting with '.' or '-'", "name"
        )


def check_fields(type_: str, config: dict[str, Any], description: str) -> None:
    errors = nul_errors({"type": type_, "config": config, "description": description}, "")
    if not 0 < len(type_) <= TYPE_MAX:
        errors.append(FieldError("type", f"1 to {TYPE_MAX} characters"))
    if not isinstance(config, dict):
        errors.append(FieldError("config", "a JSON object"))
    if len(description) > DESCRIPTION_MAX:
        errors.append(FieldError("description", f"at most {DESCRIPTION_MAX} characters"))
    if errors:
        raise InvalidConnection(errors)


class ConnectionEvent(NornEvent):
    aggregate_type = "connection"


class ConnectionCreated(ConnectionEvent, NornCreated):
    name: str
    type: str
    config: dict[str, Any]
    description: str


class ConnectionRecreated(ConnectionEvent):
    """The name of a deleted connection taken again: a new connection on the same stream
    (of any type: the deleted one's is no constraint)."""

    type: str
    config: dict[str, Any]
    description: str

    def apply(self, aggregate: Connection) -> None:
        aggregate.type = self.type
        aggregate.config = dict(self.config)
        aggregate.description = self.description
        aggregate.deleted = False


class ConnectionUpdated(ConnectionEvent):
    config: dict[str, Any]
    description: str

    def apply(self, aggregate: Connection) -> None:
        aggregate.config = dict(self.config)
        aggregate.description = self.description


class ConnectionDeleted(ConnectionEvent):
    forced: bool
    """Deleted although pipelines referenced it (?force=true)."""

    def apply(self, aggregate: Connection) -> None:
        aggregate.deleted = True


class Connection(Aggregate):
    def __init__(
        self, tenant_id: str, name: str, type: str, config: dict[str, Any], description: str
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.type = type
        self.config = dict(config)
        self.description = description
        self.deleted = False

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        name: str,
        type_: str,
        config: dict[str, Any],
        ctx: CommandContext,
        description: str = "",
    ) -> Connection:
        check_name(name)
        check_fields(type_, config, description)
        return cls._create(
            ConnectionCreated,
            id=connection_id(tenant_id, name),
            tenant_id=tenant_id,
            name=name,
            type=type_,
            config=dict(config),
            description=description,
            **ctx.event_fields(),
        )

    def recreate(
        self, ctx: CommandContext, *, type_: str, config: dict[str, Any], description: str = ""
    ) -> None:
        if not self.deleted:
            raise Conflict(f"a connection named {self.name!r} exists", "name")
        check_fields(type_, config, description)
        self._trigger(
            ConnectionRecreated, ctx, type=type_, config=dict(config), description=description
        )

    def update(
        self,
        ctx: CommandContext,
        *,
        config: dict[str, Any],
        description: str | None = None,
        type_: str | None = None,
    ) -> bool:
        """Replace the config (and the description, if given); False when nothing
        changes. The type is the connection's for life: steps of the plugins it serves
        name it."""
        self._require_live()
        if type_ is not None and type_ != self.type:
            raise InvalidCommand(
                f"a connection's type cannot change (this one is {self.type}): delete it and"
                " create it again",
                "type",
            )
        description = self.description if description is None else description
        check_fields(self.type, config, description)
        if (config, description) == (self.config, self.description):
            return False
        self._trigger(ConnectionUpdated, ctx, config=dict(config), description=description)
        return True

    def delete(self, ctx: CommandContext, *, forced: bool) -> None:
        self._require_live()
        self._trigger(ConnectionDeleted, ctx, forced=forced)

    @property
    def live_config(self) -> ConnectionConfig | None:
        # A deep copy: the store's cached aggregate must not change with the caller's.
        return None if self.deleted else ConnectionConfig(self.type, copy.deepcopy(self.config))

    def _require_live(self) -> None:
        if self.deleted:
            raise AggregateDeleted(f"connection {self.name!r} was deleted")

    def _trigger(
        self, event_class: type[ConnectionEvent], ctx: CommandContext, **fields: Any
    ) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)
