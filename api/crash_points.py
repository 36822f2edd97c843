"""Test only, off unless NORN_TEST_CRASH_AT is set: the process kills itself (SIGKILL) at a
named point of a request, so that an end-to-end test can hit a window a real crash would
hit only by chance (tests/e2e/test_api_killed_idempotency.py). Read once, when the app
is built; never set it on a server anyone uses.

NORN_TEST_CRASH_AT=<point>:<Idempotency-Key>: die when a request with that key reaches
the point. Points: `idempotency-after-command` (the command has appended, its response is
not yet kept) and `idempotency-after-record` (the response is kept, not yet sent)."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

ENV = "NORN_TEST_CRASH_AT"
POINTS = frozenset({"idempotency-after-command", "idempotency-after-record"})


@dataclass(frozen=True)
class CrashPoint:
    point: str
    key: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> CrashPoint | None:
        raw = env.get(ENV)
        if not raw:
            return None
        point, _, key = raw.partition(":")
        if point not in POINTS or not key:
            raise ValueError(
                f"{ENV} must be <point>:<Idempotency-Key>, point one of {sorted(POINTS)}"
            )
        return cls(point, key)

    def reached(self, point: str, key: str) -> None:
        if (point, key) == (self.point, self.key):
            os.kill(os.getpid(), signal.SIGKILL)
