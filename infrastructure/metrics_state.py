"""The metrics read at each scrape from the components' own state (infrastructure/metrics.py
says which kinds there are): pools' `get_stats()`, events appended by type, the relay's
positions, projection positions, executor slots, open streams. A value appears only
when its component runs in this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from infrastructure.metrics import NornMetrics

RUN_STATUS_OF_EVENT = {
    "RunQueued": "queued",
    "RunRequeued": "queued",
    "RunStarted": "running",
    "RunSucceeded": "succeeded",
    "RunFailed": "failed",
    "RunCancelled": "cancelled",
    "RunTimedOut": "timed_out",
    "RunCrashed": "crashed",
}
"""Run events that move a run to a status (domain/run.py)."""


class StateCollector(Collector):
    """What the components know about themselves, read at each scrape."""

    def __init__(self, metrics: NornMetrics, *, tally: bool = True) -> None:
        self._m = metrics
        self._tally = tally  # False: the appends are counted in the shared files

    def describe(self) -> list[Metric]:
        return []  # values appear only when their component runs here

    def collect(self) -> Iterator[Metric]:
        yield from self._pools()
        if self._tally:
            yield from self._appended()
        yield from self._components()

    def _appended(self) -> Iterator[Metric]:
        m = self._m
        appended = CounterMetricFamily(
            "norn_events_appended", "Events appended by this process, by type", labels=["type"]
        )
        transitions = CounterMetricFamily(
            "norn_run_transitions",
            "Runs moved to a status by this process's appends",
            labels=["status"],
        )
        by_status: dict[str, int] = {}
        for name, count in sorted(m.events.by_type().items()):
            appended.add_metric([name], count)
            status = RUN_STATUS_OF_EVENT.get(name)
            if status is not None:
                by_status[status] = by_status.get(status, 0) + count
        for status, count in sorted(by_status.items()):
            transitions.add_metric([status], count)
        yield appended
        yield transitions

    def _components(self) -> Iterator[Metric]:
        m = self._m
        if m.database is not None:
            yield GaugeMetricFamily(
                "norn_database_up",
                "1 unless PostgreSQL is known not to answer",
                value=0 if m.database.down else 1,
            )
        if m.relay is not None:
            relay = m.relay
            yield GaugeMetricFamily(
                "norn_relay_leader",
                "1 if this process's relay is the active one",
                value=1 if relay.is_leader else 0,
            )
            yield GaugeMetricFamily(
                "norn_relay_published_position",
                "Last position JetStream acknowledged",
                value=relay.published_position,
            )
            yield GaugeMetricFamily(
                "norn_relay_lag_events",
                "Positions between the store head and the relay",
                value=relay.lag_events,
            )
            yield GaugeMetricFamily(
                "norn_relay_lag_seconds",
                "How long the relay has been behind the store head",
                value=relay.lag_seconds,
            )
        if m.projection_positions is not None:
            positions = GaugeMetricFamily(
                "norn_projection_position",
                "Position this process's projection runners have reached",
                labels=["projection"],
            )
            for name, position in sorted(m.projection_positions().items()):
                positions.add_metric([name], position)
            yield positions
        if m.executor is not None:
            yield GaugeMetricFamily(
                "norn_executor_slots_in_use",
                "Runs being claimed or executed here",
                value=m.executor.slots_in_use,
            )
            yield GaugeMetricFamily(
                "norn_executor_slots",
                "Runs this process executes at a time",
                value=m.executor.slots_total,
            )

        # Shared between processes, their files hold these two (metrics.py open_streams).
        if m.streams is not None and m.open_streams is None:
            yield GaugeMetricFamily(
                "norn_open_streams", "SSE and WebSocket streams open here", m.streams.open_here
            )
        if m.live_events is not None and m.live_listeners is None:
            yield GaugeMetricFamily(
                "norn_live_listeners",
                "Subscriptions of the live feeds open here",
                m.live_events.listeners,
            )

    def _pools(self) -> Iterator[Metric]:
        families = {
            key: GaugeMetricFamily(f"norn_db_pool_{name}", text, labels=["pool"])
            for key, name, text in (
                ("pool_size", "connections", "Connections the pool holds (in use or idle)"),
                ("pool_available", "available", "Idle connections ready in the pool"),
                ("requests_waiting", "waiting", "Requests waiting for a connection"),
                ("pool_max", "max", "Most connections the pool may hold"),
            )
        }
        for pool_name, pool in sorted(self._m.pools.items()):
            stats = pool.get_stats()
            for key, family in families.items():
                family.add_metric([pool_name], stats.get(key, 0))
        if self._m.pools:
            yield from families.values()
