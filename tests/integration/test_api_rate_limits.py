"""Per-principal rate limits by plan, over HTTP against real Postgres: the X-RateLimit-*
headers on every authenticated response (429 included), 429 RATE_LIMIT_EXCEEDED with
Retry-After past the burst, one bucket per principal and per plan, none on public
routes, and one bucket shared by several API processes. Then the token bucket itself,
refilled by moving its `updated_at` back rather than by waiting.

Hourly rates are low next to the bursts (a token every few minutes), so no token comes
back while a test runs and every count below is exact."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient

from infrastructure.rate_limit import MAX_UNCONFIRMED, RateLimit
from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, login, running_app

PASSWORD = "correct-horse-battery-staple"
LIMITS = "free=20/5,pro=40/8,enterprise=80/10,platform=100000/1000"
FREE, PRO, PLATFORM = RateLimit(20, 5), RateLimit(40, 8), RateLimit(100000, 1000)
Headers = dict[str, str]


@pytest.fixture
def low(settings: Settings) -> Settings:
    return replace(settings, rate_limits=LIMITS)


async def new_tenant(client: AsyncTestClient, root: Headers, name: str, plan: str) -> str:
    created = await client.post("/api/v1/tenants", json={"name": name, "plan": plan}, headers=root)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def new_user(
    client: AsyncTestClient, root: Headers, tenant_id: str, username: str, role: str
) -> Headers:
    """A user of the tenant, logged in. Only the platform admin's bucket pays for it."""
    user = await client.post(
        "/api/v1/users",
        json={"username": username, "password": PASSWORD, "tenant_id": tenant_id, "roles": [role]},
        headers=root,
    )
    assert user.status_code == 201, user.text
    return await login(client, username, PASSWORD)


async def tenant_user(
    client: AsyncTestClient, root: Headers, tenant: str, plan: str, username: str, role: str
) -> tuple[str, Headers]:
    """A new tenant on `plan` and a user in it: (tenant id, the user's headers)."""
    tenant_id = await new_tenant(client, root, tenant, plan)
    return tenant_id, await new_user(client, root, tenant_id, username, role)


def rate_headers(response: Any) -> tuple[int, int, int]:
    """(limit, remaining, reset) as integers; each header must be there."""
    return tuple(  # type: ignore[return-value]
        int(response.headers[f"x-ratelimit-{name}"]) for name in ("limit", "remaining", "reset")
    )


def assert_consistent(response: Any, limit: RateLimit, used: int) -> None:
    """The headers after `used` requests from a full bucket (used <= burst)."""
    per_token = 3600 / limit.per_hour
    assert rate_headers(response)[:2] == (limit.per_hour, limit.burst - used), response.headers
    # Reset: seconds until a request is allowed again: 0 while tokens are left, else
    # about one token's time at the hourly rate (less the refill since).
    reset = rate_headers(response)[2]
    if used < limit.burst:
        assert reset == 0, response.headers
    else:
        assert 0 < reset <= math.ceil(per_token), response.headers


