"""The ApiKey aggregate: a credential for a machine, scoped to one tenant and some of its
roles. The key itself is shown once at creation; only a hash of its secret is recorded
(a private field, so it never leaves the event store)."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent
from domain.text import nul_errors
from domain.user import TENANT_ROLES

MAX_NAME = 100


def api_key_id_for(prefix: str) -> UUID:
    """The key's id is derived from its public prefix, so authentication finds the
    aggregate in the event store without a read model (no projection lag: a revoked key
    is refused by the very next request), and a prefix collision cannot go unnoticed."""
    return uuid5(NAMESPACE_URL, f"norn:api_key:{prefix}")


class ApiKeyEvent(NornEvent):
    aggregate_type = "api_key"


class ApiKeyCreated(ApiKeyEvent, NornCreated):
    private_fields = frozenset({"secret_hash"})
    name: str
    prefix: str
    secret_hash: str
    roles: tuple[str, ...]
    expires_at: datetime | None
    created_by: str


class ApiKeyRevoked(ApiKeyEvent):
    def apply(self, aggregate: ApiKey) -> None:
        aggregate.revoked = True
        aggregate.revoked_at = self.timestamp


class ApiKey(Aggregate):
    def __init__(
        self,
        tenant_id: str,
        name: str,
        prefix: str,
        secret_hash: str,
        roles: tuple[str, ...],
        expires_at: datetime | None,
        created_by: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.prefix = prefix
        self.secret_hash = secret_hash
        self.roles = tuple(roles)
        self.expires_at = expires_at
        self.created_by = created_by
        self.revoked = False
        self.revoked_at: datetime | None = None

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        name: str,
        prefix: str,
        secret_hash: str,
        roles: tuple[str, ...],
        expires_at: datetime | None,
        now: datetime,
        ctx: CommandContext,
    ) -> ApiKey:
        for problem in nul_errors({"name": name}, ""):
            raise InvalidCommand(problem.message, problem.field)
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise InvalidCommand(f"API key name must be 1 to {MAX_NAME} characters", "name")
        if not roles:
            raise InvalidCommand("an API key needs at least one role", "roles")
        unknown = [r for r in roles if r not in TENANT_ROLES]
        if unknown:
            raise InvalidCommand(
                f"unknown role(s) {', '.join(unknown)}; use {', '.join(TENANT_ROLES)}", "roles"
            )
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidCommand("expires_at needs a time zone (e.g. a Z suffix)", "expires_at")
            if expires_at <= now:
                raise InvalidCommand("expires_at must be in the future", "expires_at")
        return cls._create(
            ApiKeyCreated,
            id=api_key_id_for(prefix),
            tenant_id=tenant_id,
            name=name,
            prefix=prefix,
            secret_hash=secret_hash,
            roles=tuple(dict.fromkeys(roles)),
            expires_at=expires_at,
            created_by=ctx.actor,
            **ctx.event_fields(),
        )

    def revoke(self, ctx: CommandContext) -> bool:
        """Revoke the key; True if this revoked it. Revoking a revoked key records
        nothing and is not an error: DELETE is idempotent, and the outcome the caller
        wants (the key no longer works) already holds."""
        if self.revoked:
            return False
        self.trigger_event(ApiKeyRevoked, tenant_id=self.tenant_id, **ctx.event_fields())
        return True

    def usable_at(self, now: datetime) -> bool:
        """Whether the key authenticates at `now`: not revoked and not expired."""
        return not self.revoked and (self.expires_at is None or now < self.expires_at)
