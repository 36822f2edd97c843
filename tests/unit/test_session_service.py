"""Login sessions at the service level, on an in-memory store (tests/support/memory.py)
with the real token service and argon2 at its lowest cost: refresh-token rotation, a
spent refresh token ending the whole family (also when two refreshes, or a refresh and a
logout, race each other from two processes), logout, and password changes, resets,
deactivation, deletion and role changes holding on the very next request; a session's
lifetime. tests/integration/test_api_sessions.py drives sessions over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jwt
import pytest

from application.api_keys import ApiKeyService
from application.authentication import RequestAuthentication
from application.errors import AuthenticationFailed, PermissionDenied
from application.principal import Principal
from application.sessions import IssuedTokens, SessionService
from application.users import UserService
from domain.events import CommandContext
from domain.session import Session
from domain.tenant import Tenant
from infrastructure.api_key_secrets import ApiKeySecrets
from infrastructure.security import Argon2PasswordHasher, TokenService, key_id
from tests.support.memory import StoreUsage, memory_store

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
PASSWORD, NEW_PASSWORD = "correct-horse-battery-staple", "tr0ub4dor-and-three-more-words"
CTX = CommandContext("user:admin", "corr")
LIFETIME = 7 * 24 * 3600


class World:
    """A tenant with an admin and a user `alice`; every SessionService made here (one per
    "process") shares the one store."""

    def __init__(self, cache: bool = False) -> None:
        self.store = memory_store(cache)
        self.hasher = Argon2PasswordHasher(8, 1, 1)
        self.users = UserService(self.store, self.hasher)
        tenant = Tenant.create(
            tenant_id=uuid4(), name="acme", description="", plan="pro", labels={}, ctx=CTX
        )
        self.store.append(tenant)
        self.admin = Principal(
            "admin", "admin", tenant.tenant_id, frozenset({"admin"}), tenant_status="active"
        )
        alice = self.users.create(
            Principal("root", "root", None, frozenset({"platform_admin"})),
            username="alice",
            password=PASSWORD,
            tenant_id=tenant.tenant_id,
            roles=("editor",),
            ctx=CTX,
        ).state
        self.alice_id = alice.id
        self.sessions = self.process()
        self.auth = self.authentication()

    def process(self, clock: Callable[[], datetime] | None = None) -> SessionService:
        """Another API process's session service over the same store."""
        options: dict[str, Any] = {} if clock is None else {"clock": clock}
        return SessionService(self.store, self.hasher, self.tokens(), **options)

    def authentication(self, clock: Callable[[], datetime] | None = None) -> RequestAuthentication:
        """Another API process's authentication of requests."""
        options: dict[str, Any] = {} if clock is None else {"clock": clock}
        return RequestAuthentication(
            self.store,
            self.tokens(),
            ApiKeyService(self.store, ApiKeySecrets()),
            facts=StoreUsage(self.store),
            **options,
        )

    def tokens(self) -> TokenService:
        return TokenService(
            [SECRET], issuer="norn", audience="norn-api", access_ttl=900, refresh_ttl=LIFETIME
        )

    def login(self, password: str = PASSWORD) -> IssuedTokens:
        return self.sessions.login("alice", password, "corr")

    def alive(self, tokens: IssuedTokens) -> bool:
        try:
            self.auth.principal_for_token(tokens.access_token)
        except AuthenticationFailed:
            return False
        return True

    def dead(self, tokens: IssuedTokens) -> bool:
        """Neither the access nor the refresh token of the pair works any more."""
        if self.alive(tokens):
            return False
        with pytest.raises(AuthenticationFailed):
            self.sessions.refresh(tokens.refresh_token, "corr-dead")
        return True

    def ended(self, tokens: IssuedTokens) -> tuple[bool, str | None]:
        session = self.store.load(Session, UUID(tokens.session_id), "session")
        return session.ended, session.end_reason


@pytest.fixture
def world() -> World:
    return World()


