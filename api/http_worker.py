"""One HTTP worker of `norn serve` (api/http_workers.py): the API only, no background
role, on the listening socket and the servers the serve process hands it. Started by
the serve process as `python -m api.http_worker`; not a command of its own."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys


def main() -> int:
    from api.http_workers import watch_parent

    watch_parent()  # before anything that may wait: an orphan must not linger
    from infrastructure.logs import configure_logging
    from infrastructure.metrics import SHARED_DIR, share_between_processes
    from infrastructure.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    # Not a line per scrape passed on to the serve process (httpx logs each request).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Before any metric exists: this process's counts go to the shared files.
    share_between_processes(os.environ[SHARED_DIR])

    import uvicorn

    from api.app import create_app
    from api.bootstrap import build_container
    from api.cli_commands import http_server_config
    from api.http_workers import LISTENER_FD, PRIMARY_METRICS
    from infrastructure.garbage_collection import tune_for_service

    listener = socket.socket(fileno=int(os.environ[LISTENER_FD]))
    if not settings.database_url or not settings.nats_url:
        logging.getLogger(__name__).error("a worker is given its servers by norn serve")
        return 2
    container = build_container(settings, settings.database_url, settings.nats_url)
    try:
        container.metrics.primary_url = os.environ.get(PRIMARY_METRICS)
        app = create_app(container, set())
        tune_for_service()
        # uvicorn re-raises the signal that stopped it; the default handlers would end
        # the process before the container is closed.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        server = uvicorn.Server(http_server_config(app, settings))
        server.run(sockets=[listener])
        return 0 if server.started else 1
    finally:
        container.close()
        listener.close()


if __name__ == "__main__":
    sys.exit(main())
