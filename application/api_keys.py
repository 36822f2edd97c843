"""API key use cases: create (the key is returned once), revoke, and authenticate a key
presented on a request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from application.authorization import (
    ROLE_PERMISSIONS,
    Permission,
    check_key_roles,
    require_tenant,
    sees,
)
from application.commands import Aggregates
from application.errors import AuthenticationFailed, VersionConflict
from application.event_store import NornEventStore
from application.ports import ApiKeySecrets
from application.principal import Principal
from application.results import Changed
from domain.api_key import ApiKey, api_key_id_for
from domain.events import CommandContext
from domain.user import TENANT_ROLES, User

_INVALID = "invalid, revoked or expired API key"
_PREFIX_ATTEMPTS = 3


@dataclass(frozen=True, kw_only=True)
class IssuedKey(Changed[ApiKey]):
    key: str
    """The plaintext key: returned to the creator once, never stored."""


def _now() -> datetime:
    return datetime.now(UTC)


class ApiKeyService:
    def __init__(
        self,
        store: NornEventStore,
        secrets: ApiKeySecrets,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._clock = clock
        # Checked against when no key has the presented prefix, so an unknown prefix
        # costs about what a wrong secret does.
        self._dummy_hash = secrets.hash(*secrets.new_key())
        self._keys = Aggregates(
            store,
            ApiKey,
            "api key",
            scope=lambda principal, api_key: sees(principal, api_key.tenant_id),
        )

    def create(
        self,
        principal: Principal,
        *,
        name: str,
        roles: tuple[str, ...],
        expires_at: datetime | None,
        ctx: CommandContext,
    ) -> IssuedKey:
        tenant_id = require_tenant(principal)
        check_key_roles(principal, roles)
        for attempt in range(_PREFIX_ATTEMPTS):
            prefix, secret = self._secrets.new_key()
            api_key = ApiKey.create(
                tenant_id=tenant_id,
                name=name,
                prefix=prefix,
                secret_hash=self._secrets.hash(prefix, secret),
                roles=roles,
                expires_at=expires_at,
                now=self._clock(),
                ctx=ctx,
            )
            try:
                saved = self._keys.save(api_key)
            except VersionConflict:
                # The id derives from the prefix: a (rare) prefix collision. Draw again.
                if attempt == _PREFIX_ATTEMPTS - 1:
                    raise
                continue
            key = self._secrets.format(prefix, secret)
            return IssuedKey(saved.state, saved.version, saved.position, key=key)
        raise AssertionError("unreachable")  # pragma: no cover

    def revoke(self, principal: Principal, key_id: UUID, ctx: CommandContext) -> Changed[ApiKey]:
        """Revoke at once; revoking a revoked key changes nothing (position None)."""
        require_tenant(principal)  # a tenant's keys are managed inside that tenant

        def decide(api_key: ApiKey) -> None:
            api_key.revoke(ctx)

        return self._keys.change(principal, key_id, decide, ctx=ctx)

    def authenticate(self, presented: str) -> ApiKey:
        """The usable key `presented` is, or AuthenticationFailed (one message for a
        malformed, unknown, wrong, revoked or expired key). Read from the event store,
        not a read model, so a revocation holds from the next request on."""
        key_id = self.key_id_of(presented)
        return self.check(presented, self._store.find(ApiKey, key_id) if key_id else None)

    def key_id_of(self, presented: str) -> UUID | None:
        """The id of the key `presented` claims to be (None: not a key's form)."""
        parsed = self._secrets.parse(presented)
        return api_key_id_for(parsed[0]) if parsed is not None else None

    def check(self, presented: str, api_key: ApiKey | None) -> ApiKey:
        """`api_key`, the current state of the key `presented` claims to be (None: there
        is none), if `presented` is its secret and it is usable now."""
        parsed = self._secrets.parse(presented)
        if parsed is None:
            raise AuthenticationFailed(_INVALID)
        prefix, secret = parsed
        if api_key is None:
            self._secrets.verify(self._dummy_hash, prefix, secret)
            raise AuthenticationFailed(_INVALID)
        if not self._secrets.verify(api_key.secret_hash, prefix, secret):
            raise AuthenticationFailed(_INVALID)
        if not api_key.usable_at(self._clock()):
            raise AuthenticationFailed(_INVALID)
        return api_key


def creator_of(api_key: ApiKey) -> UUID | None:
    """The user who made the key (None: made by something else, e.g. the platform)."""
    kind, _, creator_id = api_key.created_by.partition(":")
    return UUID(creator_id) if kind == "user" else None


def roles_its_creator_still_grants(api_key: ApiKey, creator: User | None) -> frozenset[str]:
    """A key acts for the user who made it (`creator`, as it is now): it stops while that
    user is deleted or deactivated, and never does more than that user may do now (a
    demoted creator's key is demoted with it: each of its roles becomes the highest role
    within both that role and the creator's permissions)."""
    if creator_of(api_key) is None:
        return frozenset(api_key.roles)
    if creator is None or not creator.can_authenticate:
        raise AuthenticationFailed(_INVALID)
    granted: set[Permission] = set()
    for role in creator.roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    roles = set()
    for role in api_key.roles:
        allowed = ROLE_PERMISSIONS.get(role, frozenset()) & granted
        within = next((r for r in TENANT_ROLES if ROLE_PERMISSIONS[r] <= allowed), None)
        if within is not None:
            roles.add(within)
    if not roles:
        raise AuthenticationFailed(_INVALID)
    return frozenset(roles)
