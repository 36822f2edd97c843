"""Log lines (infrastructure/logs.py) and metric names and labels
(infrastructure/metrics.py, metrics_server.py), without an app."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from infrastructure import logs
from infrastructure.metrics import NornMetrics, command_observer
from infrastructure.metrics_server import guarded_metrics_app, token_matches
from infrastructure.settings import Settings, SettingsError


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[Any]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("norn.test.observability")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_json_lines_carry_the_context_ids(captured: Any) -> None:
    logger, stream, handler = captured
    handler.setFormatter(logs.JsonFormatter())
    token = logs.request_id.set("req-1")
    try:
        with logs.run_context("run-9", "tenant-3"):
            logger.info("step %s done", "read")
        logger.warning("after the run")
    finally:
        logs.request_id.reset(token)
    logger.info("outside the request")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "step read done"
    assert first["level"] == "INFO"
    assert first["logger"] == "norn.test.observability"
    assert first["time"].endswith("+00:00")
    assert (first["request_id"], first["run_id"], first["tenant_id"]) == (
        "req-1",
        "run-9",
        "tenant-3",
    )
    assert second["request_id"] == "req-1" and "run_id" not in second and "tenant_id" not in second
    assert not {"request_id", "run_id", "tenant_id"} & set(third)


def test_an_exception_is_one_string_field_of_its_line(captured: Any) -> None:
    logger, stream, handler = captured
    handler.setFormatter(logs.JsonFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    (line,) = stream.getvalue().splitlines()  # the traceback stays inside the line
    record = json.loads(line)
    assert record["message"] == "it failed"
    assert "ValueError: boom" in record["exception"]


def test_text_lines_name_the_request_before_any_traceback(captured: Any) -> None:
    logger, stream, handler = captured
    handler.setFormatter(logs.TextFormatter())
    token = logs.request_id.set("req-2")
    try:
        try:
            raise KeyError("k")
        except KeyError:
            logger.error("failed", exc_info=sys.exc_info())
    finally:
        logs.request_id.reset(token)
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("failed [request_id=req-2]")
    assert any("KeyError" in line for line in rest)


def _exposed(metrics: NornMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_requests_are_counted_by_method_route_template_and_status() -> None:
    metrics = NornMetrics()
    metrics.observe_request("GET", "/api/v1/pipelines/{pipeline_id}", 200, 0.004)
    metrics.observe_request("GET", "/api/v1/pipelines/{pipeline_id}", 200, 0.006)
    metrics.observe_request("GET", "unmatched", 404, 0.001)
    text = _exposed(metrics)
    assert (
        'norn_http_requests_total{method="GET",route="/api/v1/pipelines/{pipeline_id}",'
        'status="200"} 2.0' in text
    )
    assert 'norn_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert (
        'norn_http_request_duration_seconds_count{method="GET",'
        'route="/api/v1/pipelines/{pipeline_id}"} 2.0' in text
    )
    assert "_created" not in text


def test_every_app_has_its_own_registry() -> None:
    first, second = NornMetrics(), NornMetrics()
    first.observe_request("GET", "/health", 200, 0.001)
    assert "norn_http_requests_total{" in _exposed(first)
    assert "norn_http_requests_total{" not in _exposed(second)


def test_events_appended_are_counted_by_type_and_run_events_as_transitions() -> None:
    metrics = NornMetrics()
    metrics.events.add(
        ["domain.run:RunQueued", "domain.run:RunStarted", "domain.run:RunStepStarted"]
    )
    metrics.events.add(["domain.run:RunSucceeded", "domain.run:RunRequeued"])
    text = _exposed(metrics)
    assert 'norn_events_appended_total{type="RunQueued"} 1.0' in text
    assert 'norn_events_appended_total{type="RunStepStarted"} 1.0' in text
    assert 'norn_run_transitions_total{status="queued"} 2.0' in text
    assert 'norn_run_transitions_total{status="running"} 1.0' in text
    assert 'norn_run_transitions_total{status="succeeded"} 1.0' in text


def test_commands_and_run_durations() -> None:
    metrics = NornMetrics()
    observe = command_observer(metrics, "pipelines")
    observe("create", "ok")
    observe("create", "VersionConflict")
    metrics.observe_run("succeeded", 12.5)
    text = _exposed(metrics)
    assert 'norn_commands_total{command="pipelines.create",outcome="ok"} 1.0' in text
    assert 'norn_commands_total{command="pipelines.create",outcome="VersionConflict"} 1.0' in text
    assert 'norn_run_duration_seconds_count{status="succeeded"} 1.0' in text


class _Pool:
    def get_stats(self) -> dict[str, int]:
        return {"pool_size": 3, "pool_available": 1, "requests_waiting": 2, "pool_max": 8}


class _Executor:
    slots_in_use, slots_total = 2, 4


def test_pools_and_executor_slots_are_read_at_scrape_time() -> None:
    metrics = NornMetrics()
    assert "norn_db_pool" not in _exposed(metrics)
    assert "norn_executor_slots" not in _exposed(metrics)
    metrics.pools = {"store": _Pool()}
    metrics.executor = _Executor()
    text = _exposed(metrics)
    assert 'norn_db_pool_connections{pool="store"} 3.0' in text
    assert 'norn_db_pool_available{pool="store"} 1.0' in text
    assert 'norn_db_pool_waiting{pool="store"} 2.0' in text
    assert "norn_executor_slots_in_use 2.0" in text
    assert "norn_executor_slots 4.0" in text


def test_the_metrics_token_is_a_bearer_token() -> None:
    assert token_matches("Bearer s3cret-token-0123456", "s3cret-token-0123456")
    assert token_matches("bearer s3cret-token-0123456", "s3cret-token-0123456")
    assert not token_matches("Bearer s3cret-token-0123457", "s3cret-token-0123456")
    assert not token_matches("Basic s3cret-token-0123456", "s3cret-token-0123456")
    assert not token_matches("", "s3cret-token-0123456")


def _call(app: Any, path: str, authorization: str | None = None) -> tuple[str, bytes]:
    answered: list[str] = []
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    if authorization:
        environ["HTTP_AUTHORIZATION"] = authorization
    body = b"".join(app(environ, lambda status, headers: answered.append(status)))
    return answered[0], body


def test_the_metrics_port_checks_the_token_and_serves_only_metrics() -> None:
    metrics = NornMetrics()
    app = guarded_metrics_app(metrics.registry, "scrape-secret-0123456789")
    status, body = _call(app, "/metrics")
    assert status.startswith("401")
    assert json.loads(body)["error"]["code"] == "AUTHENTICATION_REQUIRED"
    status, body = _call(app, "/metrics", "Bearer scrape-secret-0123456789")
    assert status.startswith("200")
    assert b"# TYPE norn_http_requests_total counter" in body
    assert _call(app, "/other", "Bearer scrape-secret-0123456789")[0].startswith("404")
    assert _call(guarded_metrics_app(metrics.registry, None), "/metrics")[0].startswith("200")


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("NORN_LOG_FORMAT", "xml", "NORN_LOG_FORMAT must be text or json"),
        ("NORN_METRICS_PORT", "70000", "NORN_METRICS_PORT must be between 1 and 65535"),
        ("NORN_METRICS_TOKEN", "short", "NORN_METRICS_TOKEN must be at least 16 characters"),
    ],
)
def test_observability_settings_are_checked(variable: str, value: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        Settings.from_env({variable: value})


def test_observability_settings_parse() -> None:
    settings = Settings.from_env(
        {
            "NORN_LOG_FORMAT": "json",
            "NORN_METRICS_PORT": "9464",
            "NORN_METRICS_TOKEN": "scrape-secret-0123456789",
        }
    )
    assert (settings.log_format, settings.metrics_port) == ("json", 9464)
    assert "scrape-secret" not in repr(settings)
    assert Settings.from_env({}).metrics_port is None


async def test_scrapes_share_a_refresh_for_a_few_seconds() -> None:
    """/metrics is open by default: a burst of scrapes costs one refresh (one query and
    one NATS request), not one each."""
    from infrastructure.metrics_refresh import MetricsRefresher

    metrics = NornMetrics()
    refresher = MetricsRefresher(metrics, None, None, lambda: None, "S")  # type: ignore[arg-type]
    refreshes = 0

    async def counted() -> None:
        nonlocal refreshes
        refreshes += 1
        await asyncio.sleep(0.01)

    refresher.refresh = counted  # type: ignore[method-assign]
    await asyncio.gather(*(metrics.refresh() for _ in range(20)))  # type: ignore[misc]
    assert refreshes == 1


def test_scheduler_fires_are_counted_by_outcome_and_their_delays_observed() -> None:
    from dataclasses import dataclass, field

    @dataclass
    class Outcome:  # the fields of application/job_firing.py Outcome that metrics read
        fired: int = 0
        skipped: int = 0
        missed: int = 0
        refused: int = 0
        late: int = 0
        delays: list[float] = field(default_factory=list)

    metrics = NornMetrics()
    metrics.observe_fires(
        [Outcome(fired=2, late=1, delays=[0.2, 1.5]), Outcome(skipped=1, missed=3, refused=1)]
    )
    text = _exposed(metrics)
    for outcome, count in (
        ("fired", 2),
        ("skipped", 1),
        ("missed", 3),
        ("refused", 1),
        ("late", 1),
    ):
        assert f'norn_scheduler_fires_total{{outcome="{outcome}"}} {count}.0' in text
    assert "norn_scheduler_fire_delay_seconds_count 2.0" in text
    assert 'norn_scheduler_fire_delay_seconds_bucket{le="1.0"} 1.0' in text


def test_logging_writes_to_the_current_stderr_and_leaves_other_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handler bound to the stderr of its day wrote to a closed file once a host (pytest,
    per test) swapped stderr: "--- Logging error ---" in CI's output."""
    root = logging.getLogger()
    kept_handlers, kept_level = list(root.handlers), root.level
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        first, later = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        logs.configure_logging("INFO")
        logs.configure_logging("INFO")  # again: its own handler replaced, not doubled
        monkeypatch.setattr(sys, "stderr", later)
        first.close()
        logging.getLogger("norn.test").warning("after the swap")

        assert "after the swap" in later.getvalue()
        assert later.getvalue().count("after the swap") == 1
        assert foreign in root.handlers
    finally:
        root.handlers[:] = kept_handlers
        root.setLevel(kept_level)
