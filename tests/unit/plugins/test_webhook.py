"""Output.webhook against a real HTTP server on 127.0.0.1 that verifies signatures."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest

from infrastructure.plugins.base import PluginError, StepContext
from infrastructure.plugins.network import BlockedAddress
from infrastructure.plugins.webhook import OutputWebhook
from tests.unit.plugins.helpers import LocalServer, Reply, Request, execute, run

SECRET = "whsec-0123456789"
RECORDS = [{"id": n, "name": f"r{n}"} for n in range(1, 6)]


def verifying_receiver(secret: str):
    """A receiver as a user would write it: HMAC-SHA256 of the raw body, compared in
    constant time; 401 when the signature does not match."""

    def receive(request: Request) -> Reply:
        expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
        given = request.headers.get("x-norn-signature", "")
        if not hmac.compare_digest(expected, given):
            return Reply(401, b"bad signature")
        return Reply(204)

    return receive


async def deliver(context: StepContext, url: str, records: list, **config: object) -> list:
    return await run(OutputWebhook, {"url": url, **config}, context, records)


async def test_records_are_posted_in_signed_batches_and_passed_on(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/hook"] = verifying_receiver(SECRET)

    passed_on = await deliver(
        private_context, server.url("/hook"), RECORDS, secret=SECRET, batch_size=2
    )

    assert passed_on == RECORDS
    assert [json.loads(r.body) for r in server.requests] == [
        RECORDS[0:2],
        RECORDS[2:4],
        RECORDS[4:],
    ]
    assert all(r.method == "POST" for r in server.requests)
    assert all(r.headers["content-type"] == "application/json" for r in server.requests)
    assert [r.headers["x-norn-delivery"] for r in server.requests] == [
        "run-1/step/1",
        "run-1/step/2",
        "run-1/step/3",
    ]


async def test_a_wrong_secret_is_rejected_by_the_receiver(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/hook"] = verifying_receiver(SECRET)

    with pytest.raises(PluginError, match=r"batch 1: POST .* answered 401") as failed:
        await deliver(private_context, server.url("/hook"), RECORDS, secret="another-secret")

    assert failed.value.retryable is False


async def test_without_a_secret_there_is_no_signature(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/hook"] = lambda request: Reply(200)

    await deliver(private_context, server.url("/hook"), RECORDS[:1], headers={"X-Team": "ops"})

    [request] = server.requests
    assert "x-norn-signature" not in request.headers
    assert request.headers["x-team"] == "ops"


async def test_no_records_no_request(private_context: StepContext, server: LocalServer) -> None:
    server.routes["/hook"] = lambda request: Reply(200)

    assert await deliver(private_context, server.url("/hook"), []) == []
    assert server.requests == []


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (429, True), (500, True), (502, True)]
)
async def test_a_failed_delivery_fails_the_step(
    private_context: StepContext, server: LocalServer, status: int, retryable: bool
) -> None:
    answers = iter([Reply(200), Reply(status, b"receiver says no")])
    server.routes["/hook"] = lambda request: next(answers)
    passed_on = []

    with pytest.raises(PluginError) as failed:
        config = {"url": server.url("/hook"), "batch_size": 2}
        async for record in execute(OutputWebhook, config, private_context, RECORDS):
            passed_on.append(record)

    assert f"batch 2: POST http://127.0.0.1:{server.port}/hook answered {status}" in str(
        failed.value
    )
    assert "receiver says no" in str(failed.value)
    assert failed.value.retryable is retryable
    assert passed_on == RECORDS[:2]  # only delivered records are passed on


async def test_a_slow_receiver_times_out(private_context: StepContext, server: LocalServer) -> None:
    server.routes["/hook"] = server.hold

    with pytest.raises(PluginError, match="timed out") as failed:
        await deliver(private_context, server.url("/hook"), RECORDS, timeout=0.2)

    assert failed.value.retryable is True


async def test_cancelling_stops_a_delivery_in_flight(
    private_context: StepContext, server: LocalServer
) -> None:
    server.routes["/hook"] = server.hold
    task = asyncio.create_task(deliver(private_context, server.url("/hook"), RECORDS, timeout=60))
    assert await asyncio.to_thread(server.arrived.wait, 10)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def test_the_guard_refuses_local_receivers_by_default(
    context: StepContext, server: LocalServer
) -> None:
    server.routes["/hook"] = lambda request: Reply(200)

    with pytest.raises(BlockedAddress):
        await deliver(context, server.url("/hook"), RECORDS)

    assert server.requests == []
