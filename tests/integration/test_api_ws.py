"""The WebSocket feed (GET /api/v1/ws) over a real uvicorn, PostgreSQL and NATS:
authentication three ways and its refusals, subscriptions with the SSE feed's filters,
resume with `after` under concurrent writes compared with the store, isolation between
tenants, revoked credentials closing with 4401 within 2 s, a slow consumer told where to
resume, and the per-plan limit on open streams, SSE and WebSocket together."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from litestar.connection import WebSocket

from api import feed_socket
from api.controllers import ws as ws_controller
from infrastructure import event_feed
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    serving_app,
    wait_ready,
)
from tests.integration.ws_client import (
    Frame,
    Ws,
    events_of,
    raw_socket,
    subscribed,
)
from tests.integration.ws_client import (
    feed_socket as opened,
)

CREATED = "norn.pipeline.created.v1"
STREAM = "/api/v1/events/stream"
PASSWORD = "correct-horse-battery-staple"


def _created(pipeline_id: str, subscription: Any = None) -> Any:
    def done(frame: Frame) -> bool:
        return (
            frame["type"] == "event"
            and frame["event"]["type"] == CREATED
            and frame["event"]["subject"] == pipeline_id
            and (subscription is None or frame["subscription"] == subscription)
        )

    return done


def _revised(pipeline_id: str, subscription: Any) -> Any:
    def done(frame: Frame) -> bool:
        return (
            frame["type"] == "event"
            and frame["event"]["type"] == "norn.pipeline.revised.v1"
            and frame["event"]["subject"] == pipeline_id
            and frame["subscription"] == subscription
        )

    return done


async def _admin(http: httpx.AsyncClient, settings: Settings) -> dict[str, str]:
    return await login(http, settings.admin_username or "", settings.admin_password or "")


async def _api_key(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    made = await http.post(
        "/api/v1/api-keys", json={"name": "k", "roles": ["viewer"]}, headers=headers
    )
    assert made.status_code == 201, made.text
    return made.json()


async def _refused(ws: Ws, close: int, code: str) -> str:
    """The connection's error frame, then its close with `close`; the message."""
    closing, reason, frames = await ws.closed(seconds=10)
    assert closing == close, (closing, reason, frames)
    assert [f["type"] for f in frames] == ["error"], frames
    assert frames[0]["code"] == code, frames
    assert reason and frames[0]["message"]
    return str(frames[0]["message"])


async def test_authentication_by_header_query_or_first_message_and_refusals(
    settings: Settings, monkeypatch: Any
) -> None:
    monkeypatch.setattr(ws_controller, "AUTH_SECONDS", 0.5)
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await _admin(http, settings)
        tenant_id, ada = await make_tenant_user(http, admin, "acme", "admin")
        token = ada["Authorization"].removeprefix("Bearer ")
        key = (await _api_key(http, ada))["key"]

        for headers, query in (
            (ada, ""),
            ({"X-API-Key": key}, ""),
            ({"Authorization": f"Bearer {key}"}, ""),
            ({}, f"token={token}"),
            ({}, f"token={key}"),
        ):
            async with raw_socket(http, headers, query) as ws:
                assert await ws.next() == {"type": "ready", "tenant": tenant_id}
        for first in ({"type": "auth", "token": token}, {"type": "auth", "api_key": key}):
            async with raw_socket(http) as ws:
                await ws.send(**first)
                assert await ws.next() == {"type": "ready", "tenant": tenant_id}
                await subscribed(ws, 1)  # and it works

        async with raw_socket(http) as ws:  # nothing sent: refused after AUTH_SECONDS
            await _refused(ws, 4401, "AUTHENTICATION_REQUIRED")
        async with raw_socket(http) as ws:
            await ws.send(type="subscribe", id="s")
            await _refused(ws, 4401, "AUTHENTICATION_REQUIRED")
        async with raw_socket(http) as ws:
            await ws.send(type="auth", token="not-a-token")
            await _refused(ws, 4401, "AUTHENTICATION_REQUIRED")
        async with raw_socket(http, {}, "token=nrn_not_a_key") as ws:
            await _refused(ws, 4401, "AUTHENTICATION_REQUIRED")
        async with raw_socket(http, {"Authorization": "Bearer nope"}) as ws:
            await _refused(ws, 4401, "AUTHENTICATION_REQUIRED")
        async with raw_socket(http, ada, "after=3") as ws:
            message = await _refused(ws, 4400, "VALIDATION_ERROR")
            assert "after" in message
        async with raw_socket(http, {**admin, "X-Tenant-ID": "nope"}) as ws:
            await _refused(ws, 4400, "VALIDATION_ERROR")
        # A well-formed id of no tenant: not found, as over HTTP (not a credentials error).
        no_tenant = {**admin, "X-Tenant-ID": "00000000-0000-4000-8000-000000000000"}
        async with raw_socket(http, no_tenant) as ws:
            await _refused(ws, 4404, "RESOURCE_NOT_FOUND")


