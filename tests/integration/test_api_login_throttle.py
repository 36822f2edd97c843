"""Login throttling over HTTP against the real app and Postgres: a username is locked
after `login_lock_after` failures (429 even with the right password), a client address
after 5 times as many, unknown usernames behave exactly like known ones, a success resets
the username's count, and parallel guesses cannot slip past the limit.

The progressive delay is observed by recording what the login service asks to wait,
never by measuring time (that wait is also skipped, so the tests stay fast)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    login,
    make_tenant_user,
    overlapping,
    running_app,
)

PASSWORD = "correct-horse-battery-staple"
LOCK_AFTER = 3
LOCK_SECONDS = 600


@pytest.fixture
def throttled(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, login_lock_after=LOCK_AFTER, login_lock_seconds=LOCK_SECONDS
    )


@asynccontextmanager
async def app_with_users(
    settings: Settings, *usernames: str
) -> AsyncIterator[tuple[AsyncTestClient, list[float]]]:
    """The app with the named users (in one tenant), and the list of the waits the login
    service asked for (recorded instead of slept)."""
    async with running_app(settings) as client:
        waits: list[float] = []

        async def record(seconds: float) -> None:
            waits.append(seconds)

        client.app.state.container.logins._sleep = record
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, _ = await make_tenant_user(client, root, "acme", "viewer")
        for username in usernames:
            created = await client.post(
                "/api/v1/users",
                json={"username": username, "password": PASSWORD, "tenant_id": tenant_id},
                headers=root,
            )
            assert created.status_code == 201, created.text
        yield client, waits


@asynccontextmanager
async def from_address(client: AsyncTestClient, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same running app whose requests come from `address`."""
    async with overlapping(client, (address, 40000)) as other:
        yield other


async def attempt(client: Any, username: str, password: str = "not-the-password") -> Any:  # noqa: S107
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


def observed(response: Any) -> tuple[Any, ...]:
    """What a client can see of a login response, numbers in messages blurred (a lock's
    remaining seconds tick down between two requests)."""
    body = response.json()
    error = body.get("error", {})
    return (
        response.status_code,
        error.get("code"),
        re.sub(r"\d+", "N", error.get("message", "")),
        error.get("details"),
        sorted(k for k in response.headers if k in {"retry-after", "www-authenticate"}),
        "access_token" in body,
    )


def assert_locked(response: Any) -> None:
    error = assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert "too many failed logins" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= LOCK_SECONDS + 1


async def test_a_username_is_locked_after_the_limit_even_with_the_right_password(
    throttled: Settings,
) -> None:
    async with app_with_users(throttled, "alice", "bob") as (client, _):
        for _ in range(LOCK_AFTER):
            assert_error(await attempt(client, "alice"), 401, "AUTHENTICATION_REQUIRED")

        assert_locked(await attempt(client, "alice", PASSWORD))
        assert_locked(await attempt(client, " ALICE ", PASSWORD))  # the same username
        async with from_address(client, "198.51.100.9") as elsewhere:
            assert_locked(await attempt(elsewhere, "alice", PASSWORD))
        # The lock is alice's: bob logs in from the same address.
        assert (await attempt(client, "bob", PASSWORD)).status_code == 200


async def test_an_unknown_username_goes_through_the_same_statuses_and_messages(
    throttled: Settings,
) -> None:
    async with app_with_users(throttled, "alice") as (client, _):
        tries = [*(["wrong"] * LOCK_AFTER), "right", "wrong", "right"]

        known = [
            observed(await attempt(client, "alice", PASSWORD if t == "right" else "wrong-pass"))
            for t in tries
        ]
        unknown = [
            observed(await attempt(client, "mallory", PASSWORD if t == "right" else "wrong-pass"))
            for t in tries
        ]

        assert known == unknown
        assert [o[0] for o in known] == [401] * LOCK_AFTER + [429] * 3


