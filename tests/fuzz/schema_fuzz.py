"""The API fuzzed from its own description (CI runs this; README "Tests"): schemathesis
generates requests from /schema/openapi.json, valid and invalid, and checks every
answer: never a 5xx, and always a status, content type and body the description
declares. Once as a platform admin and once as a tenant's admin, each bounded in time.

    .venv/bin/python tests/fuzz/schema_fuzz.py [--max-time 60]

Starts its own `norn serve` (bench/harness.py: a fresh database on the servers named by
NORN_BENCH_DATABASE_URL / NORN_BENCH_NATS_URL, else embedded ones) and removes it after.
Exits non-zero when schemathesis found anything; its report says what and how to
reproduce it."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from harness import ADMIN, PASSWORD, norn_server

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    )
)
# The live feed never ends, and a logout would end the session the run uses.
EXCLUDED = r"^/api/v1/(events/stream|auth/logout)"


async def principals(base: str) -> list[tuple[str, str]]:
    """(name, Authorization header) of a platform admin and of a tenant's admin."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post("/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD})
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        tenant = await c.post("/api/v1/tenants", json={"name": "fuzz"}, headers=admin)
        user = {
            "username": "fuzz-admin",
            "password": "battery-horse-staple-42",
            "tenant_id": tenant.json()["id"],
            "roles": ["admin"],
        }
        (await c.post("/api/v1/users", json=user, headers=admin)).raise_for_status()
        r = await c.post(
            "/api/v1/auth/login", json={"username": user["username"], "password": user["password"]}
        )
        return [
            ("platform admin", admin["Authorization"]),
            ("tenant admin", f"Bearer {r.json()['access_token']}"),
        ]


def fuzz(base: str, authorization: str, max_time: int) -> int:
    schemathesis = str(Path(sys.executable).parent / "schemathesis")
    command = [
        schemathesis,
        "run",
        f"{base}/schema/openapi.json",
        "--checks",
        CHECKS,
        "--exclude-path-regex",
        EXCLUDED,
        "--max-time",
        str(max_time),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "15",
        "--header",
        f"Authorization: {authorization}",
    ]
    return subprocess.run(command, check=False).returncode  # noqa: S603


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-time", type=int, default=60, help="seconds per principal")
    args = parser.parse_args()
    failed = []
    with norn_server() as server:
        for name, authorization in asyncio.run(principals(server.base)):
            print(f"== fuzzing as a {name} ({args.max_time} s)", flush=True)
            if fuzz(server.base, authorization, args.max_time) != 0:
                failed.append(name)
    if failed:
        print(f"schemathesis found problems as: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
