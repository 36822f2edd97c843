"""Webhooks end to end: subscriptions over HTTP (the app with relay and projector), the
notifier role as bootstrap builds it (with a fast retry policy, run in the test's loop,
stopped and started again at will), and a local receiver on 127.0.0.1 that fails and
recovers. Every matching event is delivered, signed with the secret the create answered,
duplicates only with the same delivery id; the secret is in no read and nowhere in the
database in plaintext."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import psycopg
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest

from api.bootstrap import build_container, notifier_role
from infrastructure import webhook_fanout
from infrastructure.metrics import NornMetrics
from infrastructure.settings import Settings
from infrastructure.webhook_deliveries import claim
from infrastructure.webhook_fanout import fan_out
from infrastructure.webhook_protocol import RetryPolicy, headers, verify
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    make_tenant_user,
    platform_admin,
    running_app,
    visible,
)
from tests.integration.test_secrets_at_rest import database_text, variants
from tests.support.webhook_receiver import Received, receiver

BASE = "/api/v1/webhooks"
FAST = RetryPolicy(base=0.05, cap=0.2, window=60.0, disable_after=20)


@contextlib.asynccontextmanager
async def notifier(
    settings: Settings, policy: RetryPolicy = FAST, **options: Any
) -> AsyncIterator[NornMetrics]:
    """A notifier role of its own container, running until the block ends: its metrics."""
    assert settings.database_url
    container = build_container(settings, settings.database_url, settings.nats_url or "")
    role = notifier_role(container, policy, interval=0.05, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(role.run(stop))
    try:
        yield container.metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        container.close()


def open_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, allow_private_networks=True)


async def tenant_admin(client: AsyncTestClient, settings: Settings, name: str) -> dict[str, str]:
    root = await platform_admin(client, settings)
    _, headers = await make_tenant_user(client, root, name, role="admin")
    return headers


async def create_webhook(
    client: AsyncTestClient, headers: dict[str, str], url: str, **fields: Any
) -> dict[str, Any]:
    body = {"url": url, "events": ["norn.pipeline.*"], **fields}
    response = await client.post(BASE, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def check_signed(request: Received, secret: str) -> None:
    timestamp = int(request.headers["x-norn-timestamp"])
    assert verify(secret, timestamp, request.body, request.headers["x-norn-signature"])
    assert not verify(secret + "x", timestamp, request.body, request.headers["x-norn-signature"])


def by_event(requests: list[Received]) -> dict[str, set[str]]:
    """Event id -> the delivery ids it was sent under."""
    seen: dict[str, set[str]] = {}
    for request in requests:
        seen.setdefault(request.event["id"], set()).add(request.headers["x-norn-delivery"])
    return seen


async def test_creation_is_refused_for_private_addresses_and_bad_fields(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-refused")
        cases = [
            ({"url": "http://127.0.0.1:9/x", "events": ["*"]}, "url"),
            ({"url": "ftp://example.com/x", "events": ["*"]}, "url"),
            ({"url": "https://example.com/x", "events": ["norn.[run"]}, "events[0]"),
            ({"url": "https://example.com/x", "events": []}, "events"),
            ({"url": "https://example.com/x", "events": ["*"], "secret": "short"}, "secret"),
        ]
        for body, field in cases:
            response = await client.post(BASE, json=body, headers=admin)
            error = assert_error(response, 422, "VALIDATION_ERROR")
            assert any(d["field"].endswith(field) for d in error["details"]), error
        editor_root = await platform_admin(client, settings)
        _, editor = await make_tenant_user(client, editor_root, "hooks-editor", role="editor")
        body = {"url": "https://93.184.215.14/x", "events": ["*"]}
        assert_error(await client.post(BASE, json=body, headers=editor), 403, "PERMISSION_DENIED")
        assert_error(await client.get(BASE, headers=editor), 403, "PERMISSION_DENIED")
        # The answer holds the secret: it is not kept for replays, so a key is refused.
        keyed = {**admin, "Idempotency-Key": "k1"}
        assert_error(await client.post(BASE, json=body, headers=keyed), 422, "VALIDATION_ERROR")
        created = await client.post(BASE, json=body, headers=admin)
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"


async def test_retries_deliver_every_event_signed_and_duplicates_share_an_id(
    settings: Settings,
) -> None:
    settings = open_settings(settings)
    async with receiver(fail_first=4) as hook, running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-retry")
        created = await create_webhook(client, admin, hook.url)
        secret = created["secret"]
        await visible(client, admin, f"{BASE}/{created['id']}", created["position"])
        async with notifier(settings) as metrics:
            names = [f"p{i}" for i in range(3)]
            pipelines = [await create_pipeline(client, admin, name) for name in names]
            await hook.wait_for(lambda: len(by_event(hook.accepted())) >= 3)
            delivered = metrics.webhook_deliveries.labels("delivered")
            await hook.wait_for(lambda: delivered._value.get() >= 3)  # outcomes recorded
        scraped = generate_latest(metrics.registry).decode()
        assert 'norn_webhook_deliveries_total{outcome="delivered"} 3.0' in scraped
        assert 'norn_webhook_deliveries_total{outcome="failed"} 4.0' in scraped
        assert "norn_webhook_delivery_latency_seconds_count 3.0" in scraped
        expected = {p["id"] for p in pipelines}
        delivered = {r.event["subject"] for r in hook.accepted()}
        assert expected <= delivered
        assert hook.requests[0].status == 500  # it did fail first
        for request in hook.requests:
            check_signed(request, secret)
            assert request.event["type"].startswith("norn.pipeline.")
        # Every attempt of one event carries one delivery id, and no two events share one.
        assert all(len(ids) == 1 for ids in by_event(hook.requests).values())
        ids = [next(iter(v)) for v in by_event(hook.requests).values()]
        assert len(ids) == len(set(ids))

        listing = await client.get(f"{BASE}/{created['id']}/deliveries", headers=admin)
        assert listing.status_code == 200, listing.text
        rows = listing.json()["items"]
        assert {r["status"] for r in rows} == {"delivered"}
        assert sum(r["attempts"] for r in rows) == len(hook.requests)
        assert all(r["response_code"] == 200 for r in rows)

        # The secret is in no read response and nowhere in the database in plaintext.
        shown = await client.get(f"{BASE}/{created['id']}", headers=admin)
        listed = await client.get(BASE, headers=admin)
        for text in (shown.text, listed.text, listing.text):
            assert secret not in text
        stored = database_text(settings.database_url or "")
        assert not any(v in stored for v in variants(secret))


async def test_the_notifier_resumes_after_a_restart_without_losing_events(
    settings: Settings,
) -> None:
    settings = open_settings(settings)
    async with receiver() as hook, running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-restart")
        await create_webhook(client, admin, hook.url, secret="s" * 20)
        async with notifier(settings):
            first = await create_pipeline(client, admin, "before")
            await hook.wait_for(lambda: len(hook.accepted()) >= 1)
        # Stopped: these wait in the store for the next notifier.
        later = [await create_pipeline(client, admin, f"while-down-{i}") for i in range(3)]
        await asyncio.sleep(0.3)
        assert len(hook.requests) == 1
        async with notifier(settings):
            await hook.wait_for(lambda: len(by_event(hook.accepted())) >= 4)
        subjects = {r.event["subject"] for r in hook.accepted()}
        assert {first["id"], *(p["id"] for p in later)} <= subjects
        assert len(hook.requests) == len(by_event(hook.requests))  # nothing sent twice


async def test_a_webhook_failing_20_times_is_disabled_by_an_event(settings: Settings) -> None:
    settings = open_settings(settings)
    async with receiver(answer=lambda _: 503) as hook, running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-disable")
        created = await create_webhook(client, admin, hook.url)
        async with notifier(settings):
            path = f"{BASE}/{created['id']}"
            await visible(client, admin, path, created["position"])
            await create_pipeline(client, admin, "doomed")

            async def disabled() -> dict[str, Any]:
                while True:
                    body = (await client.get(path, headers=admin)).json()
                    if not body["active"]:
                        return body
                    await asyncio.sleep(0.1)

            body = await asyncio.wait_for(disabled(), 30)
        assert body["disabled_reason"] == "20 consecutive failed deliveries"
        assert len(hook.requests) >= 20
        # Re-activating resumes deliveries.
        patched = await client.patch(path, json={"active": True}, headers=admin)
        assert patched.status_code == 200, patched.text
        assert patched.json()["active"] is True


async def test_ping_redeliver_and_isolation(settings: Settings) -> None:
    settings = open_settings(settings)
    async with receiver() as hook, running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-ping")
        other = await tenant_admin(client, settings, "hooks-other")
        created = await create_webhook(client, admin, hook.url)
        secret, path = created["secret"], f"{BASE}/{created['id']}"
        await visible(client, admin, path, created["position"])
        async with notifier(settings):
            ping = await client.post(f"{path}:ping", headers=admin)
            assert ping.status_code == 202, ping.text
            await hook.wait_for(lambda: len(hook.accepted()) >= 1)
            [pinged] = hook.requests
            assert pinged.event["type"] == "norn.webhook.ping"
            assert pinged.headers["x-norn-delivery"] == ping.json()["delivery_id"]
            check_signed(pinged, secret)

            await create_pipeline(client, admin, "redelivered")
            await hook.wait_for(lambda: len(hook.accepted()) >= 2)
            delivery = hook.requests[1].headers["x-norn-delivery"]
            again = await client.post(f"{path}/deliveries/{delivery}:redeliver", headers=admin)
            assert again.status_code == 202, again.text
            await hook.wait_for(lambda: len(hook.accepted()) >= 3)
            assert hook.requests[2].headers["x-norn-delivery"] == delivery
            assert hook.requests[2].body == hook.requests[1].body

        for method, url in (
            ("GET", path),
            ("PATCH", path),
            ("DELETE", path),
            ("GET", f"{path}/deliveries"),
            ("POST", f"{path}:ping"),
            ("POST", f"{path}/deliveries/{delivery}:redeliver"),
        ):
            kwargs: dict[str, Any] = {"json": {"active": False}} if method == "PATCH" else {}
            response = await client.request(method, url, headers=other, **kwargs)
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        missing = f"{path}/deliveries/{created['id']}:redeliver"
        assert_error(await client.post(missing, headers=admin), 404, "RESOURCE_NOT_FOUND")

        deleted = await client.delete(path, headers=admin)
        assert deleted.status_code == 200, deleted.text
        after = {"min_position": deleted.json()["position"]}
        gone = await client.get(path, params=after, headers=admin)
        assert_error(gone, 404, "RESOURCE_NOT_FOUND")


async def test_a_slow_receiver_does_not_hold_up_another_webhooks_deliveries(
    settings: Settings,
) -> None:
    settings = open_settings(settings)
    async with (
        receiver(delay=4.0) as slow,
        receiver() as fast,
        running_app(settings) as client,
    ):
        admin = await tenant_admin(client, settings, "hooks-slow")
        hook = await create_webhook(client, admin, slow.url)
        await visible(client, admin, f"{BASE}/{hook['id']}", hook["position"])
        await create_webhook(client, admin, fast.url)
        async with notifier(settings, timeout=3.0):
            await create_pipeline(client, admin, "first")
            await fast.wait_for(lambda: len(fast.accepted()) >= 1 and len(slow.requests) >= 1)
            # The slow receiver holds its delivery for 3 s: the next events still go out.
            started = asyncio.get_running_loop().time()
            for name in ("second", "third"):
                await create_pipeline(client, admin, name)
            await fast.wait_for(lambda: len(fast.accepted()) >= 3, seconds=2.5)
            assert asyncio.get_running_loop().time() - started < 2.5

            async def timed_out() -> list[dict[str, Any]]:
                listing = f"{BASE}/{hook['id']}/deliveries"
                while True:
                    rows = (await client.get(listing, headers=admin)).json()["items"]
                    if rows and all(r["last_error"] for r in rows):
                        return rows
                    await asyncio.sleep(0.2)

            rows = await asyncio.wait_for(timed_out(), 10)
        assert {r["status"] for r in rows} == {"failed"}
        assert all("Timeout" in r["last_error"] for r in rows), [r["last_error"] for r in rows]


async def test_the_app_runs_the_notifier_role_as_norn_serve_does(settings: Settings) -> None:
    settings = open_settings(settings)
    roles = frozenset({"relay", "projector", "notifier"})
    async with receiver() as hook, running_app(settings, roles=roles) as client:
        admin = await tenant_admin(client, settings, "hooks-serve")
        created = await create_webhook(client, admin, hook.url)
        pipeline = await create_pipeline(client, admin, "served")
        await hook.wait_for(lambda: len(hook.accepted()) >= 1)
        assert hook.requests[0].event["subject"] == pipeline["id"]
        check_signed(hook.requests[0], created["secret"])
        counted = 'norn_webhook_deliveries_total{outcome="delivered"} 1.0'

        for _ in range(200):  # the outcome is recorded just after the answer
            if counted in (await client.get("/metrics")).text:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the delivery was not counted on /metrics")


async def test_a_notifier_that_dies_mid_attempt_leaves_the_delivery_to_the_next(
    settings: Settings,
) -> None:
    """A notifier claimed a delivery, sent it, and died before recording it: once its
    lease ends, the next notifier sends it again, under the same delivery id."""
    settings = open_settings(settings)
    async with receiver() as hook, running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-crash")
        created = await create_webhook(client, admin, hook.url)
        pipeline = await create_pipeline(client, admin, "in-flight")
        # The one that dies: fans the event out, claims its delivery, sends it, no more.
        async with await psycopg.AsyncConnection.connect(
            settings.database_url or "", autocommit=True
        ) as conn:
            deadline = asyncio.get_running_loop().time() + 10
            while not (await fan_out(conn, 500))[0] or not (
                claimed := await claim(conn, 10, lease=2.0, window=60.0)
            ):
                assert asyncio.get_running_loop().time() < deadline, "nothing to claim"
            [due] = claimed
            sent = headers(created["secret"], due.id, due.event_type, due.body, time.time())
            async with httpx.AsyncClient() as raw:
                await raw.post(due.url, content=due.body, headers=sent)
        died_at = time.monotonic()
        async with notifier(settings):
            await hook.wait_for(lambda: len(hook.requests) >= 2)
            again_after = time.monotonic() - died_at
        first, second = hook.requests
        assert first.event["subject"] == second.event["subject"] == pipeline["id"]
        assert first.headers["x-norn-delivery"] == second.headers["x-norn-delivery"]
        assert again_after >= 1.5  # not before the dead one's lease ended
        check_signed(second, created["secret"])


async def _fanned_out_to(conn: psycopg.AsyncConnection, position: int) -> int:
    """Fan out until the notifier's position is at least `position`: deliveries queued."""
    queued = 0
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        passed, at, made = await fan_out(conn, 500)
        queued += made
        if at is not None and at >= position:
            return queued
        assert asyncio.get_running_loop().time() < deadline, f"not fanned out to {position}"
        if not passed:
            await asyncio.sleep(0.05)


