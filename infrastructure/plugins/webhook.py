"""Output.webhook: POST the records as JSON arrays of up to batch_size records.

Each batch is held in memory until it is delivered (batch_size bounds it), then passed
on to the following steps. With a `secret`, X-Norn-Signature carries
sha256=<hex HMAC-SHA256 of the exact body bytes>. X-Norn-Delivery names the run, step
and batch, and stays the same when a step is retried, so a receiver can drop batches it
already has (delivery is at least once).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import msgspec

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext
from infrastructure.plugins.network import (
    display_url,
    guarded_client,
    status_error,
    transport_error,
    url_hosts,
)
from infrastructure.plugins.schema import Seconds, StepConfig, Url
from infrastructure.plugins.sensitive import REQUIRED, SECRET_MARK, Headers

_SIGNING_HELP = (
    "Signs each body: X-Norn-Signature: sha256=<hex HMAC-SHA256 of the body>. A secret"
    ' reference: {"secret": "<name>"}.'
)
_BATCH = "Records per POST; each body is a JSON array."
SIGNATURE_HEADER = "X-Norn-Signature"
DELIVERY_HEADER = "X-Norn-Delivery"


def signature(secret: str, body: bytes) -> str:
    """The X-Norn-Signature value for `body`; receivers compute the same and compare."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class OutputWebhook(Plugin):
    type, name = "Output", "webhook"
    description = "POST records as JSON, signed with X-Norn-Signature when a secret is set."

    class Config(StepConfig):
        url: Url
        headers: Headers = {}
        secret: (
            Annotated[
                str,
                msgspec.Meta(
                    min_length=1,
                    max_length=4096,
                    extra_json_schema={SECRET_MARK: REQUIRED},
                    description=_SIGNING_HELP,
                ),
            ]
            | None
        ) = None
        batch_size: Annotated[int, msgspec.Meta(gt=0, le=10_000, description=_BATCH)] = 500
        timeout: Seconds = 30.0

    @classmethod
    def destinations(cls, config: Any) -> list[str]:
        return url_hosts(config.url)

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        where = display_url(config.url)
        batch: list[Record] = []
        batches = delivered = 0
        async with guarded_client(
            allow_private=context.allow_private_networks, timeout=config.timeout
        ) as client:
            async for record in records:
                batch.append(record)
                if len(batch) >= config.batch_size:
                    batches += 1
                    await self._post(client, config, context, batch, batches)
                    delivered += len(batch)
                    for sent in batch:
                        yield sent
                    batch = []
            if batch:
                batches += 1
                await self._post(client, config, context, batch, batches)
                delivered += len(batch)
                for sent in batch:
                    yield sent
        context.log(f"delivered {delivered} records in {batches} batches to {where}")

    async def _post(
        self,
        client: httpx.AsyncClient,
        config: Any,
        context: StepContext,
        batch: list[Record],
        number: int,
    ) -> None:
        body = msgspec.json.encode(batch)
        headers = httpx.Headers(config.headers)
        headers["Content-Type"] = "application/json"
        headers[DELIVERY_HEADER] = f"{context.run_id}/{context.step_name}/{number}"
        if config.secret:
            headers[SIGNATURE_HEADER] = signature(config.secret, body)
        try:
            async with client.stream("POST", config.url, content=body, headers=headers) as r:
                if not r.is_success:
                    error = await status_error("POST", config.url, r)
                    raise PluginError(f"batch {number}: {error}", retryable=error.retryable)
        except httpx.HTTPError as error:
            raise transport_error("POST", config.url, error) from None
