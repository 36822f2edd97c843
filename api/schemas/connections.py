"""Bodies of /api/v1/connections and /api/v1/connectors (api/controllers/connections.py).
A config's credentials are secret references (`{"secret": "<name>"}`) in requests and
answers alike: a plain credential is refused, so none is ever answered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from api.schemas.common import CursorPage, Request

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Type = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]


class ConnectionCreate(Request):
    name: Name
    """Like a step name: letters, digits, _ . - (case-sensitive). Steps name it with
    `connection`."""
    type: Type
    """A connection type of GET /api/v1/connectors: postgres, http."""
    config: dict[str, Any]
    """As the type's schema says; credentials as secret references {"secret": "<name>"}."""
    description: Description = ""


class ConnectionUpdate(Request):
    """The whole config again (fields left out take the type's defaults); the
    description changes only if given. The type cannot change."""

    config: dict[str, Any]
    type: Type | None = None
    """The connection's type, if given: a check, not a change."""
    description: Description | None = None


class PipelineRef(msgspec.Struct):
    id: str
    name: str


class ConnectionRead(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    type: str
    config: dict[str, Any]
    description: str
    referenced_by: list[PipelineRef]
    """The tenant's pipelines with a step naming this connection."""
    version: int
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime


class ConnectionWritten(msgspec.Struct, kw_only=True):
    """A command's answer: the connection as its append left it."""

    id: str
    tenant_id: str
    name: str
    type: str
    config: dict[str, Any]
    description: str
    version: int
    position: int | None
    changed: bool


class ConnectionDeletedOut(msgspec.Struct, kw_only=True):
    name: str
    deleted: bool
    version: int
    position: int | None


class ConnectionPage(CursorPage, kw_only=True):
    items: list[ConnectionRead]


class ConnectorOut(msgspec.Struct, kw_only=True):
    type: str
    description: str
    serves: list[str]
    """The step plugins (Type.name) that may name a connection of this type."""
    config_schema: dict[str, Any]
    """JSON schema of `config`; x-norn-secret marks the credential fields."""


class ConnectorList(msgspec.Struct):
    items: list[ConnectorOut]
