"""The live feed (SSE) over a real HTTP server: a tenant sees its own events as
CloudEvents, in position order, filtered by type, and never another tenant's."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

from infrastructure import event_feed
from infrastructure import nats as norn_nats
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    serving_app,
    visible,
    wait_ready,
)
from tests.support.tcp_proxy import TcpProxy

STREAM = "/api/v1/events/stream"
CREATED = "norn.pipeline.created.v1"


@dataclass
class Sse:
    event: str | None = None
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def cloud_event(self) -> dict[str, Any]:
        return json.loads(self.data)


class SseReader:
    """Parses an open text/event-stream response in a background task, so waiting for
    the next event can time out without tearing the stream down."""

    def __init__(self, response: httpx.Response) -> None:
        self._queue: asyncio.Queue[Sse] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(response))
        self.seen: list[Sse] = []

    async def _read(self, response: httpx.Response) -> None:
        current = Sse()
        async for line in response.aiter_lines():
            if line == "":
                if current.event or current.data or current.comments:
                    await self._queue.put(current)
                current = Sse()
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                current.comments.append(value)
            elif name == "data":
                current.data = f"{current.data}\n{value}" if current.data else value
            elif name == "event":
                current.event = value
            elif name == "id":
                current.id = value

    async def next(self, seconds: float = 20.0) -> Sse:
        message = await asyncio.wait_for(self._queue.get(), seconds)
        self.seen.append(message)
        return message

    async def until(self, done: Callable[[Sse], bool], seconds: float = 20.0) -> list[Sse]:
        """Every event up to and including the first for which done() is true."""
        start = len(self.seen)
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no matching event within {seconds}s: {self.seen[start:]}")
            message = await self.next(left)
            if done(message):
                return [m for m in self.seen[start:] if m.event]

    async def ended(self, seconds: float = 2.0) -> None:
        """The server closed the stream."""
        await asyncio.wait_for(asyncio.shield(self._task), seconds)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


def _created(pipeline_id: str) -> Callable[[Sse], bool]:
    return lambda m: m.event == CREATED and m.cloud_event["subject"] == pipeline_id


@contextlib.asynccontextmanager
async def _feed(http: httpx.AsyncClient, headers: dict[str, str], **params: str) -> Any:
    async with http.stream("GET", STREAM, params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        try:
            first = await reader.next()  # sent once the subscription is live
            assert first.event is None and "connected" in first.comments
            yield reader
        finally:
            await reader.close()


async def test_feed_is_per_tenant_cloud_events_filtered_by_type(settings: Settings) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        tenant_a, a = await make_tenant_user(http, admin, "acme", "viewer")
        _, b = await make_tenant_user(http, admin, "globex", "editor")
        in_a = {**admin, "X-Tenant-ID": tenant_a}
        assert_error(await http.get(STREAM), 401, "AUTHENTICATION_REQUIRED")

        async with (
            _feed(http, a) as everything,
            _feed(http, a, types="norn.pipeline.*") as pipelines_only,
            _feed(http, admin) as platform,
        ):
            one = await create_pipeline(http, in_a, "a-one")
            other = await create_pipeline(http, b, "b-one")
            two = await create_pipeline(http, in_a, "a-two")

            got = await everything.until(_created(two["id"]))
            types = [m.event for m in got]
            assert types.count(CREATED) == 2, types
            assert "norn.name_claim.taken.v1" in types
            first = next(m for m in got if _created(one["id"])(m))
            event = first.cloud_event
            assert event["specversion"] == "1.0"
            assert event["type"] == CREATED
            assert event["tenant"] == tenant_a
            assert event["source"] == f"/tenants/{tenant_a}/pipelines/{one['id']}"
            assert event["data"]["definition"]["name"] == "a-one"
            assert event["actor"] == one["created_by"]
            assert first.id == str(event["position"])
            assert 0 < event["position"] <= one["position"]
            for message in got:
                assert message.cloud_event["tenant"] == tenant_a, message
                assert message.cloud_event["subject"] != other["id"], message
                assert message.id == str(message.cloud_event["position"])
            positions = [int(m.id or 0) for m in got]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)

            filtered = await pipelines_only.until(_created(two["id"]))
            assert [m.event for m in filtered] == [CREATED, CREATED]
            assert [m.cloud_event["subject"] for m in filtered] == [one["id"], two["id"]]

            # A platform admin acting in no tenant follows every tenant.
            seen = await platform.until(_created(two["id"]))
            subjects = {m.cloud_event["subject"] for m in seen if m.event == CREATED}
            assert subjects == {one["id"], other["id"], two["id"]}


async def test_feed_shows_each_role_only_the_events_it_may_read(settings: Settings) -> None:
    """User, session, API-key and usage events are the tenant admin's, as the users, keys
    and quota endpoints are; a viewer's feed skips them and still gets the pipeline's."""
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        tenant, tenant_admin = await make_tenant_user(http, admin, "acme", "admin")
        in_tenant = {**admin, "X-Tenant-ID": tenant}
        viewer_user = await http.post(
            "/api/v1/users",
            json={
                "username": "acme-viewer",
                "password": "correct-horse-battery-staple",
                "tenant_id": tenant,
                "roles": ["viewer"],
            },
            headers=admin,
        )
        assert viewer_user.status_code == 201, viewer_user.text
        viewer = await login(http, "acme-viewer", "correct-horse-battery-staple")
        async with _feed(http, viewer) as viewers, _feed(http, tenant_admin) as admins:
            more = await http.post(
                "/api/v1/users",
                json={
                    "username": "acme-later",
                    "password": "correct-horse-battery-staple",
                    "tenant_id": tenant,
                    "roles": ["viewer"],
                },
                headers=admin,
            )
            assert more.status_code == 201, more.text
            made = await create_pipeline(http, in_tenant, "after-the-user")
            seen_by_admin = {m.event for m in await admins.until(_created(made["id"]))}
            seen_by_viewer = {m.event for m in await viewers.until(_created(made["id"]))}
        assert "norn.user.registered.v1" in seen_by_admin
        assert not any(
            t and t.split(".")[1] in {"user", "session", "usage", "api_key"} for t in seen_by_viewer
        ), seen_by_viewer
        assert CREATED in seen_by_viewer


async def test_feed_follows_revisions_and_deletes(settings: Settings) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(http, admin, "acme", "editor")
        async with _feed(http, editor, types="norn.pipeline.revised.*,*.deleted.*") as feed:
            created = await create_pipeline(http, editor, "a-one")
            url = f"/api/v1/pipelines/{created['id']}"
            body = {"name": "a-one", "description": "v2", "steps": created["steps"]}
            revised = await http.put(url, json=body, headers=editor)
            assert revised.status_code == 200, revised.text
            deleted = await http.delete(url, headers=editor)
            assert deleted.status_code == 200, deleted.text
            got = await feed.until(lambda m: m.event == "norn.pipeline.deleted.v1")
            assert [m.event for m in got] == [
                "norn.pipeline.revised.v1",
                "norn.pipeline.deleted.v1",
            ]
            assert got[0].cloud_event["data"]["revision"] == 2
            assert got[0].cloud_event["data"]["definition"]["description"] == "v2"
            assert 0 < int(got[1].id or 0) <= deleted.json()["position"]


def _tenant_positions(settings: Settings, tenant_id: str, after: int, upto: int) -> list[int]:
    """The positions of the tenant's events in (after, upto], as the store has them."""
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT notification_id FROM norn_events WHERE notification_id > %s"
            " AND notification_id <= %s"
            " AND convert_from(state, 'UTF8')::jsonb->>'tenant_id' = %s ORDER BY 1",
            (after, upto, tenant_id),
        ).fetchall()
    return [row[0] for row in rows]


