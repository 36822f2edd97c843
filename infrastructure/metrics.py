"""Prometheus metrics of one process (README "Metrics, logs and health").

One `NornMetrics` per container, with its own registry (tests run several apps in one
process). Two kinds of metric:

- counted where they happen, on the hot path: HTTP requests, commands, run durations.
  Label children are cached, so a request costs a dict lookup and two increments;
- read at scrape time from the components' own state (infrastructure/metrics_state.py:
  pools' `get_stats()`, the relay's positions, executor slots, events appended by
  type), or, where finding them
  out needs PostgreSQL or NATS (store head, projection lag, work-queue depth), refreshed
  by `MetricsRefresher` (infrastructure/metrics_refresh.py) with a bound of a second
  each: before the API's /metrics answers, and every 5 s for a metrics port.

Label values are route templates, command and event type names, statuses, pool and
projection names: never a tenant, user or resource id.

With HTTP workers (`norn serve`, NORN_HTTP_WORKERS >= 1) the processes share the counted
metrics through prometheus_client's multiprocess mode (`share_between_processes`):
each writes its values to files in one directory, and /metrics sums them
(`NornMetrics.exposed`), beside the state of the serve process, which runs every
background role; the workers' /metrics asks the serve process (api/http_workers.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from infrastructure.metrics_state import RUN_STATUS_OF_EVENT, StateCollector

# No `_created` series beside every counter and histogram: they double the output and
# Prometheus does not need them.
disable_created_metrics()

UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched (404s of arbitrary paths)."""


_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RUN_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600)
_FIRE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


SHARED_DIR = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(directory: str) -> None:
    """Counted metrics made from now on in this process are kept in files in `directory`
    (prometheus_client's multiprocess mode), summed with those of the other processes
    that share it. Call it before the container is built."""
    os.environ[SHARED_DIR] = directory
    values.ValueClass = values.get_value_class()


def shared() -> bool:
    return bool(os.environ.get(SHARED_DIR))