async def test_subscriptions_filter_answer_errors_without_closing_and_unsubscribe(
    settings: Settings, monkeypatch: Any
) -> None:
    monkeypatch.setattr(feed_socket, "MAX_SUBSCRIPTIONS", 5)
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await _admin(http, settings)
        tenant_id, editor = await make_tenant_user(http, admin, "acme", "editor")
        first = await create_pipeline(http, editor, "first")
        async with opened(http, editor) as ws:
            await subscribed(ws, "all")
            await subscribed(ws, "created", types=["norn.pipeline.created.*"])
            await subscribed(ws, 7, resources=f"pipeline:{first['id']}")
            await subscribed(ws, "mine", actor=first["created_by"], after=first["position"])

            # Refusals name the field and carry the message's id; the connection goes on.
            for message, code, field in (
                ({"type": "subscribe", "id": "all"}, "RESOURCE_CONFLICT", "id"),
                ({"type": "subscribe", "id": "x", "after": 10**9}, "VALIDATION_ERROR", "after"),
                ({"type": "subscribe", "id": "x", "after": -1}, "VALIDATION_ERROR", "after"),
                ({"type": "subscribe", "id": "x", "resources": ["widget:1"]}, None, "resources"),
                ({"type": "subscribe", "id": "x", "colour": "red"}, None, "colour"),
                ({"type": "subscribe"}, "VALIDATION_ERROR", "id"),
                ({"type": "dance", "id": "x"}, "VALIDATION_ERROR", "type"),
                ({"type": "unsubscribe", "id": "x"}, "RESOURCE_NOT_FOUND", "id"),
            ):
                error = await ws.answer(**message)
                assert error["type"] == "error", (message, error)
                assert error["code"] == (code or "VALIDATION_ERROR"), error
                assert [d["field"] for d in error["details"]] == [field], error
                if "id" in message:
                    assert error["id"] == message["id"], error
            await subscribed(ws, "fifth", types="norn.nothing.*")
            over = await ws.answer(type="subscribe", id="sixth")
            assert over["code"] == "QUOTA_EXCEEDED", over
            assert over["details"][0] | {"message": ""} == {
                "field": "subscriptions",
                "message": "",
                "limit": 5,
                "used": 5,
            }
            assert await ws.answer(type="unsubscribe", id="fifth") == {"type": "ack", "id": "fifth"}
            await ws.conn.send("not json")
            error = await ws.until(lambda f: f["type"] == "error")
            assert error[-1]["code"] == "VALIDATION_ERROR" and "id" not in error[-1]
            assert await ws.answer(type="ping", id="p1") == {"type": "pong", "id": "p1"}
            # A later `auth` swaps in fresh credentials of the same principal only.
            fresh = await login(http, "acme-editor", PASSWORD)
            token = fresh["Authorization"][7:]
            assert await ws.answer(type="auth", id="a", token=token) == {"type": "ack", "id": "a"}
            someone_else = await ws.answer(type="auth", id="b", token=admin["Authorization"][7:])
            assert someone_else["code"] == "AUTHENTICATION_REQUIRED", someone_else
            bad = await ws.answer(type="auth", id="c", token="nope")
            assert bad["code"] == "AUTHENTICATION_REQUIRED", bad

            second = await create_pipeline(http, editor, "second")
            revised = await http.put(
                f"/api/v1/pipelines/{first['id']}",
                json={"name": "first", "description": "v2", "steps": first["steps"]},
                headers=editor,
            )
            assert revised.status_code == 200, revised.text
            wanted = [
                *(_revised(first["id"], sub) for sub in (7, "all", "mine")),
                *(_created(second["id"], sub) for sub in ("created", "all", "mine")),
            ]
            start = len(ws.seen)
            await ws.until(lambda _: all(any(w(f) for f in ws.seen[start:]) for w in wanted))
            frames = [f for f in ws.seen if f["type"] == "event"]
            assert {e["tenant"] for e in events_of(frames, "all")} == {tenant_id}
            created = events_of(frames, "created")  # `first` too, if the relay was late
            assert {e["type"] for e in created} == {CREATED}
            assert [e["subject"] for e in created][-1:] == [second["id"]]
            assert {e["subject"] for e in created} <= {first["id"], second["id"]}
            assert {e["subject"] for e in events_of(frames, 7)} == {first["id"]}
            # `mine` replayed from after `first`'s append, then went on live: what the
            # live `all` saw (all of it that actor's).
            all_positions = [
                e["position"] for e in events_of(frames, "all") if e["position"] > first["position"]
            ]
            assert [e["position"] for e in events_of(frames, "mine")][-len(all_positions) :] == (
                all_positions
            )

            assert await ws.answer(type="unsubscribe", id="all") == {"type": "ack", "id": "all"}
            third = await create_pipeline(http, editor, "third")
            after_ack = await ws.until(_created(third["id"], "created"))
            assert not events_of(after_ack, "all")
            await subscribed(ws, "all")  # the id is free again


