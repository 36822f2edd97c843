"""Input.postgres -> Output.postgres end to end: a pipeline written over HTTP, run by the
executor role against real PostgreSQL and NATS, copying rows between tables of a
database the test creates (local trust auth: no password; NORN_ALLOW_PRIVATE_NETWORKS on,
the server being on loopback). The same executor refuses Norn's own database."""

from __future__ import annotations

from dataclasses import replace

from psycopg.conninfo import conninfo_to_dict

from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.postgres_support import OwnDatabase, pg
from tests.integration.run_helpers import (
    ALL_ROLES,
    make_pipeline,
    run_settings,
    step,
    steps_of,
    tenant_editor,
    trigger,
    wait_run,
)

__all__ = ["pg"]  # the fixture


async def test_a_pipeline_copies_rows_selected_by_a_run_param(
    pg: OwnDatabase, settings: Settings
) -> None:
    pg.sql("CREATE TABLE sales (id int PRIMARY KEY, region text, amount numeric, at date)")
    pg.sql("CREATE TABLE eu_sales (id int PRIMARY KEY, region text, amount numeric, at date)")
    pg.sql(
        "INSERT INTO sales SELECT n, CASE WHEN n % 3 = 0 THEN 'eu' ELSE 'us' END, n * 1.25,"
        " date '2026-01-01' + n FROM generate_series(1, 3000) n"
    )
    settings = replace(run_settings(settings), allow_private_networks=True)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        read = {
            **pg.connection,
            "query": "SELECT * FROM sales WHERE region = %(region)s ORDER BY id",
            "params": {"region": {"param": "region"}},
            "fetch_size": 250,
        }
        write = {**pg.connection, "table": "eu_sales", "mode": "upsert", "key": ["id"]}
        pipeline_id = await make_pipeline(
            client,
            editor,
            "copy-eu-sales",
            step("read", "Input.postgres", config=read),
            step("write", "Output.postgres", "read", config=write),
        )

        started = await trigger(client, editor, pipeline_id, params={"region": "eu"})
        run = await wait_run(client, editor, started["run_id"])

        assert run["status"] == "succeeded", run
        counts = {name: (s["records_in"], s["records_out"]) for name, s in steps_of(run).items()}
        assert counts == {"read": (0, 1000), "write": (1000, 1000)}
        assert pg.sql("SELECT * FROM sales WHERE region = 'eu' EXCEPT SELECT * FROM eu_sales") == []
        assert pg.sql("SELECT count(*) FROM eu_sales") == [(1000,)]


async def test_the_executor_refuses_norns_own_database(pg: OwnDatabase, settings: Settings) -> None:
    assert settings.database_url is not None
    own = conninfo_to_dict(settings.database_url)["dbname"]
    settings = replace(run_settings(settings), allow_private_networks=True)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        read = {**pg.connection, "host": "localhost", "database": own, "query": "TABLE runs"}
        pipeline_id = await make_pipeline(
            client, editor, "read-norn", step("read", "Input.postgres", config=read)
        )

        run = await wait_run(client, editor, (await trigger(client, editor, pipeline_id))["run_id"])

        assert run["status"] == "failed", run
        error = steps_of(run)["read"]["error"]
        assert "Norn's own database" in error, error
        assert steps_of(run)["read"]["attempts"] == 1  # not retried: it cannot pass