async def test_a_client_resumes_after_last_event_id_with_no_gap_and_no_duplicate(
    settings: Settings,
) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        # A tenant admin: it may read every event of the tenant (usage bookkeeping too).
        tenant_id, editor = await make_tenant_user(http, admin, "acme", "admin")
        stop = asyncio.Event()
        made: list[dict[str, Any]] = []

        async def writer() -> None:  # commands go on while the client is away and back
            n = 0
            while not stop.is_set():
                made.append(await create_pipeline(http, editor, f"p-{n}"))
                n += 1

        writing = asyncio.create_task(writer())
        try:
            async with _feed(http, editor) as first:
                await first.until(lambda m: len(made) >= 3 and m.event == CREATED)
                got = [m for m in first.seen if m.event]
            last = int(got[-1].id or 0)
            await asyncio.sleep(0.3)  # away: events pass meanwhile
            async with _feed_after(http, editor, last) as second:
                await asyncio.sleep(0.3)
                stop.set()
                await writing
                final = made[-1]
                resumed = await second.until(_created(final["id"]))
        finally:
            stop.set()
            await writing
        positions = [int(m.id or 0) for m in got] + [int(m.id or 0) for m in resumed]
        start = int(got[0].id or 0)
        assert positions == _tenant_positions(settings, tenant_id, start - 1, positions[-1])
        assert len(made) > 5


@contextlib.asynccontextmanager
async def _feed_after(http: httpx.AsyncClient, headers: dict[str, str], position: int) -> Any:
    async with _feed(http, {**headers, "Last-Event-ID": str(position)}) as reader:
        yield reader