def assert_limited(response: Any, limit: RateLimit, debt: int = 0) -> int:
    """A 429 from a bucket `debt` tokens below empty (what several processes admitted
    beyond the burst, which the refill pays back first)."""
    error = assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert str(limit.per_hour) in error["message"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= math.ceil((1 + debt) * 3600 / limit.per_hour)
    assert rate_headers(response)[:2] == (limit.per_hour, 0)
    assert rate_headers(response)[2] == retry_after  # when the next one is allowed
    return retry_after


def has_no_rate_headers(response: Any) -> bool:
    return not any(name.startswith("x-ratelimit-") for name in response.headers)


async def test_headers_count_down_on_every_response_then_429(low: Settings) -> None:
    async with running_app(low) as client:
        root = await login(client, low.admin_username or "", low.admin_password or "")
        _, viewer = await tenant_user(client, root, "acme", "free", "vic", "viewer")
        # Five requests, five outcomes: each takes a token and says how many are left.
        outcomes = [
            ("GET", "/api/v1/auth/me", 200),
            ("POST", "/api/v1/tenants", 403),  # viewers may not
            ("GET", f"/api/v1/pipelines/{uuid4()}", 404),
            ("GET", "/api/v1/pipelines?limit=0", 400),
            ("GET", "/api/v1/pipelines?cursor=junk", 400),
        ]
        for used, (method, path, status) in enumerate(outcomes, start=1):
            response = await client.request(method, path, headers=viewer)
            assert response.status_code == status, response.text
            assert_consistent(response, FREE, used)

        for _ in range(2):  # a refused request takes nothing and is refused again
            refused = await client.get("/api/v1/auth/me", headers=viewer)
            assert_limited(refused, FREE)
        # Unauthenticated requests are refused before any bucket: 401, no headers.
        anonymous = await client.get("/api/v1/auth/me")
        assert_error(anonymous, 401, "AUTHENTICATION_REQUIRED")
        assert has_no_rate_headers(anonymous)


async def test_each_plan_has_its_own_limit(low: Settings) -> None:
    async with running_app(low) as client:
        root = await login(client, low.admin_username or "", low.admin_password or "")
        free_tenant, free_user = await tenant_user(client, root, "small", "free", "fay", "viewer")
        pro_tenant, pro_user = await tenant_user(client, root, "big", "pro", "pat", "viewer")

        for used in range(1, PRO.burst + 1):
            assert_consistent(await client.get("/api/v1/auth/me", headers=pro_user), PRO, used)
        assert_limited(await client.get("/api/v1/auth/me", headers=pro_user), PRO)
        for used in range(1, FREE.burst + 1):
            assert_consistent(await client.get("/api/v1/auth/me", headers=free_user), FREE, used)
        assert_limited(await client.get("/api/v1/auth/me", headers=free_user), FREE)

        # Platform admins have the platform limit, also when acting in a free tenant.
        # (The platform bucket refills fast, so its exact count is not compared: only that
        # it is nowhere near a free tenant's burst.)
        acting = await client.get("/api/v1/pipelines", headers={**root, "X-Tenant-ID": free_tenant})
        assert acting.status_code == 200, acting.text
        limit, remaining, _ = rate_headers(acting)
        assert (limit, remaining > PLATFORM.burst - 100) == (PLATFORM.per_hour, True)

        # A tenant moved to another plan gets its limit from the next request on.
        moved = await client.put(
            f"/api/v1/tenants/{pro_tenant}", json={"plan": "free"}, headers=root
        )
        assert moved.status_code == 200, moved.text
        assert_limited(await client.get("/api/v1/auth/me", headers=pro_user), FREE)


async def test_each_principal_has_its_own_bucket(low: Settings) -> None:
    async with running_app(low) as client:
        root = await login(client, low.admin_username or "", low.admin_password or "")
        tenant_id, ada = await tenant_user(client, root, "acme", "free", "ada", "admin")
        bob = await new_user(client, root, tenant_id, "bob", "viewer")
        issued = await client.post(
            "/api/v1/api-keys", json={"name": "ci", "roles": ["viewer"]}, headers=ada
        )
        assert issued.status_code == 201, issued.text
        key = {"X-API-Key": issued.json()["key"]}
        ada_again = await login(client, "ada", PASSWORD)  # a second session of ada

        # ada used one token for the key; her second session draws on the same bucket.
        for used in range(2, FREE.burst + 1):
            headers = ada if used % 2 else ada_again
            assert_consistent(await client.get("/api/v1/auth/me", headers=headers), FREE, used)
        assert_limited(await client.get("/api/v1/auth/me", headers=ada), FREE)
        assert_limited(await client.get("/api/v1/auth/me", headers=ada_again), FREE)

        # bob and ada's key, in the same tenant on the same plan, each start full.
        assert_consistent(await client.get("/api/v1/auth/me", headers=bob), FREE, 1)
        assert_consistent(await client.get("/api/v1/auth/me", headers=key), FREE, 1)
        for used in range(2, FREE.burst + 1):
            assert_consistent(await client.get("/api/v1/pipelines", headers=key), FREE, used)
        assert_limited(await client.get("/api/v1/pipelines", headers=key), FREE)
        assert_consistent(await client.get("/api/v1/auth/me", headers=bob), FREE, 2)


async def test_public_routes_carry_no_rate_limit_headers(low: Settings) -> None:
    async with running_app(low) as client:
        root = await login(client, low.admin_username or "", low.admin_password or "")
        _, vic = await tenant_user(client, root, "acme", "free", "vic", "viewer")
        for _ in range(FREE.burst):
            await client.get("/api/v1/auth/me", headers=vic)
        assert_limited(await client.get("/api/v1/auth/me", headers=vic), FREE)

        good = {"username": "vic", "password": PASSWORD}
        tokens = await client.post("/api/v1/auth/login", json=good)
        public = [
            tokens,
            await client.post("/api/v1/auth/login", json={**good, "password": "wrong-password"}),
            await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": tokens.json()["refresh_token"]}
            ),
            await client.get("/health"),
            await client.get("/health/ready"),
        ]
        # A limited user can still log in and refresh (those routes are throttled by the
        # login throttle instead); none of the public answers speaks of rate limits.
        assert [r.status_code for r in public] == [200, 401, 200, 200, 200]
        for response in public:
            assert has_no_rate_headers(response), (response.request.url, response.headers)
        # The new session belongs to the same principal: still limited.
        fresh = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        assert_limited(await client.get("/api/v1/auth/me", headers=fresh), FREE)


async def test_the_limit_holds_across_api_processes(low: Settings) -> None:
    """Two API processes from the same settings (here two apps in one test, each with its
    own pools and syncer): requests alternated between them drain one burst, give or take
    the bound. Each answers from its own view, which learns what the other took when it
    syncs (done here after every request), so the second process, meeting vic for the
    first time, takes the bucket as full: one request more than the burst, no more."""
    async with running_app(low) as first, running_app(low, roles=frozenset()) as second:
        root = await login(first, low.admin_username or "", low.admin_password or "")
        _, vic = await tenant_user(first, root, "acme", "free", "vic", "viewer")

        admitted, answers = 0, [200, 200]
        while answers[-2:] != [429, 429]:  # until both refuse, one after the other
            app = (first, second)[len(answers) % 2]
            response = await app.get("/api/v1/auth/me", headers=vic)
            answers.append(response.status_code)
            if response.status_code == 200:
                admitted += 1
            else:
                assert_limited(response, FREE, debt=1)
            # In the app's own event loop (the test client's portal thread), as its
            # syncer would: awaited from the test's loop, the pool's wake-up goes to a
            # loop that is not listening, and the test hung there for good.
            assert app.blocking_portal.call(app.app.state.container.rate_limiter.sync)
            assert admitted <= FREE.burst + 2 * MAX_UNCONFIRMED
        assert admitted == FREE.burst + 1

        assert_limited(await first.get("/api/v1/auth/me", headers=vic), FREE, debt=1)
        assert_limited(await second.get("/api/v1/auth/me", headers=vic), FREE, debt=1)
