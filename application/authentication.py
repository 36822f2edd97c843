"""Authentication of requests: turning a presented access token or API key into a
Principal, as the credentials stand now.

Every request re-reads the session, the user and the tenant (or the key, its tenant and
its creator) from the event store: one query for their versions, with the repository's
cached copies used while current, so a logout, a spent refresh token, a deactivated
user, a changed password, a changed role, a revoked key or a deleted tenant holds from
the very next request, in every API process. From the event loop (api/auth.py) that
query runs on the async pool and nothing needs a worker thread unless a copy is behind.
Logging in, refreshing and logging out are application/sessions.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from application.api_keys import ApiKeyService, creator_of, roles_its_creator_still_grants
from application.errors import AuthenticationFailed, NotFound
from application.event_store import NornEventStore
from application.ports import (
    AsyncRequestFactsReader,
    RequestFactsReader,
    TokenClaims,
    TokenIssuer,
)
from application.principal import Principal
from application.threads import in_thread
from domain.api_key import ApiKey
from domain.session import Session
from domain.tenant import Tenant, TenantStatus
from domain.user import User

INVALID_TOKEN = "invalid or expired token"  # noqa: S105 - a message
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


class RequestAuthentication:
    def __init__(
        self,
        store: NornEventStore,
        tokens: TokenIssuer,
        api_keys: ApiKeyService,
        clock: Callable[[], datetime] = _now,
        facts: RequestFactsReader | None = None,
        async_facts: AsyncRequestFactsReader | None = None,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._api_keys = api_keys
        self._clock = clock
        self._facts = facts
        self._async_facts = async_facts

    def principal_for_token(self, token: str) -> Principal:
        claims = self._tokens.verify(token, "access")
        ids = _session_ids(claims)
        versions = self._facts.read(ids).versions if self._facts is not None else None
        return self._token_principal(claims, ids, self._store.current(*ids, versions=versions))

    async def principal_for_token_async(self, token: str) -> Principal:
        """principal_for_token from the event loop: the versions are read there, and the
        repository's copies used when current, as they nearly always are; only a stale
        copy is loaded in a worker thread. Spares every request a thread's hop."""
        if self._async_facts is None:
            return await in_thread(self.principal_for_token, token)
        claims = self._tokens.verify(token, "access")
        ids = _session_ids(claims)
        versions = (await self._async_facts.read(ids)).versions
        found = self._store.cached(*ids, versions=versions)
        if found is None:
            found = await in_thread(self._store.current, *ids, versions=versions)
        return self._token_principal(claims, ids, found)

    def _token_principal(
        self, claims: TokenClaims, ids: list[UUID], found: dict[UUID, Any]
    ) -> Principal:
        """The principal of a token whose session, user and tenant (`ids`) are `found` as
        they are now, if the session may still act (what _live_session checks)."""
        session, user = found.get(ids[0]), found.get(ids[1])
        if not (isinstance(session, Session) and isinstance(user, User)):
            raise AuthenticationFailed(INVALID_TOKEN)
        check_session(session, user, self._clock())
        if user.tenant_id != claims.tenant_id:
            raise AuthenticationFailed(INVALID_TOKEN)
        tenant = _usable(found.get(ids[2])) if claims.tenant_id is not None else None
        return Principal(
            subject_id=str(user.id),
            name=user.username,
            tenant_id=user.tenant_id,
            roles=frozenset(user.roles),
            kind="user",
            session_id=str(session.id),
            tenant_status=tenant.status if tenant else None,
            plan=tenant.plan if tenant else None,
            tenant=tenant,
        )

    def principal_for_api_key(self, presented: str) -> Principal:
        api_key = self._api_keys.authenticate(presented)
        tenant = _usable(self._store.find(Tenant, UUID(api_key.tenant_id)))
        creator_id = creator_of(api_key)
        creator = self._store.find(User, creator_id) if creator_id else None
        return _key_principal(api_key, tenant, creator)

    async def principal_for_api_key_async(self, presented: str) -> Principal:
        """principal_for_api_key from the event loop while the key, its tenant and its
        creator are cached at their current versions (one query reads the three);
        otherwise, as for a key this process has not seen yet, in a worker thread."""
        key_id = self._api_keys.key_id_of(presented)
        known = self._store.cached_copy(key_id) if key_id else None
        if not isinstance(known, ApiKey) or self._async_facts is None:
            return await in_thread(self.principal_for_api_key, presented)
        # A key's tenant and creator never change: the cached copy names them.
        creator_id = creator_of(known)
        ids = [known.id, UUID(known.tenant_id), *([creator_id] if creator_id else [])]
        versions = (await self._async_facts.read(ids)).versions
        found = self._store.cached(*ids, versions=versions)
        if found is None:
            return await in_thread(self.principal_for_api_key, presented)
        api_key = self._api_keys.check(presented, _of(ApiKey, found.get(ids[0])))
        creator = _of(User, found.get(creator_id)) if creator_id else None
        return _key_principal(api_key, _usable(found.get(ids[1])), creator)

    def acting_in(self, principal: Principal, raw_tenant_id: str) -> Principal:
        """A platform admin inside one tenant (X-Tenant-ID); others keep their own."""
        if not principal.is_platform_admin:
            return principal
        try:
            tenant = self._store.load(Tenant, UUID(raw_tenant_id), "tenant")
        except ValueError:
            raise NotFound("tenant", raw_tenant_id) from None
        return principal.acting_in(tenant.tenant_id, tenant.status, tenant.plan, tenant)


def _session_ids(claims: TokenClaims) -> list[UUID]:
    """The session, the user and (if any) the tenant a token names."""
    try:
        ids = [UUID(claims.session_id), UUID(claims.subject)]
        if claims.tenant_id is not None:
            ids.append(UUID(claims.tenant_id))
    except ValueError:
        raise AuthenticationFailed(INVALID_TOKEN) from None
    return ids


def _key_principal(api_key: ApiKey, tenant: Tenant, creator: User | None) -> Principal:
    return Principal(
        subject_id=str(api_key.id),
        name=api_key.name,
        tenant_id=api_key.tenant_id,
        roles=roles_its_creator_still_grants(api_key, creator),
        kind="api_key",
        tenant_status=tenant.status,
        plan=tenant.plan,
        tenant=tenant,
    )


def _of(cls: type[T], aggregate: object) -> T | None:
    return aggregate if isinstance(aggregate, cls) else None


def _usable(tenant: object) -> Tenant:
    """The tenant as found, if it may authenticate anyone: a missing or deleted one
    authenticates nobody."""
    if not isinstance(tenant, Tenant) or tenant.status == TenantStatus.DELETED:
        raise AuthenticationFailed(INVALID_TOKEN)
    return tenant


def check_session(session: Session, user: User, now: datetime) -> None:
    """AuthenticationFailed unless the session is the user's, live at `now`, and began
    with the user's current credentials, and the user may still authenticate."""
    if (
        session.user_id != str(user.id)
        or not session.usable_at(now)
        or not user.can_authenticate
        or user.credentials_version != session.credentials_version
    ):
        raise AuthenticationFailed(INVALID_TOKEN)


def live_tenant(
    store: NornEventStore, tenant_id: str | None, required: bool = True
) -> Tenant | None:
    """The principal's tenant; a deleted (or missing) one authenticates nobody."""
    if tenant_id is None:
        return None
    tenant = store.find(Tenant, UUID(tenant_id))
    if not required and (tenant is None or tenant.status == TenantStatus.DELETED):
        return None
    return _usable(tenant)
