"""Input.http against a real HTTP server on 127.0.0.1 (allowed by allow_private_networks,
as NORN_ALLOW_PRIVATE_NETWORKS=1 would)."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest

from infrastructure.plugins.base import PluginError, StepContext
from infrastructure.plugins.http import InputHttp
from infrastructure.plugins.network import BlockedAddress
from tests.unit.plugins.helpers import LocalServer, Reply, execute, run

ITEMS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def json_reply(document: object) -> Reply:
    return Reply(200, json.dumps(document).encode(), {"Content-Type": "application/json"})


async def fetch(context: StepContext, url: str, **config: object) -> list[dict]:
    return await run(InputHttp, {"url": url, **config}, context)


async def test_a_list_becomes_records(private_context: StepContext, server: LocalServer) -> None:
    server.routes["/items"] = lambda request: json_reply(ITEMS)

    assert await fetch(private_context, server.url("/items")) == ITEMS
    assert private_context.logs[-1] == (  # type: ignore[attr-defined]
        "info",
        f"read 2 records from http://127.0.0.1:{server.port}/items",
    )


async def test_an_object_becomes_one_record(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/one"] = lambda request: json_reply({"id": 1, "nested": {"x": [1, 2]}})

    assert await fetch(private_context, server.url("/one")) == [{"id": 1, "nested": {"x": [1, 2]}}]


async def test_records_path_finds_the_list_inside_the_document(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/page"] = lambda request: json_reply(
        {"meta": {"page": 1}, "data": {"items": ITEMS}, "links": {"next": None}}
    )

    records = await fetch(private_context, server.url("/page"), records_path="data.items")
    meta = await fetch(private_context, server.url("/page"), records_path="meta")

    assert records == ITEMS
    assert meta == [{"page": 1}]


async def test_a_missing_records_path_is_an_error(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/page"] = lambda request: json_reply({"data": []})

    with pytest.raises(PluginError, match="no records_path 'results' in the document"):
        await fetch(private_context, server.url("/page"), records_path="results")


async def test_headers_and_query_are_sent(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/items"] = lambda request: json_reply([])

    await fetch(
        private_context,
        server.url("/items?since=2024-01-01"),
        headers={"Authorization": "Bearer t0ken"},
    )

    [request] = server.requests
    assert request.path == "/items?since=2024-01-01"
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.headers["accept"] == "application/json"


async def test_redirects_are_followed(private_context: StepContext, server: LocalServer) -> None:
    server.routes["/old"] = lambda request: Reply(301, headers={"Location": "/new"})
    server.routes["/new"] = lambda request: json_reply(ITEMS)

    assert await fetch(private_context, server.url("/old")) == ITEMS


@pytest.mark.parametrize(
    ("status", "retryable"), [(404, False), (401, False), (429, True), (500, True), (503, True)]
)
async def test_a_non_2xx_answer_fails_quoting_the_body(
    private_context: StepContext, server: LocalServer, status: int, retryable: bool
) -> None:
    server.routes["/x"] = lambda request: Reply(status, b'{"error": "nope"}\n' + b"." * 5000)

    with pytest.raises(PluginError) as failed:
        await fetch(private_context, server.url("/x?token=s3cret"))

    message = str(failed.value)
    assert message.startswith(f"GET http://127.0.0.1:{server.port}/x answered {status}")
    assert '{"error": "nope"}' in message
    assert "s3cret" not in message
    assert len(message) < 500
    assert failed.value.retryable is retryable


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b'{"a": 1', b"[1, 2]"])
async def test_a_body_that_is_not_json_records_fails(
    private_context: StepContext, server: LocalServer, body: bytes
) -> None:
    server.routes["/x"] = lambda request: Reply(200, body)

    with pytest.raises(PluginError, match="response from http") as failed:
        await fetch(private_context, server.url("/x"))

    assert failed.value.retryable is False


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_max_bytes_is_enforced(
    private_context: StepContext, server: LocalServer, declared: bool
) -> None:
    body = json.dumps([{"n": n} for n in range(1000)]).encode()
    server.routes["/big"] = lambda request: Reply(200, body, content_length=declared)

    with pytest.raises(PluginError, match=r"larger than max_bytes \(1000 bytes\)") as failed:
        await fetch(private_context, server.url("/big"), max_bytes=1000)

    assert failed.value.retryable is False


async def test_max_bytes_counts_decompressed_bytes(
    private_context: StepContext, server: LocalServer
) -> None:
    bomb = gzip.compress(b"[" + b'{"a": 0},' * 200_000 + b'{"a": 0}]')
    server.routes["/bomb"] = lambda request: Reply(200, bomb, {"Content-Encoding": "gzip"})

    assert len(bomb) < 100_000
    with pytest.raises(PluginError, match="larger than max_bytes"):
        await fetch(private_context, server.url("/bomb"), max_bytes=100_000)


async def test_compressed_json_is_read(private_context: StepContext, server: LocalServer) -> None:
    body = gzip.compress(json.dumps(ITEMS).encode())
    server.routes["/gz"] = lambda request: Reply(200, body, {"Content-Encoding": "gzip"})

    assert await fetch(private_context, server.url("/gz")) == ITEMS


async def test_a_slow_server_times_out_and_may_be_retried(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/slow"] = server.hold

    with pytest.raises(PluginError, match="timed out") as failed:
        await fetch(private_context, server.url("/slow"), timeout=0.2)

    assert failed.value.retryable is True


async def test_cancelling_the_task_stops_a_step_waiting_on_a_slow_server(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/slow"] = server.hold
    task = asyncio.create_task(fetch(private_context, server.url("/slow"), timeout=60))
    assert await asyncio.to_thread(server.arrived.wait, 10)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def test_a_connection_refused_may_be_retried(private_context: StepContext) -> None:
    with pytest.raises(PluginError, match="failed") as failed:
        await fetch(private_context, "http://127.0.0.1:1/items")

    assert failed.value.retryable is True


async def test_without_the_setting_local_addresses_are_refused(
    context: StepContext, server: LocalServer
) -> None:
    server.routes["/items"] = lambda request: json_reply(ITEMS)

    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(BlockedAddress):
            await fetch(context, server.url("/items", host=host))

    assert server.requests == []


async def test_upstream_records_are_consumed_and_dropped(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/items"] = lambda request: json_reply(ITEMS)

    out = [
        r
        async for r in execute(
            InputHttp, {"url": server.url("/items")}, private_context, [{"x": 1}]
        )
    ]

    assert out == ITEMS