class EventTally:
    """Events appended by this process, by event type (thread-safe; the recorder adds).
    `on_add`: also told of each, when the counts are shared between processes."""

    def __init__(self, on_add: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._on_add = on_add

    def add(self, topics: list[str]) -> None:
        with self._lock:
            for topic in topics:
                self._counts[topic] = self._counts.get(topic, 0) + 1
        if self._on_add is not None:
            for topic in topics:
                self._on_add(topic.rpartition(":")[2] or topic)

    def by_type(self) -> dict[str, int]:
        """Counts keyed by the event's class name (its topic is module:Class)."""
        with self._lock:
            counts = dict(self._counts)
        named: dict[str, int] = {}
        for topic, count in counts.items():
            name = topic.rpartition(":")[2] or topic
            named[name] = named.get(name, 0) + count
        return named


class PoolStats(Protocol):
    def get_stats(self) -> dict[str, int]: ...


class NornMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "norn_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "norn_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of its body)",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.commands = Counter(
            "norn_commands",
            "Commands run, by command and outcome",
            ["command", "outcome"],
            registry=r,
        )
        self.run_duration = Histogram(
            "norn_run_duration_seconds",
            "Duration of run attempts executed here, from claim to end, by final status",
            ["status"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.store_head = Gauge(
            "norn_store_head_position",
            "Position of the newest event in the store",
            multiprocess_mode="max",
            registry=r,
        )
        self.projection_lag = Gauge(
            "norn_projection_lag_events",
            "Positions between the store head and a read model",
            ["projection"],
            multiprocess_mode="max",
            registry=r,
        )
        self.runs_now = Gauge(
            "norn_runs",
            "Runs queued or running now, installation-wide (the runs read model)",
            ["status"],
            multiprocess_mode="max",
            registry=r,
        )
        self.work_queue_depth = Gauge(
            "norn_work_queue_items",
            "Work items in the work stream: queued runs not yet claimed (or being claimed)",
            multiprocess_mode="max",
            registry=r,
        )
        self.open_streams: Gauge | None = None
        self.live_listeners: Gauge | None = None
        if shared():
            # Streams are open in the HTTP workers, and /metrics is answered from the
            # serve process: each process keeps its counts in its file, summed over the
            # live ones (api/http_workers.py). Alone, a process reports its own at scrape
            # time (metrics_state.py).
            self.open_streams = Gauge(
                "norn_open_streams",
                "SSE and WebSocket streams open",
                multiprocess_mode="livesum",
                registry=r,
            )
            self.live_listeners = Gauge(
                "norn_live_listeners",
                "Subscriptions of the live feeds open",
                multiprocess_mode="livesum",
                registry=r,
            )
        self.job_fires = Counter(
            "norn_scheduler_fires",
            "Scheduled times dealt with by this process's scheduler, by outcome"
            " (fired, skipped, missed, refused, late: a fired one more than 1 s late)",
            ["outcome"],
            registry=r,
        )
        self.trigger_firings = Counter(
            "norn_event_triggers",
            "Pipeline triggers fired by events in this process, by outcome (started, or the"
            " code of the refusal: CHAIN_TOO_DEEP, QUOTA_EXCEEDED, ...)",
            ["outcome"],
            registry=r,
        )
        self.fire_delay = Histogram(
            "norn_scheduler_fire_delay_seconds",
            "From a job's scheduled time (plus its jitter) to its run queued",
            buckets=_FIRE_BUCKETS,
            registry=r,
        )
        # Webhooks (infrastructure/notifier_role.py).
        self.webhook_deliveries = Counter(
            "norn_webhook_deliveries",
            "Webhook delivery attempts by this process's notifier, by the delivery's status"
            " after it (delivered; failed: another attempt is due; dead: given up)",
            ["outcome"],
            registry=r,
        )
        self.webhook_latency = Histogram(
            "norn_webhook_delivery_latency_seconds",
            "From an event's time to its webhook delivery answered 2xx (retries included)",
            buckets=_FIRE_BUCKETS,
            registry=r,
        )
        self.events = EventTally(self._count_appended if shared() else None)
        self.pools: dict[str, PoolStats] = {}
        self.relay: Any = None
        """The process's Relay, if it runs one (published_position, lag_seconds, ...)."""
        self.executor: Any = None
        """The process's ExecutorRole, if it runs one (slots_in_use, slots_total)."""
        self.database: Any = None
        """The process's DatabaseAvailability."""
        self.streams: Any = None
        """The API's StreamSlots (open_here) and LiveEvents (listeners): its live feeds."""
        self.live_events: Any = None
        self.projection_positions: Callable[[], dict[str, int]] | None = None
        self.serves_workers = False
        """In `norn serve` with HTTP workers: it answers their /metrics from another
        thread, so it refreshes the values on a timer."""
        self.primary_url: str | None = None
        """In an HTTP worker of `norn serve`: where the serve process answers /metrics
        (api/http_workers.py), which a worker's /metrics passes on."""
        self.refresh: Callable[[], Awaitable[None]] | None = None
        """Refreshes the values that need a query or a NATS request (bounded): the
        API's /metrics calls it before it answers."""
        r.register(StateCollector(self))
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.exposed = r
        """What /metrics answers from: this registry, or, shared between processes, the
        counted metrics of all of them (their files) and this process's state."""
        if shared():
            self._appended = Counter(
                "norn_events_appended",
                "Events appended, by type",
                ["type"],
                registry=None,
            )
            self._transitions = Counter(
                "norn_run_transitions", "Runs moved to a status", ["status"], registry=None
            )
            self.exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.exposed)
            self.exposed.register(StateCollector(self, tally=False))

    def _count_appended(self, name: str) -> None:
        self._appended.labels(name).inc()
        status = RUN_STATUS_OF_EVENT.get(name)
        if status is not None:
            self._transitions.labels(status).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_command(self, command: str, outcome: str) -> None:
        self.commands.labels(command, outcome).inc()

    def observe_run(self, status: str, seconds: float) -> None:
        self.run_duration.labels(status).observe(seconds)

    def observe_fires(self, outcomes: Sequence[Any]) -> None:
        """A scheduler pass's outcomes (application/job_firing.py Outcome)."""
        for outcome in outcomes:
            for name in ("fired", "skipped", "missed", "refused", "late"):
                if count := getattr(outcome, name):
                    self.job_fires.labels(name).inc(count)
            for delay in outcome.delays:
                self.fire_delay.observe(delay)

    def observe_webhook(self, outcome: str, latency: float | None) -> None:
        """One delivery attempt (infrastructure/notifier_role.py Observe)."""
        self.webhook_deliveries.labels(outcome).inc()
        if latency is not None:
            self.webhook_latency.observe(latency)

    def observe_triggers(self, firings: Sequence[Any]) -> None:
        """A trigger pass's firings (application/event_triggers.py Firing)."""
        for firing in firings:
            self.trigger_firings.labels(firing.refused or "started").inc()


def command_observer(metrics: NornMetrics, service: str) -> Callable[[str, str], None]:
    """For application/threads.Threaded: counts `service.method` by outcome."""

    def observe(method: str, outcome: str) -> None:
        metrics.observe_command(f"{service}.{method}", outcome)

    return observe
