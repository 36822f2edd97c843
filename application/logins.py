"""Throttled logins: slowed after a few failures, then locked for a while, per username
and per client address, with the bookkeeping in Postgres shared by every API process
(infrastructure/login_throttle.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from application.errors import AuthenticationFailed, RateLimited
from application.ports import LoginThrottle
from domain.errors import WrongPassword

T = TypeVar("T")


@dataclass(frozen=True)
class LoginPolicy:
    """Failed logins: each one past `slow_after` waits longer (doubling up to
    `max_delay`); `lock_after_user` failures lock the username, `lock_after_address`
    lock the client address, for `lock_seconds`. Failures are forgotten after a lock
    or a success for that username."""

    slow_after: int = 3
    max_delay: float = 4.0
    lock_after_user: int = 10
    lock_after_address: int = 50
    lock_seconds: float = 900.0

    def delay(self, failures: int) -> float:
        if failures < self.slow_after:
            return 0.0
        return float(min(self.max_delay, 0.25 * 2 ** (failures - self.slow_after)))


class LoginService:
    """Login with throttling shared by every API process: slowed after a few failures,
    then locked for a while, per username and per client address. A locked username is
    refused even with the right password, and unknown usernames are throttled exactly
    like known ones, so the throttle reveals nothing about which names exist."""

    def __init__(
        self,
        throttle: LoginThrottle,
        policy: LoginPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._throttle = throttle
        self._policy = policy
        self._sleep = sleep  # how a slowed login waits (tests record it instead)

    async def throttled(
        self, username: str, client_address: str, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """Await `attempt` (a password check: logging in, or proving the current password
        to change it) under the throttle of `username` and the client address: a wrong
        password (AuthenticationFailed, or WrongPassword) counts as a failed login, so
        guessing through any route meets the same limit."""
        keys = [f"user:{username.strip().casefold()}", f"address:{client_address}"]
        policy = self._policy
        limits = [policy.lock_after_user, policy.lock_after_address]
        attempts = await self._throttle.begin(keys, limits, policy.lock_seconds)
        locked_for = max(a.locked_for for a in attempts)
        if locked_for > 0:
            raise RateLimited(
                f"too many failed logins; try again in {int(locked_for) + 1} seconds",
                locked_for,
            )
        delay = policy.delay(max(a.failures for a in attempts))
        if delay:
            await self._sleep(delay)
        try:
            result = await attempt()
        except (AuthenticationFailed, WrongPassword):
            await self._throttle.failed(keys, limits, policy.lock_seconds)
            raise
        # Anything else (the store down, the client gone) leaves the attempt counted.
        await self._throttle.succeeded(keys[0], keys[1:])
        return result