async def test_with_no_webhook_anywhere_only_webhook_events_are_decoded(
    settings: Settings, monkeypatch: Any
) -> None:
    settings = open_settings(settings)
    decoded: list[str] = []
    real = webhook_fanout._decoded

    def counting(note: Any) -> Any:
        decoded.append(note.topic)
        return real(note)

    monkeypatch.setattr(webhook_fanout, "_decoded", counting)
    whole_rows: list[int] = []  # reads of events with their states
    read_whole = webhook_fanout.read_notifications

    async def counting_reads(*args: Any, **kwargs: Any) -> Any:
        notes = await read_whole(*args, **kwargs)
        whole_rows.append(len(notes))
        return notes

    monkeypatch.setattr(webhook_fanout, "read_notifications", counting_reads)
    async with running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-none")
        before = await create_pipeline(client, admin, "before")
        async with await psycopg.AsyncConnection.connect(
            settings.database_url or "", autocommit=True
        ) as conn:
            assert await _fanned_out_to(conn, before["position"]) == 0
            assert decoded == []  # the tenant, its user and the pipeline: none decoded
            # Nor read whole: with no webhook, passed on their topics alone.
            assert sum(whole_rows) == 0, whole_rows
            await create_webhook(client, admin, "http://127.0.0.1:9/hook")
            after = await create_pipeline(client, admin, "after")
            assert await _fanned_out_to(conn, after["position"]) >= 1
            assert decoded[0] == "domain.webhook:WebhookCreated"
            assert any(topic.startswith("domain.pipeline:") for topic in decoded)