def _tenant_positions(settings: Settings, tenant_id: str, after: int, upto: int) -> list[int]:
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT notification_id FROM norn_events WHERE notification_id > %s"
            " AND notification_id <= %s"
            " AND convert_from(state, 'UTF8')::jsonb->>'tenant_id' = %s ORDER BY 1",
            (after, upto, tenant_id),
        ).fetchall()
    return [row[0] for row in rows]


async def test_resume_with_after_under_concurrent_writes_has_no_gap_and_no_duplicate(
    settings: Settings,
) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await _admin(http, settings)
        # A tenant admin reads every event of its tenant (usage bookkeeping too).
        tenant_id, ada = await make_tenant_user(http, admin, "acme", "admin")
        other_id, other = await make_tenant_user(http, admin, "globex", "admin")
        for tenant in (tenant_id, other_id):
            lifted = await http.put(
                f"/api/v1/tenants/{tenant}/quotas", json={"max_pipelines": 100_000}, headers=admin
            )
            assert lifted.status_code == 200, lifted.text
        stop = asyncio.Event()
        made: list[dict[str, Any]] = []

        async def writer(headers: dict[str, str], prefix: str, into: list[Any]) -> None:
            n = 0
            while not stop.is_set():
                into.append(await create_pipeline(http, headers, f"{prefix}-{n}"))
                n += 1

        writing = [
            asyncio.create_task(writer(ada, "a", made)),
            asyncio.create_task(writer(ada, "b", made)),
            asyncio.create_task(writer(other, "o", [])),  # never seen by acme
        ]
        try:
            async with opened(http, ada) as first:
                await subscribed(first, "s")
                await first.until(lambda f: len(made) >= 3 and f["type"] == "event")
                got = events_of(first.seen, "s")
            await asyncio.sleep(0.3)  # away: events pass meanwhile
            async with opened(http, {}, f"token={ada['Authorization'][7:]}") as second:
                await subscribed(second, "s", after=got[-1]["position"])
                await asyncio.sleep(0.3)
                stop.set()
                await asyncio.gather(*writing)
                await second.until(_created(made[-1]["id"], "s"))
                resumed = events_of(second.seen, "s")
        finally:
            stop.set()
            await asyncio.gather(*writing, return_exceptions=True)
        positions = [e["position"] for e in got + resumed]
        assert {e["tenant"] for e in got + resumed} == {tenant_id}
        assert positions == _tenant_positions(settings, tenant_id, positions[0] - 1, positions[-1])
        assert len(made) > 5