async def test_filters_by_resource_and_actor_and_refusals_name_the_parameter(
    settings: Settings,
) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        tenant_id, editor = await make_tenant_user(http, admin, "acme", "editor")
        in_tenant = {**admin, "X-Tenant-ID": tenant_id}
        one = await create_pipeline(http, editor, "one")
        two = await create_pipeline(http, in_tenant, "two")  # by the platform admin
        start = max(0, one["position"] - 10)  # before the append that created it
        async with _feed(http, editor, after=str(start), resources=f"pipeline:{one['id']}") as f:
            await f.until(_created(one["id"]))
            revised = await http.put(
                f"/api/v1/pipelines/{one['id']}",
                json={"name": "one", "description": "v2", "steps": one["steps"]},
                headers=editor,
            )
            assert revised.status_code == 200, revised.text
            got = await f.until(lambda m: m.event == "norn.pipeline.revised.v1")
            assert {m.cloud_event["subject"] for m in got} == {one["id"]}
        async with _feed(http, editor, after=str(start), actor=two["created_by"]) as f:
            got = await f.until(_created(two["id"]))
            assert {m.cloud_event["actor"] for m in got} == {two["created_by"]}
            assert one["id"] not in {m.cloud_event["subject"] for m in got}
        for params, headers, field in (
            ({"resources": "pipeline:nope"}, {}, "resources"),
            ({"resources": "widget:" + one["id"]}, {}, "resources"),
            ({"after": "99999999"}, {}, "after"),
            ({"after": "-1"}, {}, "after"),
            ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
            ({}, {"Last-Event-ID": "99999999"}, "Last-Event-ID"),
            # A digit to str.isdigit that int() refuses, and more digits than int() reads.
            ({}, {"Last-Event-ID": b"\xb2"}, "Last-Event-ID"),
            ({}, {"Last-Event-ID": "1" * 5000}, "Last-Event-ID"),
        ):
            refused = await http.get(STREAM, params=params, headers={**editor, **headers})
            error = assert_error(refused, 400, "VALIDATION_ERROR")
            assert [d["field"] for d in error["details"]] == [field], error


async def test_a_client_that_falls_behind_is_told_where_to_resume(
    settings: Settings, monkeypatch: Any
) -> None:
    monkeypatch.setattr(event_feed, "SLOW_AFTER", 3)
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(http, admin, "acme", "editor")
        nc = await norn_nats.connect(settings.nats_url or "", name="test-feed")
        pool = AsyncConnectionPool(settings.database_url or "", open=False)
        await pool.open()
        try:
            subject = f"{settings.subject_prefix}.events.>"
            items = event_feed.one_by_one(
                event_feed.follow_batches(nc, pool, subject, event_feed.FeedFilter(None), None)
            )
            assert isinstance(await anext(items), event_feed.KeepAlive)  # subscribed
            made = [await create_pipeline(http, editor, f"p-{n}") for n in range(3)]
            await visible(http, editor, f"/api/v1/pipelines/{made[-1]['id']}", made[-1]["position"])
            await asyncio.sleep(0.5)  # the relay has published them: more than 3 wait
            item = await anext(items)
            assert isinstance(item, event_feed.Resume), item
            with contextlib.suppress(StopAsyncIteration):
                await anext(items)
                raise AssertionError("the feed went on after Resume")
        finally:
            await nc.close()
            await pool.close()


async def _ended_by(reader: SseReader, started: float, seconds: float = 2.5) -> Sse:
    """The stream's last message, an `error` event, within `seconds` of `started`."""
    error = (await reader.until(lambda m: m.event == "error", seconds=seconds))[-1]
    assert asyncio.get_running_loop().time() - started < seconds
    assert json.loads(error.data)["code"] == "AUTHENTICATION_REQUIRED"
    await reader.ended()
    return error


