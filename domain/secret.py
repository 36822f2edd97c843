"""The Secret aggregate: a tenant's named value (a password, a token) that steps will
reference (README "Secrets").

Its events record that a secret was created, changed or deleted and which value
version is current, never the value, nor a hash of it (a hash of a low-entropy value
is a leak: it can be guessed offline). Values are encrypted outside the store, each
secret under a data key of its own (infrastructure/secret_store.py); `value_id` in the
events names the row holding a version's ciphertext (random, so two racing writers of
the same version never overwrite each other's row: the event that wins says which).

The id is derived from (tenant, name), like a name claim, so a name is unique in its
tenant by the store itself, and another tenant's secret is a different id even under
a guessed name. A deleted secret's name is taken again by the same aggregate
(`recreate`); its value versions go on counting, so a reference pinned to a version of
the deleted secret never resolves to a value of the new one.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, Conflict, InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent
from domain.pipeline import STEP_NAME
from domain.tenant import NAMESPACE
from domain.text import nul_errors

DESCRIPTION_MAX = 1_000
MAX_HOSTS = 50
MAX_NAMESPACES = 100
VALUE_MAX = 65_536
# A host name or a wildcard of one (*.example.com), optionally with a port.
_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*(:\d{1,5})?$")


def secret_id(tenant_id: str, name: str) -> UUID:
    """Names are case-sensitive, like the step names they look like."""
    return uuid5(NAMESPACE_URL, f"norn:secret:{tenant_id}:{name}")


def check_name(name: str) -> None:
    if not STEP_NAME.fullmatch(name):
        raise InvalidCommand(
            "1 to 100 letters, digits, '_', '.' or '-', not starting with '.' or '-'", "name"
        )


def check_value(value: str) -> None:
    """Any text but an empty one; the message never quotes it."""
    if not value or len(value) > VALUE_MAX or "\x00" in value:
        raise InvalidCommand(f"a value of 1 to {VALUE_MAX} characters, without NUL", "value")


def check_metadata(
    description: str, allowed_hosts: tuple[str, ...], namespaces: tuple[str, ...]
) -> None:
    for problem in nul_errors({"description": description}, ""):
        raise InvalidCommand(problem.message, problem.field)
    if len(description) > DESCRIPTION_MAX:
        raise InvalidCommand(f"at most {DESCRIPTION_MAX} characters", "description")
    if len(allowed_hosts) > MAX_HOSTS:
        raise InvalidCommand(f"at most {MAX_HOSTS} hosts", "allowed_hosts")
    for i, host in enumerate(allowed_hosts):
        if len(host) > 260 or not _HOST.fullmatch(host):
            raise InvalidCommand("a host name, *.domain, optionally :port", f"allowed_hosts[{i}]")
    if len(namespaces) > MAX_NAMESPACES:
        raise InvalidCommand(f"at most {MAX_NAMESPACES} namespaces", "namespaces")
    for i, namespace in enumerate(namespaces):
        if not NAMESPACE.fullmatch(namespace):
            raise InvalidCommand("a namespace name (like a DNS label)", f"namespaces[{i}]")


class SecretEvent(NornEvent):
    aggregate_type = "secret"
    # Which ciphertext row holds a version is storage's business: not published.
    private_fields = frozenset({"value_id"})


class SecretCreated(SecretEvent, NornCreated):
    name: str
    description: str
    allowed_hosts: tuple[str, ...]
    namespaces: tuple[str, ...]
    value_version: int
    value_id: str


class SecretRecreated(SecretEvent):
    """The name of a deleted secret taken again: a new secret on the same stream."""

    description: str
    allowed_hosts: tuple[str, ...]
    namespaces: tuple[str, ...]
    value_version: int
    value_id: str

    def apply(self, aggregate: Secret) -> None:
        aggregate.description = self.description
        aggregate.allowed_hosts = tuple(self.allowed_hosts)
        aggregate.namespaces = tuple(self.namespaces)
        aggregate.deleted = False
        aggregate.first_value_version = self.value_version
        aggregate.value_version = self.value_version
        aggregate.value_ids = {self.value_version: self.value_id}


class SecretVersionAdded(SecretEvent):
    value_version: int
    value_id: str

    def apply(self, aggregate: Secret) -> None:
        aggregate.value_version = self.value_version
        aggregate.value_ids[self.value_version] = self.value_id


class SecretUpdated(SecretEvent):
    description: str
    allowed_hosts: tuple[str, ...]
    namespaces: tuple[str, ...]

    def apply(self, aggregate: Secret) -> None:
        aggregate.description = self.description
        aggregate.allowed_hosts = tuple(self.allowed_hosts)
        aggregate.namespaces = tuple(self.namespaces)


class SecretDeleted(SecretEvent):
    forced: bool
    """Deleted although pipelines referenced it (?force=true)."""

    def apply(self, aggregate: Secret) -> None:
        aggregate.deleted = True
        aggregate.value_ids = {}


class Secret(Aggregate):
    def __init__(
        self,
        tenant_id: str,
        name: str,
        description: str,
        allowed_hosts: tuple[str, ...],
        namespaces: tuple[str, ...],
        value_version: int,
        value_id: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.description = description
        self.allowed_hosts = tuple(allowed_hosts)
        self.namespaces = tuple(namespaces)
        self.value_version = value_version
        self.first_value_version = value_version
        self.value_ids: dict[int, str] = {value_version: value_id}
        """The live value versions (of this incarnation) and their ciphertext rows."""
        self.deleted = False

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        name: str,
        value_id: UUID,
        ctx: CommandContext,
        description: str = "",
        allowed_hosts: tuple[str, ...] = (),
        namespaces: tuple[str, ...] = (),
    ) -> Secret:
        check_name(name)
        check_metadata(description, allowed_hosts, namespaces)
        return cls._create(
            SecretCreated,
            id=secret_id(tenant_id, name),
            tenant_id=tenant_id,
            name=name,
            description=description,
            allowed_hosts=tuple(allowed_hosts),
            namespaces=tuple(namespaces),
            value_version=1,
            value_id=str(value_id),
            **ctx.event_fields(),
        )

    def recreate(
        self,
        ctx: CommandContext,
        *,
        value_id: UUID,
        description: str = "",
        allowed_hosts: tuple[str, ...] = (),
        namespaces: tuple[str, ...] = (),
    ) -> None:
        if not self.deleted:
            raise Conflict(f"a secret named {self.name!r} exists", "name")
        check_metadata(description, allowed_hosts, namespaces)
        self._trigger(
            SecretRecreated,
            ctx,
            description=description,
            allowed_hosts=tuple(allowed_hosts),
            namespaces=tuple(namespaces),
            value_version=self.value_version + 1,
            value_id=str(value_id),
        )

    @property
    def next_value_version(self) -> int:
        return self.value_version + 1

    def add_version(self, ctx: CommandContext, value_id: UUID) -> int:
        self._require_live()
        version = self.next_value_version
        self._trigger(SecretVersionAdded, ctx, value_version=version, value_id=str(value_id))
        return version

    def update(
        self,
        ctx: CommandContext,
        *,
        description: str | None = None,
        allowed_hosts: tuple[str, ...] | None = None,
        namespaces: tuple[str, ...] | None = None,
    ) -> bool:
        """Change the metadata named (None: unchanged); False when nothing changes."""
        self._require_live()
        new = (
            self.description if description is None else description,
            self.allowed_hosts if allowed_hosts is None else tuple(allowed_hosts),
            self.namespaces if namespaces is None else tuple(namespaces),
        )
        check_metadata(*new)
        if new == (self.description, self.allowed_hosts, self.namespaces):
            return False
        self._trigger(
            SecretUpdated, ctx, description=new[0], allowed_hosts=new[1], namespaces=new[2]
        )
        return True

    def delete(self, ctx: CommandContext, *, forced: bool) -> None:
        self._require_live()
        self._trigger(SecretDeleted, ctx, forced=forced)

    def value_id_of(self, version: int | None) -> UUID | None:
        """The ciphertext row of a live version (None: the current one); None if the
        version is not one of this secret's (deleted, another incarnation's, never)."""
        if self.deleted:
            return None
        found = self.value_ids.get(self.value_version if version is None else version)
        return None if found is None else UUID(found)

    def _require_live(self) -> None:
        if self.deleted:
            raise AggregateDeleted(f"secret {self.name!r} was deleted")

    def _trigger(self, event_class: type[SecretEvent], ctx: CommandContext, **fields: Any) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)