def test_refresh_rotates_the_pair_within_one_session(world: World) -> None:
    first = world.login()
    second = world.sessions.refresh(first.refresh_token, "corr")
    third = world.sessions.refresh(second.refresh_token, "corr")

    tokens = {t for p in (first, second, third) for t in (p.access_token, p.refresh_token)}
    assert len(tokens) == 6
    assert first.session_id == second.session_id == third.session_id
    # Access tokens belong to the session, not to a refresh generation.
    assert all(world.alive(pair) for pair in (first, second, third))


def test_a_spent_refresh_token_presented_again_ends_the_whole_family(world: World) -> None:
    other_session, first = world.login(), world.login()
    second = world.sessions.refresh(first.refresh_token, "corr")

    with pytest.raises(AuthenticationFailed, match="already used"):
        world.sessions.refresh(first.refresh_token, "corr")

    assert world.dead(second) and world.dead(first)
    assert world.ended(first) == (True, "refresh_token_reuse")
    assert world.alive(other_session)  # the user's other login is untouched
    world.sessions.refresh(other_session.refresh_token, "corr")


def test_logout_ends_only_that_session_and_its_refreshed_pairs(world: World) -> None:
    phone, laptop = world.login(), world.login()
    refreshed = world.sessions.refresh(laptop.refresh_token, "corr")
    principal = world.auth.principal_for_token(laptop.access_token)

    assert world.sessions.logout(principal, "corr") is not None

    assert world.dead(laptop) and world.dead(refreshed)
    assert world.ended(laptop) == (True, "logout")
    assert world.alive(phone)
    assert world.sessions.logout(principal, "corr") is None  # already ended


def test_an_api_key_has_no_session_to_log_out(world: World) -> None:
    key = Principal("key-1", "ci", world.admin.tenant_id, frozenset({"viewer"}), kind="api_key")
    with pytest.raises(PermissionDenied, match="api-keys"):
        world.sessions.logout(key, "corr")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda w: w.users.change_password(
                Principal(str(w.alice_id), "alice", w.admin.tenant_id, frozenset({"editor"})),
                w.alice_id,
                current_password=PASSWORD,
                new_password=NEW_PASSWORD,
                ctx=CTX,
            ),
            id="own password change",
        ),
        pytest.param(
            lambda w: w.users.change_password(
                w.admin, w.alice_id, current_password=None, new_password=NEW_PASSWORD, ctx=CTX
            ),
            id="admin reset",
        ),
    ],
)
def test_a_new_password_ends_every_session_of_the_user(
    world: World, change: Callable[[World], Any]
) -> None:
    phone, laptop = world.login(), world.login()

    change(world)

    assert world.dead(phone) and world.dead(laptop)
    with pytest.raises(AuthenticationFailed):
        world.login(PASSWORD)
    assert world.alive(world.login(NEW_PASSWORD))


def test_deactivation_ends_sessions_reactivation_revives_none_and_deletion_ends_all(
    world: World,
) -> None:
    before = world.login()

    world.users.update(world.admin, world.alice_id, roles=None, active=False, ctx=CTX)

    assert world.dead(before)
    with pytest.raises(AuthenticationFailed):
        world.login()
    world.users.update(world.admin, world.alice_id, roles=None, active=True, ctx=CTX)
    assert world.dead(before)
    after = world.login()
    assert world.alive(after)
    world.users.delete(world.admin, world.alice_id, CTX)
    assert world.dead(after)


def test_a_role_change_holds_on_the_next_request_with_the_same_token(world: World) -> None:
    tokens = world.login()
    assert world.auth.principal_for_token(tokens.access_token).roles == {"editor"}

    world.users.update(world.admin, world.alice_id, roles=("viewer",), active=None, ctx=CTX)

    assert world.auth.principal_for_token(tokens.access_token).roles == {"viewer"}