def _subjects(ws: Ws) -> set[str]:
    return {e["subject"] for e in events_of(ws.seen)}


def _viewer(username: str, tenant_id: str) -> dict[str, Any]:
    return {"username": username, "password": PASSWORD, "tenant_id": tenant_id, "roles": ["viewer"]}


async def test_a_tenant_sees_none_of_another_tenants_events_and_a_viewer_no_admin_events(
    settings: Settings,
) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await _admin(http, settings)
        tenant_a, a_admin = await make_tenant_user(http, admin, "acme", "admin")
        _, b = await make_tenant_user(http, admin, "globex", "admin")
        viewer = await http.post(
            "/api/v1/users",
            json={
                "username": "acme-v",
                "password": PASSWORD,
                "tenant_id": tenant_a,
                "roles": ["viewer"],
            },
            headers=a_admin,
        )
        assert viewer.status_code == 201, viewer.text
        a_viewer = await login(http, "acme-v", PASSWORD)
        async with (
            opened(http, a_viewer) as seen_by_viewer,
            opened(http, b) as seen_by_b,
            opened(http, admin) as platform,
        ):
            await subscribed(seen_by_viewer, "v", after=0)  # the whole history too
            await subscribed(seen_by_b, "b", after=0)
            await subscribed(platform, "p", types=CREATED)
            made = await http.post(
                "/api/v1/users",
                json={
                    "username": "acme-w",
                    "password": PASSWORD,
                    "tenant_id": tenant_a,
                    "roles": ["viewer"],
                },
                headers=a_admin,
            )
            assert made.status_code == 201, made.text
            in_a = await create_pipeline(http, a_admin, "in-a")
            in_b = await create_pipeline(http, b, "in-b")
            viewer_events = events_of(await seen_by_viewer.until(_created(in_a["id"])))
            b_events = events_of(await seen_by_b.until(_created(in_b["id"])))
            # A platform admin acting in no tenant follows every tenant.
            await platform.until(lambda _: {in_a["id"], in_b["id"]} <= _subjects(platform))
        assert {e["tenant"] for e in viewer_events} == {tenant_a}
        kinds = {e["type"].split(".")[1] for e in viewer_events}
        assert not kinds & {"user", "session", "usage", "api_key"}, kinds
        assert tenant_a not in {e["tenant"] for e in b_events}
        assert in_a["id"] not in {e["subject"] for e in b_events}


async def _closed_revoked(ws: Ws, started: float) -> str:
    code, reason, _ = await ws.closed(seconds=2.5)
    assert code == 4401, (code, reason)
    assert asyncio.get_running_loop().time() - started < 2.0
    return reason


async def test_revoked_credentials_close_the_socket_with_4401_within_two_seconds(
    settings: Settings,
) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await _admin(http, settings)
        tenant_id, ada = await make_tenant_user(http, admin, "acme", "admin")
        key = await _api_key(http, ada)
        loop = asyncio.get_running_loop()

        async with opened(http, {"X-API-Key": key["key"]}) as by_key:
            await subscribed(by_key, "s")
            started = loop.time()
            gone = await http.delete(f"/api/v1/api-keys/{key['id']}", headers=ada)
            assert gone.status_code in (200, 204), gone.text
            await _closed_revoked(by_key, started)

        second = await login(http, "acme-admin", PASSWORD)
        token = ada["Authorization"][7:]
        async with (
            opened(http, {}, f"token={token}") as by_query,
            raw_socket(http) as by_message,
            opened(http, second) as other_session,
        ):
            await by_message.send(type="auth", token=token)
            assert (await by_message.next())["type"] == "ready"
            started = loop.time()
            out = await http.post("/api/v1/auth/logout", headers=ada)
            assert out.status_code in (200, 204), out.text
            await _closed_revoked(by_query, started)
            await _closed_revoked(by_message, started)
            # Another session of the same user goes on until its tenant is suspended.
            assert await other_session.answer(type="ping") == {"type": "pong", "id": None}
            suspended = await http.put(
                f"/api/v1/tenants/{tenant_id}",
                json={"status": "suspended", "status_reason": "unpaid"},
                headers=admin,
            )
            assert suspended.status_code == 200, suspended.text
            started = loop.time()
            assert "suspended" in await _closed_revoked(other_session, started)


