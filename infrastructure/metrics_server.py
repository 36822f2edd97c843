"""/metrics on a port of its own (NORN_METRICS_PORT), for the processes that serve no
HTTP: `norn relay|projector|executor`. Same rules as the API's /metrics: open, unless
NORN_METRICS_TOKEN is set, then `Authorization: Bearer <token>` (constant-time)."""

from __future__ import annotations

import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from uuid import uuid4
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line


def token_matches(authorization: str, token: str) -> bool:
    scheme, _, presented = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


def guarded_metrics_app(registry: CollectorRegistry, token: str | None) -> Callable[..., Any]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/metrics/"):
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [_error("RESOURCE_NOT_FOUND", "only /metrics is served here")]
        if token is not None and not token_matches(environ.get("HTTP_AUTHORIZATION", ""), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")],
            )
            return [_error("AUTHENTICATION_REQUIRED", "the metrics token is missing or wrong")]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve_metrics(
    listener: socket.socket, registry: CollectorRegistry, token: str | None
) -> WSGIServer:
    """Serving on `listener` (bound and listening already, so that a busy port fails
    before the process starts anything) in a daemon thread; `shutdown()` to stop."""
    server = _Server(listener.getsockname()[:2], _Quiet, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.server_address = listener.getsockname()[:2]
    server.server_name, server.server_port = (
        str(server.server_address[0]),
        int(server.server_address[1]),
    )
    server.setup_environ()
    server.set_app(guarded_metrics_app(registry, token))
    threading.Thread(target=server.serve_forever, name="norn-metrics", daemon=True).start()
    return server


def _error(code: str, message: str) -> bytes:
    body = {"error": {"code": code, "message": message, "details": [], "request_id": uuid4().hex}}
    return json.dumps(body).encode()
