"""Input.http: GET a JSON document; a list becomes records, an object one record.

The response is parsed as it streams in (only the record being read is held), and
`max_bytes` is enforced on the bytes received after decompression, so neither a large
document nor a compression bomb can exhaust memory. Connections pass the network guard
(infrastructure/plugins/network.py), redirects included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import msgspec

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext
from infrastructure.plugins.jsonstream import json_records
from infrastructure.plugins.network import (
    display_url,
    guarded_client,
    status_error,
    transport_error,
    url_hosts,
)
from infrastructure.plugins.schema import RecordsPath, Seconds, StepConfig, Url
from infrastructure.plugins.sensitive import Headers

CHECK_EVERY = 1000
_MAX = "Largest response body accepted, counted after decompression."


class InputHttp(Plugin):
    type, name = "Input", "http"
    description = "GET JSON from a URL; a list becomes records, an object one record."

    class Config(StepConfig):
        url: Url
        headers: Headers = {}
        timeout: Seconds = 30.0
        max_bytes: Annotated[int, msgspec.Meta(gt=0, le=100_000_000, description=_MAX)] = 10_000_000
        records_path: RecordsPath | None = None

    @classmethod
    def destinations(cls, config: Any) -> list[str]:
        return url_hosts(config.url)

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        async for _ in records:  # a dependency only orders this step after another
            pass
        where = display_url(config.url)
        headers = httpx.Headers(config.headers)
        headers.setdefault("Accept", "application/json")
        count = 0
        async with guarded_client(
            allow_private=context.allow_private_networks,
            timeout=config.timeout,
            follow_redirects=True,
        ) as client:
            try:
                async with client.stream("GET", config.url, headers=headers) as response:
                    if not response.is_success:
                        raise await status_error("GET", config.url, response)
                    _check_declared_length(response, config.max_bytes, where)
                    body = _limited(response, config.max_bytes, where)
                    async for record in json_records(
                        body,
                        source=f"response from {where}",
                        records_path=config.records_path,
                        max_record_bytes=config.max_bytes,
                    ):
                        count += 1
                        yield record
                        if count % CHECK_EVERY == 0:
                            await context.checkpoint()
            except httpx.HTTPError as error:
                raise transport_error("GET", config.url, error) from None
        context.log(f"read {count} records from {where}")


def _check_declared_length(response: httpx.Response, max_bytes: int, where: str) -> None:
    declared = response.headers.get("content-length")
    encoded = response.headers.get("content-encoding", "identity") != "identity"
    if declared and declared.isdigit() and int(declared) > max_bytes and not encoded:
        raise _too_large(where, max_bytes)


async def _limited(response: httpx.Response, max_bytes: int, where: str) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(where, max_bytes)
        yield chunk


def _too_large(where: str, max_bytes: int) -> PluginError:
    return PluginError(
        f"the response from {where} is larger than max_bytes ({max_bytes} bytes)",
        retryable=False,
    )