async def test_a_demoted_connection_closes_and_replays_nothing_its_new_roles_may_not_read(
    settings: Settings,
) -> None:
    """A tenant admin's connection, its admin made a viewer: a subscription asked for
    right after, replaying user and API-key events from the start, is not made (the
    connection closes with 4401 at once), and an open one ends within 2 s."""
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await _admin(http, settings)
        _, ada = await make_tenant_user(http, admin, "acme", "admin")
        ada_id = (await http.get("/api/v1/auth/me", headers=ada)).json()["id"]
        loop = asyncio.get_running_loop()

        async def set_roles(roles: list[str]) -> None:
            changed = await http.put(
                f"/api/v1/users/{ada_id}", json={"roles": roles}, headers=admin
            )
            assert changed.status_code == 200, changed.text

        async with opened(http, ada) as replaying:
            await set_roles(["viewer"])
            started = loop.time()
            await replaying.send(
                type="subscribe", id="history", types=["norn.user.*", "norn.api_key.*"], after=0
            )
            code, reason, frames = await replaying.closed(seconds=2.5)
            assert code == 4401, (code, reason, frames)
            assert "roles changed" in reason
            assert not events_of(frames), frames
            assert loop.time() - started < 1.0  # not left to the next recheck

        await set_roles(["admin"])
        ada = await login(http, "acme-admin", PASSWORD)
        async with opened(http, ada) as following:
            await subscribed(following, "s")
            started = loop.time()
            await set_roles(["viewer"])
            assert "roles changed" in await _closed_revoked(following, started)


async def _revise(
    http: httpx.AsyncClient, headers: dict[str, str], pipeline: dict[str, Any], times: int
) -> None:
    for n in range(times):
        body = {"name": pipeline["name"], "description": f"v{n}", "steps": pipeline["steps"]}
        revised = await http.put(f"/api/v1/pipelines/{pipeline['id']}", json=body, headers=headers)
        assert revised.status_code == 200, revised.text


def _small_socket(http: httpx.AsyncClient) -> socket.socket:
    """A client socket with a tiny receive buffer: a client that does not read blocks
    the server's sends after a few kilobytes rather than megabytes."""
    address = urlsplit(str(http.base_url))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((address.hostname or "", address.port or 0))
    sock.setblocking(False)
    return sock


