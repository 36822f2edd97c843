"""GET /metrics: this process's Prometheus metrics (infrastructure/metrics.py), open
unless NORN_METRICS_TOKEN is set. It is not a bearer-JWT route: the token, if any, is
the operator's scrape secret, compared in constant time. An HTTP worker of `norn serve`
answers with the serve process's metrics, which sum every process's counts
(api/http_workers.py), so a scrape sees the same whichever process accepts it."""

from __future__ import annotations

import httpx
from litestar import Controller, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.dependencies import SettingsDep
from application.errors import AuthenticationFailed, ServiceUnavailable
from infrastructure.metrics_server import token_matches

PRIMARY_TIMEOUT = 5.0


class MetricsController(Controller):
    path = "/metrics"
    opt = {"public": True}
    include_in_schema = False

    @get("/", summary="Prometheus metrics")
    async def metrics(self, request: Request, settings: SettingsDep) -> Response[bytes]:
        if settings.metrics_token is not None and not _presents(request, settings.metrics_token):
            raise AuthenticationFailed("the metrics token is missing or wrong")
        metrics = request.app.metrics  # type: ignore[attr-defined]
        if metrics.primary_url is not None:
            return await _from_primary(metrics.primary_url, request)
        if metrics.refresh is not None:
            await metrics.refresh()  # bounded: at most a second or two
        body = generate_latest(metrics.exposed)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _from_primary(url: str, request: Request) -> Response[bytes]:
    headers = {}
    if authorization := request.headers.get("authorization"):
        headers["authorization"] = authorization
    try:
        async with httpx.AsyncClient(timeout=PRIMARY_TIMEOUT) as client:
            answer = await client.get(url, headers=headers)
        answer.raise_for_status()
    except httpx.HTTPError:
        raise ServiceUnavailable("the serve process did not answer for its metrics") from None
    return Response(answer.content, media_type=CONTENT_TYPE_LATEST)


def _presents(request: Request, token: str) -> bool:
    return token_matches(request.headers.get("authorization", ""), token)