async def test_claims_take_a_few_of_each_webhook_and_none_of_a_busy_one(
    settings: Settings,
) -> None:
    settings = open_settings(settings)
    async with running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-fair")
        many = await create_webhook(client, admin, "http://127.0.0.1:9/many")
        few = await create_webhook(client, admin, "http://127.0.0.1:9/few", events=["norn.job.*"])
        last = [await create_pipeline(client, admin, f"p{i}") for i in range(6)][-1]
        async with await psycopg.AsyncConnection.connect(
            settings.database_url or "", autocommit=True
        ) as conn:
            # every event fanned out (the last pipeline's among them)
            queued = await _fanned_out_to(conn, last["position"])
            cur = await conn.execute("SELECT count(*) FROM webhook_deliveries")
            assert queued == (await cur.fetchone() or (0,))[0] >= 6  # what fan_out says it queued
            await conn.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id,"
                " event_type, event_time, body) SELECT gen_random_uuid(), webhook_id,"
                " tenant_id, 'e', 'norn.job.created.v1', now(), '{}' FROM webhook_routes"
                " WHERE webhook_id = %s",
                (few["id"],),
            )
            busy = await claim(conn, 10, 30.0, 60.0, per_webhook=3, busy=[UUID(many["id"])])
            assert [str(d.webhook_id) for d in busy] == [few["id"]]
            fair = await claim(conn, 10, 30.0, 60.0, per_webhook=3)
            assert sorted(str(d.webhook_id) for d in fair) == [many["id"]] * 3