def test_refresh_refuses_anything_but_a_live_refresh_token(world: World) -> None:
    tokens = world.login()
    claims = jwt.decode(tokens.refresh_token, options={"verify_signature": False})
    other_key = "another-secret-that-is-long-enough-for-hs256-xyz"

    def signed(key: str, **changes: Any) -> str:
        return jwt.encode({**claims, **changes}, key, "HS256", {"kid": key_id(key)})

    now = int(datetime.now(UTC).timestamp())
    bad = {
        "an access token": tokens.access_token,
        "garbage": "not.a.jwt",
        "signed with another key": signed(other_key),
        "another key under our kid": jwt.encode(
            claims, other_key, "HS256", {"kid": key_id(SECRET)}
        ),
        "expired": signed(SECRET, iat=now - 60, nbf=now - 60, exp=now - 1),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "unknown session": signed(SECRET, sid=str(uuid4())),
        "another user's session": signed(SECRET, sub=str(uuid4())),
    }
    for label, token in bad.items():
        with pytest.raises(AuthenticationFailed):
            world.sessions.refresh(token, label)
    assert world.sessions.refresh(signed(SECRET), "the control").session_id == tokens.session_id


def test_the_same_refresh_token_presented_concurrently_ends_the_family(world: World) -> None:
    tokens = world.login()
    processes = [world.process() for _ in range(4)]
    issued: list[IssuedTokens] = []
    start = threading.Barrier(len(processes))

    def refresh(sessions: SessionService) -> None:
        start.wait()
        try:
            issued.append(sessions.refresh(tokens.refresh_token, "corr"))
        except AuthenticationFailed:
            pass

    threads = [threading.Thread(target=refresh, args=(p,)) for p in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(issued) <= 1
    assert all(world.dead(pair) for pair in [tokens, *issued])
    assert world.ended(tokens) == (True, "refresh_token_reuse")


def other_process_first(world: World, action: Callable[[], Any]) -> list[Any]:
    """Makes the next append of the store run `action` (another process's command) just
    before it: that process saves first. Returns what the action returned."""
    done: list[Any] = []
    append = world.store.append
    started = threading.Event()

    def after_the_other(*aggregates: Any, **options: Any) -> int | None:
        if not started.is_set():  # the other process's own append goes straight through
            started.set()
            done.append(action())
        return append(*aggregates, **options)

    world.store.append = after_the_other  # type: ignore[method-assign]
    return done


def test_a_refresh_that_loses_a_race_to_another_process_ends_the_family(world: World) -> None:
    tokens, other = world.login(), world.process()
    won = other_process_first(world, lambda: other.refresh(tokens.refresh_token, "corr-other"))

    with pytest.raises(AuthenticationFailed):
        world.sessions.refresh(tokens.refresh_token, "corr-this")

    assert world.ended(tokens) == (True, "refresh_token_reuse")
    assert not world.alive(won[0]) and world.dead(won[0])


def test_a_logout_that_races_a_refresh_still_ends_the_session(world: World) -> None:
    tokens, other = world.login(), world.process()
    principal = world.auth.principal_for_token(tokens.access_token)
    won = other_process_first(world, lambda: other.refresh(tokens.refresh_token, "corr-other"))

    assert world.sessions.logout(principal, "corr-logout") is not None

    assert world.ended(tokens) == (True, "logout")
    assert world.dead(won[0])


def test_a_session_ends_its_lifetime_after_login_however_often_refreshed(world: World) -> None:
    tokens = world.sessions.refresh(world.login().refresh_token, "corr")
    lifetime = timedelta(seconds=LIFETIME)
    soon, late = (
        (lambda: datetime.now(UTC) + lifetime * 0.99),
        (lambda: datetime.now(UTC) + lifetime),
    )
    just_before, after = world.process(soon), world.process(late)

    assert world.authentication(soon).principal_for_token(tokens.access_token).name == "alice"
    with pytest.raises(AuthenticationFailed):
        world.authentication(late).principal_for_token(tokens.access_token)
    with pytest.raises(AuthenticationFailed):
        after.refresh(tokens.refresh_token, "corr-late")
    assert just_before.refresh(tokens.refresh_token, "corr-in-time").refresh_token
