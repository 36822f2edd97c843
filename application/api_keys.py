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
    authorize,
    permissions_of,
    require_tenant,
)
from application.errors import AuthenticationFailed, NotFound, PermissionDenied, VersionConflict
from application.event_store import NornEventStore
from application.ports import ApiKeySecrets
from application.principal import Principal
from domain.api_key import ApiKey, api_key_id_for
from domain.events import CommandContext
from domain.user import PLATFORM_ADMIN

_INVALID = "invalid, revoked or expired API key"
_PREFIX_ATTEMPTS = 3


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str
    """The plaintext key: returned to the creator once, never stored."""
    position: int | None


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

    def create(
        self,
        principal: Principal,
        *,
        name: str,
        roles: tuple[str, ...],
        expires_at: datetime | None,
        ctx: CommandContext,
    ) -> IssuedKey:
        authorize(principal, Permission.API_KEYS_WRITE)
        tenant_id = require_tenant(principal)
        if principal.kind == "api_key":
            # A leaked key must not be able to mint keys that outlive its revocation.
            raise PermissionDenied("API keys are created by users, not by other API keys")
        _check_no_escalation(principal, roles)
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
                position = self._store.append(api_key)
            except VersionConflict:
                # The id derives from the prefix: a (rare) prefix collision. Draw again.
                if attempt == _PREFIX_ATTEMPTS - 1:
                    raise
                continue
            return IssuedKey(api_key, self._secrets.format(prefix, secret), position)
        raise AssertionError("unreachable")  # pragma: no cover

    def revoke(self, principal: Principal, key_id: UUID, ctx: CommandContext) -> int | None:
        """Revoke at once; the position of the event (None if it was already revoked)."""
        authorize(principal, Permission.API_KEYS_WRITE)
        api_key = self._load(principal, key_id)
        if not api_key.revoke(ctx):
            return None
        return self._store.append(api_key)

    def authenticate(self, presented: str) -> ApiKey:
        """The usable key `presented` is, or AuthenticationFailed (one message for a
        malformed, unknown, wrong, revoked or expired key). Read from the event store,
        not a read model, so a revocation holds from the next request on."""
        parsed = self._secrets.parse(presented)
        if parsed is None:
            raise AuthenticationFailed(_INVALID)
        prefix, secret = parsed
        api_key = self._store.find(ApiKey, api_key_id_for(prefix))
        if api_key is None:
            self._secrets.verify(self._dummy_hash, prefix, secret)
            raise AuthenticationFailed(_INVALID)
        if not self._secrets.verify(api_key.secret_hash, prefix, secret):
            raise AuthenticationFailed(_INVALID)
        if not api_key.usable_at(self._clock()):
            raise AuthenticationFailed(_INVALID)
        return api_key

    def _load(self, principal: Principal, key_id: UUID) -> ApiKey:
        tenant_id = require_tenant(principal)
        api_key = self._store.load(ApiKey, key_id, "api key")
        if api_key.tenant_id != tenant_id:
            raise NotFound("api key", key_id)  # another tenant's key: never reveal it
        return api_key


def _check_no_escalation(principal: Principal, roles: tuple[str, ...]) -> None:
    """A key may carry only roles whose permissions the creator holds itself."""
    if PLATFORM_ADMIN in roles:
        raise PermissionDenied("no API key may have the platform_admin role")
    granted = permissions_of(principal)
    for role in roles:
        if not ROLE_PERMISSIONS.get(role, frozenset()) <= granted:
            raise PermissionDenied(f"you may not grant the role {role}: it exceeds your own")
