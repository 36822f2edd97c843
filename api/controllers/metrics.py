"""GET /metrics: this process's Prometheus metrics (infrastructure/metrics.py), open
unless NORN_METRICS_TOKEN is set. It is not a bearer-JWT route: the token, if any, is
the operator's scrape secret, compared in constant time."""

from __future__ import annotations

from litestar import Controller, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.dependencies import SettingsDep
from application.errors import AuthenticationFailed
from infrastructure.metrics_server import token_matches


class MetricsController(Controller):
    path = "/metrics"
    opt = {"public": True}
    include_in_schema = False

    @get("/", summary="Prometheus metrics")
    async def metrics(self, request: Request, settings: SettingsDep) -> Response[bytes]:
        if settings.metrics_token is not None and not _presents(request, settings.metrics_token):
            raise AuthenticationFailed("the metrics token is missing or wrong")
        metrics = request.app.metrics  # type: ignore[attr-defined]
        if metrics.refresh is not None:
            await metrics.refresh()  # bounded: at most a second or two
        body = generate_latest(metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _presents(request: Request, token: str) -> bool:
    return token_matches(request.headers.get("authorization", ""), token)