async def test_a_success_before_the_limit_resets_the_usernames_count(
    throttled: Settings,
) -> None:
    async with app_with_users(throttled, "alice") as (client, _):
        for _ in range(3):
            for _ in range(LOCK_AFTER - 1):
                assert (await attempt(client, "alice")).status_code == 401
            assert (await attempt(client, "alice", PASSWORD)).status_code == 200

        for _ in range(LOCK_AFTER):
            assert (await attempt(client, "alice")).status_code == 401
        assert_locked(await attempt(client, "alice", PASSWORD))


async def test_an_address_is_locked_after_five_times_the_limit_across_usernames(
    throttled: Settings,
) -> None:
    address_limit = 5 * LOCK_AFTER
    names = [f"user{i}" for i in range(address_limit)]
    async with app_with_users(throttled, "alice", *names) as (client, waits):
        async with (
            from_address(client, "203.0.113.5") as spraying,
            from_address(client, "203.0.113.6") as neighbour,
        ):
            # One failure per username: no username comes near its own lock.
            for name in names[:-1]:
                assert (await attempt(spraying, name)).status_code == 401
            assert (await attempt(spraying, "alice", PASSWORD)).status_code == 200
            assert (await attempt(spraying, names[-1])).status_code == 401

            assert_locked(await attempt(spraying, "alice", PASSWORD))
            assert_locked(await attempt(spraying, "nobody-at-all", PASSWORD))
            # Only that address: the same user from another one, and the usernames it
            # sprayed, still log in.
            assert (await attempt(neighbour, "alice", PASSWORD)).status_code == 200
            assert (await attempt(neighbour, names[0], PASSWORD)).status_code == 200

        # Failures past the first few were slowed, more and more, up to a ceiling.
        assert waits, "no login was slowed"
        assert waits == sorted(waits)
        assert waits[0] < waits[-1]
        assert max(waits) <= 4.0


async def test_parallel_guesses_cannot_slip_past_the_limit(throttled: Settings) -> None:
    async with app_with_users(throttled, "alice") as (client, _):
        async with from_address(client, "192.0.2.1") as attacker:
            guesses = [attempt(attacker, "alice", f"guess-number-{i}") for i in range(12)]
            responses = await asyncio.gather(*guesses)

        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(401) <= LOCK_AFTER, statuses
        assert set(statuses) == {401, 429}, statuses
        assert_locked(await attempt(client, "alice", PASSWORD))


async def test_the_lock_lifts_after_its_time(settings: Settings) -> None:
    short = dataclasses.replace(settings, login_lock_after=LOCK_AFTER, login_lock_seconds=1)
    async with app_with_users(short, "alice") as (client, _):
        for _ in range(LOCK_AFTER):
            assert (await attempt(client, "alice")).status_code == 401
        assert (await attempt(client, "alice", PASSWORD)).status_code == 429

        deadline = asyncio.get_running_loop().time() + 15
        while (response := await attempt(client, "alice", PASSWORD)).status_code == 429:
            assert asyncio.get_running_loop().time() < deadline, "the lock never lifted"
            await asyncio.sleep(0.2)

        assert response.status_code == 200, response.text


async def test_guessing_the_current_password_counts_as_failed_logins(
    throttled: Settings,
) -> None:
    async with app_with_users(throttled, "alice") as (client, _):
        alice = await login(client, "alice", PASSWORD)
        me = (await client.get("/api/v1/auth/me", headers=alice)).json()["id"]
        url = f"/api/v1/users/{me}/password"
        guess = {"current_password": "not-the-password", "new_password": "a-new-long-passphrase"}
        for _ in range(LOCK_AFTER):
            wrong = await client.post(url, json=guess, headers=alice)
            assert_error(wrong, 422, "VALIDATION_ERROR")
        # A stolen token cannot keep guessing: the username is locked, for logins too.
        locked = await client.post(url, json=guess, headers=alice)
        assert_error(locked, 429, "RATE_LIMIT_EXCEEDED")
        assert int(locked.headers["retry-after"]) >= 1
        right = {"current_password": PASSWORD, "new_password": "a-new-long-passphrase"}
        assert_error(await client.post(url, json=right, headers=alice), 429, "RATE_LIMIT_EXCEEDED")
        assert_error(await attempt(client, "alice", PASSWORD), 429, "RATE_LIMIT_EXCEEDED")
