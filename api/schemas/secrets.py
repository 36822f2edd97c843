"""Bodies of /api/v1/secrets (api/controllers/secrets.py). A value is in a request
only (`SecretCreate`, `SecretPut`): no answer has a field for it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from api.schemas.common import CursorPage, Request

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Value = Annotated[str, msgspec.Meta(min_length=1, max_length=65_536)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]
Hosts = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=260)]], msgspec.Meta(max_length=50)
]
Namespaces = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=63)]], msgspec.Meta(max_length=100)
]


class SecretCreate(Request):
    name: Name
    """Like a step name: letters, digits, _ . - (case-sensitive)."""
    value: Value
    """Write-only: never answered by any route."""
    description: Description = ""
    allowed_hosts: Hosts = msgspec.field(default_factory=list)
    """Hosts a step may send the value to (enforced once steps reference secrets)."""
    namespaces: Namespaces = msgspec.field(default_factory=list)
    """Namespaces whose pipelines may reference it; empty: any."""


class SecretPut(Request):
    """A new value version; the metadata named changes too, the rest stays."""

    value: Value
    description: Description | None = None
    allowed_hosts: Hosts | None = None
    namespaces: Namespaces | None = None


class PipelineRef(msgspec.Struct):
    """A pipeline (a step's config) or a connection referencing the secret."""

    id: str
    name: str
    kind: str = "pipeline"


class SecretRead(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    description: str
    allowed_hosts: list[str]
    namespaces: list[str]
    value_version: int
    """The current value version (a version pins an older one, while the secret lives)."""
    referenced_by: list[PipelineRef]
    version: int
    created_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime


class SecretWritten(msgspec.Struct, kw_only=True):
    """A command's answer: the secret's metadata as its append left it."""

    id: str
    tenant_id: str
    name: str
    description: str
    allowed_hosts: list[str]
    namespaces: list[str]
    value_version: int
    version: int
    position: int | None
    changed: bool


class SecretDeletedOut(msgspec.Struct, kw_only=True):
    name: str
    deleted: bool
    version: int
    position: int | None


class SecretPage(CursorPage, kw_only=True):
    items: list[SecretRead]
