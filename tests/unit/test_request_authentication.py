"""Authenticating a request's token from the event loop (SessionService.
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
from application.errors import AuthenticationFailed
from application.event_store import NornEventStore
from application.ports import RequestFacts
from application.sessions import SessionService
from infrastructure.api_key_secrets import ApiKeySecrets
from infrastructure.security import TokenService
from tests.support.memory import StoreUsage
from tests.unit.test_session_service import CTX, LIFETIME, SECRET, World


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
    """Counts what the store loads (NornEventStore.current), passing each call on."""

    def __init__(self, world: World) -> None:
        self.calls = 0
        current = world.store.current

        def counting(*ids: UUID, **kwargs: Any) -> Any:
            self.calls += 1
            return current(*ids, **kwargs)

        world.store.current = counting  # type: ignore[method-assign]


def sessions_on_the_loop(world: World) -> tuple[SessionService, LoopFacts]:
    tokens = TokenService(
        [SECRET], issuer="norn", audience="norn-api", access_ttl=900, refresh_ttl=LIFETIME
    )
    facts = LoopFacts(world.store)
    service = SessionService(
        world.store,
        world.hasher,
        tokens,
        ApiKeyService(world.store, ApiKeySecrets()),
        facts=StoreUsage(world.store),
        async_facts=facts,
    )
    return service, facts


@pytest.fixture
def cached_world() -> World:
    return World(cache=True)


async def test_it_answers_the_principal_the_thread_path_answers(cached_world: World) -> None:
    sessions, facts = sessions_on_the_loop(cached_world)
    tokens = cached_world.login()

    on_the_loop = await sessions.principal_for_token_async(tokens.access_token)

    assert on_the_loop == sessions.principal_for_token(tokens.access_token)
    assert (on_the_loop.name, on_the_loop.roles, facts.reads) == ("alice", {"editor"}, 1)


async def test_current_cached_copies_are_used_without_loading(cached_world: World) -> None:
    sessions, facts = sessions_on_the_loop(cached_world)
    tokens = cached_world.login()
    await sessions.principal_for_token_async(tokens.access_token)  # fills the cache
    loads = Loads(cached_world)

    for _ in range(3):
        await sessions.principal_for_token_async(tokens.access_token)

    assert (loads.calls, facts.reads) == (0, 4)


async def test_a_change_made_elsewhere_holds_on_the_next_request(cached_world: World) -> None:
    """The repository's cache is fast-forwarded when read, not when written (as another
    process's write would leave it too): after a change the versions read are newer than
    the cached copies, which are loaded afresh."""
    sessions, _ = sessions_on_the_loop(cached_world)
    tokens = cached_world.login()
    await sessions.principal_for_token_async(tokens.access_token)
    loads = Loads(cached_world)

    cached_world.users.update(
        cached_world.admin, cached_world.alice_id, roles=("viewer",), active=None, ctx=CTX
    )
    demoted = await sessions.principal_for_token_async(tokens.access_token)

    assert demoted.roles == {"viewer"}
    assert loads.calls == 1  # the user's cached copy was behind: loaded
    sessions.logout(demoted, "corr")
    with pytest.raises(AuthenticationFailed):
        await sessions.principal_for_token_async(tokens.access_token)
    assert loads.calls == 2  # and so was the session's, after the logout


async def test_without_a_loop_reader_it_authenticates_in_a_thread() -> None:
    world = World()
    sessions = world.process()  # facts only: the thread path, as before
    tokens = world.login()

    principal = await sessions.principal_for_token_async(tokens.access_token)

    assert principal.name == "alice"
    with pytest.raises(AuthenticationFailed):
        await sessions.principal_for_token_async(tokens.refresh_token)  # not an access token
