"""/metrics, /health/live and /health/detailed on the real app (the wiring; the metric
names, labels and log lines are unit-tested in tests/unit/test_observability.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import re

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user, running_app, unique
from tests.integration.run_helpers import (
    ALL_ROLES,
    make_pipeline,
    run_settings,
    step,
    tenant_editor,
    trigger,
    wait_run,
)
from tests.support.log_lines import json_log_lines

ADMIN = ("root-admin", "correct-horse-staple-42")
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _samples(text: str, name: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    ]


def _value(text: str, name: str) -> float:
    (line,) = _samples(text, name)
    return float(line.rpartition(" ")[2])


async def test_metrics_label_routes_by_template_and_carry_no_ids(
    module_app: AsyncTestClient,
) -> None:
    admin = await login(module_app, *ADMIN)
    tenant_id, _ = await make_tenant_user(module_app, admin, unique("metrics"))
    await module_app.get(f"/api/v1/tenants/{tenant_id}", headers=admin)
    await module_app.get("/no/such/path/" + tenant_id)

    response = await module_app.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert tenant_id not in text
    assert not UUID_TEXT.search(text), "an id in a label value"
    requests = _samples(text, "norn_http_requests_total")
    assert any(
        'method="GET",route="/api/v1/tenants/{tenant_id}",status="200"' in line for line in requests
    ), requests
    assert any('route="unmatched",status="404"' in line for line in requests), requests
    assert _samples(text, "norn_http_request_duration_seconds_bucket")
    assert any(
        'command="tenants.create",outcome="ok"' in line
        for line in _samples(text, "norn_commands_total")
    )
    assert any(
        'type="TenantCreated"' in line for line in _samples(text, "norn_events_appended_total")
    )
    for pool in ("store", "read", "sync"):
        assert any(f'pool="{pool}"' in line for line in _samples(text, "norn_db_pool_connections"))
    assert _samples(text, "norn_relay_published_position")
    assert any('projection="' in line for line in _samples(text, "norn_projection_position"))
    assert _samples(text, "norn_database_up") == ["norn_database_up 1.0"]
    # Refreshed for the scrape: the store head is where the relay published to.
    head = _value(text, "norn_store_head_position")
    assert head > 0
    assert _value(text, "norn_relay_published_position") <= head
    runs_now = _samples(text, "norn_runs")
    assert {line.split(" ")[0] for line in runs_now} == {
        'norn_runs{status="queued"}',
        'norn_runs{status="running"}',
    }


async def test_health_live_answers_without_authentication(module_app: AsyncTestClient) -> None:
    response = await module_app.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert (await module_app.get("/health")).json() == {"status": "ok"}


async def test_health_detailed_is_for_platform_admins(module_app: AsyncTestClient) -> None:
    anonymous = await module_app.get("/health/detailed")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
    admin = await login(module_app, *ADMIN)
    _, tenant_admin = await make_tenant_user(module_app, admin, unique("health"), role="admin")
    refused = await module_app.get("/health/detailed", headers=tenant_admin)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "PERMISSION_DENIED"

    detailed = await module_app.get("/health/detailed", headers=admin)

    assert detailed.status_code == 200, detailed.text
    body = detailed.json()
    assert body["version"]
    components = body["components"]
    assert components["database"]["state"] == "up"
    assert components["database"]["head_position"] > 0
    assert set(components["database"]["pools"]) == {"store", "read", "sync"}
    assert components["database"]["version"][0].isdigit()  # PostgreSQL's own, e.g. "15.19"
    assert components["nats"]["state"] in ("up", "down")
    if components["nats"]["state"] == "up":
        assert components["nats"]["version"][0].isdigit()
    assert components["relay"]["state"] in ("leading", "standby")
    assert "lag_events" in components["relay"]
    assert {"pipelines", "runs"} <= set(components["projections"])
    assert all("lag_events" in p for p in components["projections"].values())
    assert components["executor"] == {"state": "not_in_this_process"}
    # The store's own readers (no scheduler or notifier runs here: they lag, visibly).
    head = components["database"]["head_position"]
    for reader in ("triggers", "notifier"):
        found = components[reader]
        assert found["lag_events"] == head - found["position"] >= 0, (reader, found)


async def test_a_metrics_token_is_required_once_set(settings: Settings) -> None:
    token = "scrape-secret-0123456789"
    async with running_app(
        dataclasses.replace(settings, metrics_token=token), roles=frozenset()
    ) as client:
        missing = await client.get("/metrics")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert right.status_code == 200
        assert "norn_http_requests_total" in right.text


async def test_a_run_shows_in_the_metrics_and_its_log_lines_name_it(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant_id, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client, editor, "p", step("emit", "Test.emit", config={"count": 2})
        )
        with json_log_lines() as lines:
            run_id = (await trigger(client, editor, pipeline_id))["run_id"]
            assert (await wait_run(client, editor, run_id))["status"] == "succeeded"

        text = (await client.get("/metrics")).text

    transitions = _samples(text, "norn_run_transitions_total")
    for status in ("queued", "running", "succeeded"):
        assert f'norn_run_transitions_total{{status="{status}"}} 1.0' in transitions, transitions
    assert 'norn_run_duration_seconds_count{status="succeeded"} 1.0' in text
    assert _value(text, "norn_executor_slots") == settings.executor_concurrency
    assert 'norn_commands_total{command="runs.trigger",outcome="ok"} 1.0' in text
    ended = [line for line in lines if line["message"].startswith(f"run {run_id} attempt 1")]
    assert ended, [line["message"] for line in lines]
    assert all(line.get("run_id") == run_id for line in ended)
    assert all(line.get("tenant_id") == tenant_id for line in ended)


async def test_an_api_process_without_the_relay_reports_how_far_it_published(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    admin = await login(module_app, *ADMIN)
    created = await module_app.post(
        "/api/v1/tenants", json={"name": unique("relay")}, headers=admin
    )
    assert created.status_code == 201
    position = created.json()["position"]
    await module_app.get(
        f"/api/v1/tenants/{created.json()['id']}",
        params={"min_position": position},
        headers=admin,
    )  # projected, hence published
    async with running_app(module_settings, roles=frozenset()) as api_only:
        admin_there = await login(api_only, *ADMIN)
        for _ in range(100):  # its live-feed NATS connection is made in the background
            body = (await api_only.get("/health/detailed", headers=admin_there)).json()
            if body["components"]["nats"]["state"] == "up":
                break
            await asyncio.sleep(0.05)
        relay = body["components"]["relay"]
        assert relay["state"] == "elsewhere", relay
        assert relay["published_position"] >= position
        assert relay["lag_events"] >= 0
        assert body["components"]["projections"]["tenants"]["lag_events"] >= 0


async def test_only_a_process_with_a_metrics_port_refreshes_the_metrics_on_a_timer(
    settings: Settings,
) -> None:
    """The store head, lags and queue depth cost queries: the API refreshes them when
    scraped, a metrics port every 5 s, and a process nobody can scrape never."""
    from api.bootstrap import Roles, build_container

    assert settings.database_url and settings.nats_url
    for port, refreshing in ((None, False), (9464, True)):
        container = build_container(
            dataclasses.replace(settings, metrics_port=port),
            settings.database_url,
            settings.nats_url,
        )
        roles = Roles(container, set())
        try:
            await container.read_pool.open()
            await roles.start()
            names = {task.get_name() for task in asyncio.all_tasks()}
            assert ("metrics" in names) is refreshing
        finally:
            await roles.stop()
            await container.read_pool.close()
            container.close()
