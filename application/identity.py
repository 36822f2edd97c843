"""Identity use cases: tenants, users, and checking a user's password at login."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

from application.authorization import Permission, authorize
from application.errors import AuthenticationFailed, NotFound, PermissionDenied
from application.event_store import NornEventStore
from application.ports import PasswordHasher
from application.principal import Principal
from domain.errors import InvalidCommand
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.tenant import Tenant
from domain.user import PLATFORM_ADMIN, User, user_id_for

MIN_PASSWORD = 10
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class Saved:
    aggregate_id: UUID
    version: int
    position: int | None


def check_password_policy(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidCommand(f"password must be at least {MIN_PASSWORD} characters", "password")
    if len(password) > MAX_PASSWORD:
        raise InvalidCommand(f"password must be at most {MAX_PASSWORD} characters", "password")
    if username.casefold() in password.casefold():
        raise InvalidCommand("password must not contain the username", "password")


class IdentityService:
    def __init__(self, store: NornEventStore, hasher: PasswordHasher) -> None:
        self._store = store
        self._hasher = hasher
        # Verified against when a username does not exist, so that a login for an
        # unknown name costs the same time as one with a wrong password.
        self._dummy_hash = hasher.hash(uuid4().hex)

    def create_tenant(
        self,
        principal: Principal,
        *,
        name: str,
        description: str,
        plan: str,
        labels: dict[str, str],
        ctx: CommandContext,
    ) -> tuple[Tenant, int | None]:
        authorize(principal, Permission.TENANTS_MANAGE)
        tenant = Tenant.create(
            tenant_id=uuid4(),
            name=name,
            description=description,
            plan=plan,
            labels=labels,
            ctx=ctx,
        )
        existing = self._store.find(NameClaim, claim_id("tenant", tenant.name))
        if existing is None:
            claim = NameClaim.claim_new(
                tenant_id=None, scope="tenant", name=tenant.name, holder_id=str(tenant.id), ctx=ctx
            )
        else:
            existing.claim(str(tenant.id), ctx)
            claim = existing
        return tenant, self._store.append(tenant, claim)

    def get_tenant(self, principal: Principal, tenant_id: UUID) -> Tenant:
        if not principal.is_platform_admin and principal.tenant_id != str(tenant_id):
            raise NotFound("tenant", tenant_id)
        return self._store.load(Tenant, tenant_id, "tenant")

    def create_user(
        self,
        principal: Principal,
        *,
        username: str,
        password: str,
        tenant_id: str | None,
        roles: tuple[str, ...],
        ctx: CommandContext,
    ) -> tuple[User, int | None]:
        authorize(principal, Permission.USERS_WRITE)
        if not principal.is_platform_admin:
            if tenant_id != principal.tenant_id:
                raise PermissionDenied("tenant admins may only create users in their own tenant")
            if PLATFORM_ADMIN in roles:
                raise PermissionDenied("only a platform admin may grant platform_admin")
        if tenant_id is not None:
            try:
                self._store.load(Tenant, UUID(tenant_id), "tenant")
            except (ValueError, NotFound):
                raise InvalidCommand(f"tenant {tenant_id} does not exist", "tenant_id") from None
        check_password_policy(username, password)
        user = User.register(
            username=username,
            password_hash=self._hasher.hash(password),
            tenant_id=tenant_id,
            roles=roles,
            ctx=ctx,
        )
        if self._store.find(User, user.id) is not None:
            raise InvalidCommand(f"username {username!r} is already taken", "username")
        return user, self._store.append(user)

    def ensure_platform_admin(self, username: str, password: str) -> bool:
        """Create the bootstrap platform admin unless that user exists. True if created."""
        if self._store.find(User, user_id_for(username)) is not None:
            return False
        check_password_policy(username, password)
        ctx = CommandContext(actor="system:bootstrap", correlation_id=str(uuid4()))
        user = User.register(
            username=username,
            password_hash=self._hasher.hash(password),
            tenant_id=None,
            roles=(PLATFORM_ADMIN,),
            ctx=ctx,
        )
        self._store.append(user)
        return True

    def authenticate(self, username: str, password: str) -> User:
        """The user whose password this is, or AuthenticationFailed (same message and
        similar cost whether the username exists or not)."""
        try:
            user_id = user_id_for(username)
        except Exception:  # pragma: no cover - uuid5 accepts any str
            user_id = None
        user = self._store.find(User, user_id) if user_id else None
        if user is None or not user.active:
            self._hasher.verify(self._dummy_hash, password)
            raise AuthenticationFailed("invalid username or password")
        if not self._hasher.verify(user.password_hash, password):
            raise AuthenticationFailed("invalid username or password")
        return user

    def get_user(self, user_id: UUID) -> User:
        return self._store.load(User, user_id, "user")