async def test_a_client_that_does_not_read_is_told_where_to_resume_then_closed(
    settings: Settings, monkeypatch: Any
) -> None:
    slow_after = event_feed.SLOW_AFTER
    monkeypatch.setattr(event_feed, "SLOW_AFTER", 3)
    monkeypatch.setattr(feed_socket, "OUTBOX", 2)
    # The ~200 kB below fit in the kernel's buffers of a loopback connection, so a client
    # that reads nothing does not hold the server's sends back by itself: each send
    # takes 20 ms, as over a slow link, slower than the events come.
    send_data = WebSocket.send_data

    async def slow_send_data(self: WebSocket, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.02)
        await send_data(self, *args, **kwargs)

    monkeypatch.setattr(WebSocket, "send_data", slow_send_data)
    monkeypatch.setattr(feed_socket, "STALL_SECONDS", 0.5)
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await _admin(http, settings)
        tenant_id, ada = await make_tenant_user(http, admin, "acme", "admin")
        sock = _small_socket(http)
        async with opened(http, ada, sock=sock, max_queue=1) as ws:
            await subscribed(ws, "slow")
            await subscribed(ws, "quiet", types="norn.nothing.*")
            # The client reads nothing while ~200 events of ~1 kB pass.
            made = [await create_pipeline(http, ada, f"p-{n}") for n in range(8)]
            await asyncio.gather(*(_revise(http, ada, p, times=25) for p in made))
            await asyncio.sleep(1.0)
            code, _, frames = await ws.closed(seconds=30)
        assert code == 1013, frames[-3:]
        events = events_of(frames, "slow")
        resumes = {f["subscription"]: f["after"] for f in frames if f["type"] == "resume"}
        assert [f["type"] for f in frames[-2:]] == ["resume", "resume"]
        assert set(resumes) == {"slow", "quiet"}
        positions = [e["position"] for e in events]
        assert positions == _tenant_positions(settings, tenant_id, positions[0] - 1, positions[-1])
        # Nothing of the tenant's was skipped between the last event sent and `after`.
        assert resumes["slow"] >= positions[-1]
        assert _tenant_positions(settings, tenant_id, positions[-1], resumes["slow"]) == []
        # The client resumes at full speed: its replay is no slower than the events.
        monkeypatch.setattr(WebSocket, "send_data", send_data)
        monkeypatch.setattr(event_feed, "SLOW_AFTER", slow_after)
        async with opened(http, ada) as again:
            await subscribed(again, "slow", after=resumes["slow"])
            last = await create_pipeline(http, ada, "last")
            more = events_of(await again.until(_created(last["id"])))
        assert (
            more[0]["position"]
            == _tenant_positions(settings, tenant_id, resumes["slow"], more[0]["position"])[0]
        )


async def test_open_streams_are_limited_per_tenant_sse_and_websocket_together(
    settings: Settings,
) -> None:
    limited = dataclasses.replace(
        settings, stream_limits="free=2,pro=50,enterprise=500,platform=100"
    )
    async with serving_app(limited) as http:
        await wait_ready(http)
        admin = await _admin(http, limited)
        _, ada = await make_tenant_user(http, admin, "acme", "admin")
        _, bob = await make_tenant_user(http, admin, "globex", "admin")
        async with http.stream("GET", STREAM, headers=ada) as sse:
            assert sse.status_code == 200
            async with opened(http, ada) as ws:
                async with raw_socket(http, ada) as over:
                    message = await _refused(over, 4429, "RATE_LIMIT_EXCEEDED")
                    assert "2 open event streams" in message
                refused = await http.get(STREAM, headers=ada)
                assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
                assert int(refused.headers["retry-after"]) >= 1
                metrics = (await http.get("/metrics")).text
                assert "norn_open_streams 2.0" in metrics, metrics
                # Another tenant, and the platform admin, have places of their own.
                async with opened(http, bob), opened(http, admin):
                    pass
                await subscribed(ws, "s")
            # The closed WebSocket freed its place: a new stream is admitted.
            async with _eventually_open(http, ada) as again:
                assert again["type"] == "ready"
        async with _eventually_open(http, ada), _eventually_open(http, ada):
            pass  # and the SSE stream's


class _eventually_open:
    """A WebSocket of `headers`, retried for up to 3 s while the limit refuses it (a
    slot is freed as the server sees its stream end)."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self._http, self._headers = http, headers
        self._context: Any = None

    async def __aenter__(self) -> Frame:
        deadline = asyncio.get_running_loop().time() + 3.0
        while True:
            self._context = raw_socket(self._http, self._headers)
            ws = await self._context.__aenter__()
            first = await ws.next()
            if first["type"] == "ready":
                return first
            await self._context.__aexit__(None, None, None)
            assert first["code"] == "RATE_LIMIT_EXCEEDED", first
            assert asyncio.get_running_loop().time() < deadline, "the place was not freed"
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        await self._context.__aexit__(*exc)
