"""Authenticating a request's token from the event loop (RequestAuthentication.
principal_for_token_async, what api/auth.py does for every request with a bearer token):
the same principal and the same refusals as the thread path, with the versions read on
the loop, the repository's cached copies used while they are current, and a copy that is
not (a logout or a role change made by another process) loaded afresh."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest

from application.api_keys import ApiKeyService
from application.authentication import RequestAuthentication
from application.errors import AuthenticationFailed
from application.event_store import NornEventStore
from application.ports import RequestFacts
from domain.events import CommandContext
from infrastructure.api_key_secrets import ApiKeySecrets
from tests.support.memory import StoreUsage
from tests.unit.test_session_service import CTX, World


class LoopFacts:
    """AsyncRequestFactsReader over the in-memory store's recorder (the newest stored
    version of each aggregate, as projections/usage.py asks PostgreSQL), counting reads."""

    def __init__(self, store: NornEventStore) -> None:
        self._recorder = store.recorder
        self.reads = 0

    async def read(self, aggregate_ids: Sequence[UUID]) -> RequestFacts:
        self.reads += 1
        versions = {}
        for aggregate_id in aggregate_ids:
            newest = self._recorder.select_events(aggregate_id, desc=True, limit=1)
            if newest:
                versions[aggregate_id] = newest[0].originator_version
        return RequestFacts(versions=versions)


class Loads:
    """Counts the aggregates the store loads (its repository's get), passing each on."""

    def __init__(self, world: World) -> None:
        self.calls = 0
        repository = world.store.repository
        get = repository.get

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return get(*args, **kwargs)

        repository.get = counting  # type: ignore[method-assign]


def on_the_loop_world(world: World) -> tuple[RequestAuthentication, LoopFacts]:
    facts = LoopFacts(world.store)
    authentication = RequestAuthentication(
        world.store,
        world.tokens(),
        ApiKeyService(world.store, ApiKeySecrets()),
        facts=StoreUsage(world.store),
        async_facts=facts,
    )
    return authentication, facts


@pytest.fixture
def cached_world() -> World:
    return World(cache=True)


async def test_it_answers_the_principal_the_thread_path_answers(cached_world: World) -> None:
    auth, facts = on_the_loop_world(cached_world)
    tokens = cached_world.login()

    on_the_loop = await auth.principal_for_token_async(tokens.access_token)

    assert on_the_loop == auth.principal_for_token(tokens.access_token)
    assert (on_the_loop.name, on_the_loop.roles, facts.reads) == ("alice", {"editor"}, 1)


async def test_current_cached_copies_are_used_without_loading(cached_world: World) -> None:
    auth, facts = on_the_loop_world(cached_world)
    tokens = cached_world.login()
    await auth.principal_for_token_async(tokens.access_token)  # fills the cache
    loads = Loads(cached_world)

    for _ in range(3):
        await auth.principal_for_token_async(tokens.access_token)

    assert (loads.calls, facts.reads) == (0, 4)


async def test_a_change_made_elsewhere_holds_on_the_next_request(cached_world: World) -> None:
    """The repository's cache is fast-forwarded when read, not when written (as another
    process's write would leave it too): after a change the versions read are newer than
    the cached copies, which are loaded afresh."""
    auth, _ = on_the_loop_world(cached_world)
    tokens = cached_world.login()
    await auth.principal_for_token_async(tokens.access_token)

    cached_world.users.update(
        cached_world.admin, cached_world.alice_id, roles=("viewer",), active=None, ctx=CTX
    )
    loads = Loads(cached_world)
    demoted = await auth.principal_for_token_async(tokens.access_token)

    assert demoted.roles == {"viewer"}
    assert loads.calls == 1  # the user's cached copy was behind: loaded; the rest cached
    cached_world.sessions.logout(demoted, "corr")
    loads.calls = 0
    with pytest.raises(AuthenticationFailed):
        await auth.principal_for_token_async(tokens.access_token)
    assert loads.calls == 1  # and so was the session's, after the logout


async def test_without_a_loop_reader_it_authenticates_in_a_thread() -> None:
    world = World()
    authentication = world.authentication()  # facts only: the thread path, as before
    tokens = world.login()

    principal = await authentication.principal_for_token_async(tokens.access_token)

    assert principal.name == "alice"
    with pytest.raises(AuthenticationFailed):
        await authentication.principal_for_token_async(tokens.refresh_token)  # not access


def alices_key(world: World, auth: RequestAuthentication) -> str:
    """A viewer key made by alice (an editor), as POST /api-keys makes it."""
    alice = auth.principal_for_token(world.login().access_token)
    made_by_alice = CommandContext(f"user:{world.alice_id}", "corr")
    keys = ApiKeyService(world.store, ApiKeySecrets())
    return keys.create(alice, name="ci", roles=("editor",), expires_at=None, ctx=made_by_alice).key


async def test_a_known_key_is_authenticated_from_cached_copies(cached_world: World) -> None:
    auth, facts = on_the_loop_world(cached_world)
    key = alices_key(cached_world, auth)
    first = await auth.principal_for_api_key_async(key)  # new here: loaded in a thread
    loads = Loads(cached_world)

    again = await auth.principal_for_api_key_async(key)

    assert (loads.calls, facts.reads) == (0, 1)
    assert again == first == auth.principal_for_api_key(key)
    assert (again.kind, again.name, again.roles) == ("api_key", "ci", {"editor"})


async def test_a_key_follows_its_creator_and_its_revocation_at_once(cached_world: World) -> None:
    auth, _ = on_the_loop_world(cached_world)
    key = alices_key(cached_world, auth)
    await auth.principal_for_api_key_async(key)
    admin, alice = cached_world.admin, cached_world.alice_id

    cached_world.users.update(admin, alice, roles=("viewer",), active=None, ctx=CTX)
    assert (await auth.principal_for_api_key_async(key)).roles == {"viewer"}
    cached_world.users.update(admin, alice, roles=None, active=False, ctx=CTX)
    with pytest.raises(AuthenticationFailed):
        await auth.principal_for_api_key_async(key)
    cached_world.users.update(admin, alice, roles=None, active=True, ctx=CTX)
    key_id = auth.principal_for_api_key(key).subject_id
    ApiKeyService(cached_world.store, ApiKeySecrets()).revoke(cached_world.admin, UUID(key_id), CTX)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await auth.principal_for_api_key_async(key)


async def test_a_wrong_secret_of_a_cached_key_is_refused(cached_world: World) -> None:
    auth, _ = on_the_loop_world(cached_world)
    key = alices_key(cached_world, auth)
    await auth.principal_for_api_key_async(key)
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")

    for presented in (wrong, "nrn_not-a-key", "garbage"):
        with pytest.raises(AuthenticationFailed, match="invalid, revoked or expired"):
            await auth.principal_for_api_key_async(presented)