async def test_a_rotated_secret_signs_what_follows_and_is_shown_once(settings: Settings) -> None:
    settings = open_settings(settings)
    async with receiver() as hook, running_app(settings) as client:
        admin = await tenant_admin(client, settings, "hooks-rotate")
        other = await tenant_admin(client, settings, "hooks-rotate-other")
        created = await create_webhook(client, admin, hook.url)
        path = f"{BASE}/{created['id']}"
        rotated = await client.post(f"{path}:rotate-secret", headers=admin)
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        new = rotated.json()["secret"]
        assert new != created["secret"] and len(new) >= 40
        given = await client.post(
            f"{path}:rotate-secret", json={"secret": "a-secret-of-our-own"}, headers=admin
        )
        assert given.status_code == 200 and given.json()["secret"] == "a-secret-of-our-own"
        short = await client.post(f"{path}:rotate-secret", json={"secret": "short"}, headers=admin)
        assert_error(short, 422, "VALIDATION_ERROR")
        assert_error(
            await client.post(f"{path}:rotate-secret", headers=other), 404, "RESOURCE_NOT_FOUND"
        )
        shown = await client.get(
            path, params={"min_position": given.json()["position"]}, headers=admin
        )
        assert shown.json()["version"] == given.json()["version"] and "secret" not in shown.json()
        async with notifier(settings):
            ping = await client.post(f"{path}:ping", headers=admin)
            assert ping.status_code == 202, ping.text
            await hook.wait_for(lambda: len(hook.accepted()) >= 1)
        check_signed(hook.requests[0], "a-secret-of-our-own")
        with psycopg.connect(settings.database_url or "") as conn:
            stored = conn.execute(
                "SELECT count(*) FROM norn_events"
                " WHERE position(%s in convert_from(state, 'UTF8')) > 0",
                (new,),
            ).fetchone()
        assert stored == (0,)
