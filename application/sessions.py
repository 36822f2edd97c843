"""Sessions and authentication: logging in (throttled), refreshing with rotating refresh
tokens, logging out, and turning a presented token or API key into a Principal.

Every request re-reads the session, the user and the tenant from the event store (one
query for the three versions; the repository's cached copies are used while current),
so a logout, a spent refresh token, a deactivated user, a changed password, a changed
role or a deleted tenant holds from the very next request, in every API process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

from application.api_keys import ApiKeyService, creator_of, roles_its_creator_still_grants
from application.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    VersionConflict,
)
from application.event_store import NornEventStore
from application.ports import (
    AsyncRequestFactsReader,
    PasswordHasher,
    RequestFactsReader,
    TokenClaims,
    TokenIssuer,
)
from application.principal import Principal
from application.threads import in_thread
from domain.api_key import ApiKey
from domain.errors import InvalidCommand
from domain.events import CommandContext
from domain.session import Session
from domain.tenant import Tenant, TenantStatus
from domain.user import User, user_id_for

_INVALID_LOGIN = "invalid username or password"
_INVALID_TOKEN = "invalid or expired token"  # noqa: S105 - a message
T = TypeVar("T")
# Saves of one session that lose a race are decided again on its new state this often.
_SAVE_ATTEMPTS = 3


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str
    position: int | None


def _now() -> datetime:
    return datetime.now(UTC)


class SessionService:
    def __init__(
        self,
        store: NornEventStore,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        api_keys: ApiKeyService,
        clock: Callable[[], datetime] = _now,
        facts: RequestFactsReader | None = None,
        async_facts: AsyncRequestFactsReader | None = None,
    ) -> None:
        self._store = store
        self._facts = facts
        self._async_facts = async_facts
        self._hasher = hasher
        self._tokens = tokens
        self._api_keys = api_keys
        self._clock = clock
        # Verified against when a username does not exist, so that a login for an
        # unknown name costs the same time as one with a wrong password.
        self._dummy_hash = hasher.hash(uuid4().hex)

    # --- sessions -----------------------------------------------------------------------

    def login(self, username: str, password: str, correlation_id: str) -> IssuedTokens:
        user = self._check_password(username, password)
        ctx = CommandContext(f"user:{user.id}", correlation_id)
        session = Session.start(
            session_id=uuid4(),
            user_id=str(user.id),
            tenant_id=user.tenant_id,
            credentials_version=user.credentials_version,
            expires_at=self._clock() + timedelta(seconds=self._tokens.refresh_ttl),
            ctx=ctx,
        )
        return self._issue(user, session, self._store.append(session))

    def refresh(self, refresh_token: str, correlation_id: str) -> IssuedTokens:
        """New tokens for a refresh token of the session's current generation. A spent
        one ends the session (its every token stops working) and is refused."""
        claims = self._tokens.verify(refresh_token, "refresh")
        for _ in range(_SAVE_ATTEMPTS):
            session, user, _ = self._live_session(claims.session_id, claims.subject)
            ctx = CommandContext(f"user:{user.id}", correlation_id)
            try:
                generation = session.rotate(claims.generation, self._clock(), ctx)
            except InvalidCommand:  # expired since _live_session looked
                raise AuthenticationFailed(_INVALID_TOKEN) from None
            try:
                position = self._store.append(session)
            except VersionConflict:
                # Another refresh (or a logout) of this session was saved first. Decide
                # again on the session as it is now: this token's generation is spent,
                # so presenting it is a reuse that ends the session, however close the
                # two came; a race must not let either copy live on.
                continue
            if generation is None:
                raise AuthenticationFailed(
                    "this refresh token was already used: the session has been ended; log in again"
                )
            return self._issue(user, session, position)
        raise AuthenticationFailed(_INVALID_TOKEN)

    def logout(self, principal: Principal, correlation_id: str) -> int | None:
        """End the principal's session: its access and refresh tokens stop at once."""
        if principal.kind != "user" or principal.session_id is None:
            # Valid credentials without a session: 403, not a 401 that would tell the
            # client to authenticate again. A key is ended by revoking it.
            raise PermissionDenied(
                "only a logged-in user can log out; an API key has no session "
                "(revoke it with DELETE /api/v1/api-keys/{id})"
            )
        ctx = CommandContext(principal.actor, correlation_id)
        for _ in range(_SAVE_ATTEMPTS):
            session = self._store.load(Session, UUID(principal.session_id), "session")
            if not session.end("logout", ctx):
                return None
            try:
                return self._store.append(session)
            except VersionConflict:
                # A refresh of this session was saved first: end it as it is now.
                continue
        raise VersionConflict("the session kept changing; log out again")

    # --- authentication of requests -------------------------------------------------------

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
            raise AuthenticationFailed(_INVALID_TOKEN)
        self._check_session(session, user)
        if user.tenant_id != claims.tenant_id:
            raise AuthenticationFailed(_INVALID_TOKEN)
        tenant = found.get(ids[2]) if claims.tenant_id is not None else None
        if claims.tenant_id is not None and (
            not isinstance(tenant, Tenant) or tenant.status == TenantStatus.DELETED
        ):
            raise AuthenticationFailed(_INVALID_TOKEN)
        tenant = tenant if isinstance(tenant, Tenant) else None
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
        tenant = self._tenant_of(api_key.tenant_id)
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
        tenant = _of(Tenant, found.get(ids[1]))
        if tenant is None or tenant.status == TenantStatus.DELETED:
            raise AuthenticationFailed(_INVALID_TOKEN)
        creator = _of(User, found.get(creator_id)) if creator_id else None
        return _key_principal(api_key, tenant, creator)

    def acting_in(self, principal: Principal, raw_tenant_id: str) -> Principal:
        """A platform admin inside one tenant (X-Tenant-ID); others keep their own."""
        if not principal.is_platform_admin:
            return principal
        try:
            tenant = self._store.load(Tenant, UUID(raw_tenant_id), "tenant")
        except ValueError:
            raise NotFound("tenant", raw_tenant_id) from None
        return principal.acting_in(tenant.tenant_id, tenant.status, tenant.plan, tenant)

    # --- helpers ----------------------------------------------------------------------------

    def _check_password(self, username: str, password: str) -> User:
        """The user whose password this is, or AuthenticationFailed with one message and
        a similar cost whether the username exists or not."""
        user = self._store.find(User, user_id_for(username))
        if user is None or not user.can_authenticate:
            self._hasher.verify(self._dummy_hash, password)
            raise AuthenticationFailed(_INVALID_LOGIN)
        if not self._hasher.verify(user.password_hash, password):
            raise AuthenticationFailed(_INVALID_LOGIN)
        tenant = self._tenant_of(user.tenant_id, required=False)
        if user.tenant_id is not None and tenant is None:
            raise AuthenticationFailed(_INVALID_LOGIN)
        return user

    def _check_session(self, session: Session, user: User) -> None:
        if (
            session.user_id != str(user.id)
            or not session.usable_at(self._clock())
            or not user.can_authenticate
            or user.credentials_version != session.credentials_version
        ):
            raise AuthenticationFailed(_INVALID_TOKEN)

    def _live_session(self, session_id: str, subject: str) -> tuple[Session, User, Tenant | None]:
        """The session a token names, its user and the user's tenant, if all three may
        still act: the session live and the user's credentials unchanged since it
        began, the user active, the tenant not deleted."""
        try:
            session = self._store.find(Session, UUID(session_id))
            user = self._store.find(User, UUID(subject))
        except ValueError:
            raise AuthenticationFailed(_INVALID_TOKEN) from None
        if session is None or user is None:
            raise AuthenticationFailed(_INVALID_TOKEN)
        self._check_session(session, user)
        return session, user, self._tenant_of(user.tenant_id)

    def _tenant_of(self, tenant_id: str | None, required: bool = True) -> Tenant | None:
        """The principal's tenant; a deleted (or missing) one authenticates nobody."""
        if tenant_id is None:
            return None
        tenant = self._store.find(Tenant, UUID(tenant_id))
        if tenant is None or tenant.status == TenantStatus.DELETED:
            if required:
                raise AuthenticationFailed(_INVALID_TOKEN)
            return None
        return tenant

    def _issue(self, user: User, session: Session, position: int | None) -> IssuedTokens:
        identity = {
            "session_id": str(session.id),
            "username": user.username,
            "tenant_id": user.tenant_id,
        }
        tokens = self._tokens
        return IssuedTokens(
            access_token=tokens.issue(str(user.id), "access", **identity),
            refresh_token=tokens.issue(
                str(user.id), "refresh", generation=session.generation, **identity
            ),
            expires_in=tokens.access_ttl,
            session_id=str(session.id),
            position=position,
        )


def _session_ids(claims: TokenClaims) -> list[UUID]:
    """The session, the user and (if any) the tenant a token names."""
    try:
        ids = [UUID(claims.session_id), UUID(claims.subject)]
        if claims.tenant_id is not None:
            ids.append(UUID(claims.tenant_id))
    except ValueError:
        raise AuthenticationFailed(_INVALID_TOKEN) from None
    return ids


def _key_principal(api_key: ApiKey, tenant: Tenant | None, creator: User | None) -> Principal:
    assert tenant is not None
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
