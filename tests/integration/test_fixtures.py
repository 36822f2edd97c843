"""The suite's own infrastructure: each test really gets an isolated, migrated database
and a JetStream server."""

import nats
import psycopg


def test_database_is_migrated_and_isolated(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {"norn_events", "projection_tracking", "pipelines", "schema_migrations"} <= tables
        assert conn.execute("SELECT count(*) FROM norn_events").fetchone() == (0,)


async def test_nats_has_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()
