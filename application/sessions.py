"""Login sessions: logging in (throttled), refreshing with rotating refresh tokens, and
logging out. What a request's token or API key authenticates as is
application/authentication.py, which checks sessions with the same rules
(`check_session`, `live_tenant`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from application.authentication import INVALID_TOKEN, check_session, live_tenant
from application.errors import AuthenticationFailed, PermissionDenied, VersionConflict
from application.event_store import NornEventStore
from application.ports import PasswordHasher, TokenIssuer
from application.principal import Principal
from domain.errors import InvalidCommand
from domain.events import CommandContext
from domain.session import Session
from domain.tenant import Tenant
from domain.user import User, user_id_for

_INVALID_LOGIN = "invalid username or password"
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
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._tokens = tokens
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
                raise AuthenticationFailed(INVALID_TOKEN) from None
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
        raise AuthenticationFailed(INVALID_TOKEN)

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
        tenant = live_tenant(self._store, user.tenant_id, required=False)
        if user.tenant_id is not None and tenant is None:
            raise AuthenticationFailed(_INVALID_LOGIN)
        return user

    def _live_session(self, session_id: str, subject: str) -> tuple[Session, User, Tenant | None]:
        """The session a token names, its user and the user's tenant, if all three may
        still act: the session live and the user's credentials unchanged since it
        began, the user active, the tenant not deleted."""
        try:
            session = self._store.find(Session, UUID(session_id))
            user = self._store.find(User, UUID(subject))
        except ValueError:
            raise AuthenticationFailed(INVALID_TOKEN) from None
        if session is None or user is None:
            raise AuthenticationFailed(INVALID_TOKEN)
        check_session(session, user, self._clock())
        return session, user, live_tenant(self._store, user.tenant_id)

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