async def test_revoked_credentials_end_open_streams_within_two_seconds(
    settings: Settings,
) -> None:
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        tenant_id, ada = await make_tenant_user(http, admin, "acme", "admin")
        key = await http.post(
            "/api/v1/api-keys", json={"name": "k", "roles": ["viewer"]}, headers=ada
        )
        assert key.status_code == 201, key.text
        made = await http.post(
            "/api/v1/users",
            json={
                "username": "bob",
                "password": "correct-horse-battery-staple",
                "tenant_id": tenant_id,
                "roles": ["viewer"],
            },
            headers=ada,
        )
        assert made.status_code == 201, made.text
        bob = await login(http, "bob", "correct-horse-battery-staple")
        loop = asyncio.get_running_loop()

        async with _feed(http, {"X-API-Key": key.json()["key"]}) as by_key:
            started = loop.time()
            gone = await http.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=ada)
            assert gone.status_code in (200, 204), gone.text
            await _ended_by(by_key, started)
        async with _feed(http, bob) as as_bob:
            started = loop.time()
            off = await http.put(
                f"/api/v1/users/{made.json()['id']}", json={"active": False}, headers=ada
            )
            assert off.status_code == 200, off.text
            await _ended_by(as_bob, started)
        async with _feed(http, ada) as as_ada, _feed(http, await _relogin(http)) as other:
            started = loop.time()
            out = await http.post("/api/v1/auth/logout", headers=ada)
            assert out.status_code in (200, 204), out.text
            await _ended_by(as_ada, started)
            # Another session of the same user streams on until its tenant is suspended.
            suspended = await http.put(
                f"/api/v1/tenants/{tenant_id}",
                json={"status": "suspended", "status_reason": "unpaid"},
                headers=admin,
            )
            assert suspended.status_code == 200, suspended.text
            started = loop.time()
            error = await _ended_by(other, started)
            assert "suspended" in json.loads(error.data)["message"]
        # Nor does a new stream open, as a WebSocket's does not.
        refused = await http.get(STREAM, headers=await _relogin(http))
        assert_error(refused, 401, "AUTHENTICATION_REQUIRED")
        assert "suspended" in refused.json()["error"]["message"]


async def test_a_demotion_ends_open_streams_that_read_what_the_new_roles_may_not(
    settings: Settings,
) -> None:
    """A role change holds from the next request (README): a stream opened as a tenant
    admin, which also carries user and API-key events, ends once the admin is made a
    viewer, rather than going on with what the viewer may no longer read."""
    async with serving_app(settings) as http:
        await wait_ready(http)
        admin = await login(http, settings.admin_username or "", settings.admin_password or "")
        tenant_id, ada = await make_tenant_user(http, admin, "acme", "admin")
        ada_id = (await http.get("/api/v1/auth/me", headers=ada)).json()["id"]
        loop = asyncio.get_running_loop()
        async with _feed(http, ada) as as_ada:
            # A role added takes nothing away: the stream goes on.
            more = await http.put(
                f"/api/v1/users/{ada_id}", json={"roles": ["admin", "editor"]}, headers=admin
            )
            assert more.status_code == 200, more.text
            await asyncio.sleep(event_feed.RECHECK_SECONDS * 1.5)  # a recheck has passed
            made = await create_pipeline(http, ada, "still-streaming")
            await as_ada.until(_created(made["id"]), seconds=5)
            started = loop.time()
            less = await http.put(
                f"/api/v1/users/{ada_id}", json={"roles": ["viewer"]}, headers=admin
            )
            assert less.status_code == 200, less.text
            error = await _ended_by(as_ada, started)
            assert "roles changed" in json.loads(error.data)["message"]
        # Opened again, it streams what a viewer reads.
        async with _feed(http, ada) as as_viewer:
            made = await create_pipeline(http, admin_in(admin, tenant_id), "seen-by-viewer")
            await as_viewer.until(_created(made["id"]), seconds=5)


def admin_in(admin: dict[str, str], tenant_id: str) -> dict[str, str]:
    """A platform admin's headers acting in a tenant."""
    return {**admin, "X-Tenant-ID": tenant_id}


async def _relogin(http: httpx.AsyncClient) -> dict[str, str]:
    return await login(http, "acme-admin", "correct-horse-battery-staple")


async def test_the_feed_goes_on_across_a_nats_outage_with_no_gap_and_no_duplicate(
    settings: Settings,
) -> None:
    """NATS goes away (the API's and the relay's connections cut, new ones refused) while
    commands go on, then comes back: the open feed delivers every event of the tenant
    exactly once, in order, whichever reconnected first, the relay or the feed's
    subscription (the feed replays from the store after a reconnect)."""
    nats = urlparse(settings.nats_url or "")
    proxy = TcpProxy((nats.hostname or "127.0.0.1", nats.port or 4222))
    settings = dataclasses.replace(settings, nats_url=f"nats://127.0.0.1:{proxy.port}")
    try:
        async with serving_app(settings) as http:
            await wait_ready(http)
            root = await login(http, settings.admin_username or "", settings.admin_password or "")
            tenant_id, admin = await make_tenant_user(http, root, "acme", "admin")
            async with _feed(http, admin) as feed:
                first = await create_pipeline(http, admin, "before")
                await feed.until(_created(first["id"]))
                proxy.cut()
                for i in range(3):
                    await create_pipeline(http, admin, f"during-{i}")
                await asyncio.sleep(1.5)
                proxy.restore()
                last = await create_pipeline(http, admin, "after")
                await feed.until(_created(last["id"]), seconds=30)
            positions = [int(m.id or 0) for m in feed.seen if m.event]
    finally:
        proxy.close()
    assert positions == _tenant_positions(settings, tenant_id, positions[0] - 1, positions[-1])
    assert len(positions) >= 5
