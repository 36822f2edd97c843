"""Real PostgreSQL and NATS JetStream for every integration and end-to-end test.

NORN_TEST_DATABASE_URL / NORN_TEST_NATS_URL point at running servers; when unset, the
suite starts embedded ones itself. Each test gets its own database (copied from a
migrated template, ahead of time: tests/support/database_supply.py) and its own
JetStream stream and subject prefix."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from application.event_store import NornEventStore
from domain.events import CommandContext
from domain.tenant import Tenant
from infrastructure.embedded import EmbeddedNats, EmbeddedPostgres
from infrastructure.migrations import migrate
from infrastructure.postgres import create_sync_pool, open_event_store
from infrastructure.settings import Settings
from projections.usage import ReadModelUsage
from tests.support.database_supply import DatabaseSupply

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
# Tests make many requests quickly; the rate-limit tests set their own low limits.
GENEROUS_RATE_LIMITS = ",".join(
    f"{plan}=1000000/100000" for plan in ("free", "pro", "enterprise", "platform")
)
CHEAP_PASSWORD_HASH = "m=8,t=1,p=1"
"""argon2id at its lowest cost: microseconds instead of ~125 ms a hash (each app start
hashes the admin's password and a dummy one, each login verifies one). Only tests use
it: Settings.from_env refuses less than m=19456,t=2."""


@contextmanager
def _server_dir(kind: str) -> Iterator[Path]:
    """A directory for an embedded server, outside pytest's temporary root: as root,
    pgserver runs PostgreSQL as another user, and any other pytest session on the machine
    resets that root to 0700, cutting that user off from its data mid-run."""
    path = Path(tempfile.mkdtemp(prefix=f"norn-test-{kind}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """For a test that starts an embedded PostgreSQL itself: tmp_path would not do (see
    _server_dir; a pg_ctl start then timed out while another session ran)."""
    with _server_dir("own") as path:
        yield path


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("NORN_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with _server_dir("postgres") as path:
        server = EmbeddedPostgres(path)
        yield server.start()
        server.stop()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    url = os.environ.get("NORN_TEST_NATS_URL")
    if url:
        yield url
        return
    with _server_dir("nats") as path:
        server = EmbeddedNats(path)
        yield server.start()
        server.stop()


def _admin(pg_admin_url: str) -> psycopg.Connection:
    return psycopg.connect(pg_admin_url, autocommit=True)


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    name = f"norn_tpl_{os.getpid()}"
    with _admin(pg_admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(make_conninfo(pg_admin_url, dbname=name))
    yield name
    with _admin(pg_admin_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def database_supply(pg_admin_url: str, template_database: str) -> Iterator[DatabaseSupply]:
    supply = DatabaseSupply(pg_admin_url, template_database)
    yield supply
    supply.close()


@contextmanager
def _fresh_database(pg_admin_url: str, supply: DatabaseSupply) -> Iterator[str]:
    name = supply.take()
    try:
        yield make_conninfo(pg_admin_url, dbname=name)
    finally:
        supply.give_back(name)


@pytest.fixture
def database_url(pg_admin_url: str, database_supply: DatabaseSupply) -> Iterator[str]:
    """A fresh, migrated database for this test alone (made ahead: database_supply.py)."""
    with _fresh_database(pg_admin_url, database_supply) as url:
        yield url


@dataclass(frozen=True)
class NatsNames:
    stream: str
    prefix: str


@asynccontextmanager
async def _fresh_nats_names(nats_url: str) -> AsyncIterator[NatsNames]:
    token = uuid.uuid4().hex[:10]
    names = NatsNames(stream=f"T{token.upper()}_EVENTS", prefix=f"t{token}")
    try:
        yield names
    finally:
        nc = await nats.connect(nats_url)
        try:
            # The events stream, and the executors' work and dead-letter streams beside it.
            for stream in (names.stream, f"{names.stream}_WORK", f"{names.stream}_DEAD"):
                try:
                    await nc.jetstream().delete_stream(stream)
                except Exception:  # noqa: S110 - the test may never have created it
                    pass
        finally:
            await nc.close()


@pytest.fixture
async def nats_names(nats_url: str) -> AsyncIterator[NatsNames]:
    """A JetStream stream and subject prefix for this test alone (deleted afterwards)."""
    async with _fresh_nats_names(nats_url) as names:
        yield names


@pytest.fixture
def event_store(database_url: str) -> Iterator[NornEventStore]:
    store = open_event_store(database_url, pool_size=4)
    yield store
    store.close()


@pytest.fixture
def usage(database_url: str) -> Iterator[ReadModelUsage]:
    """Quota usage counted from the test database's read models."""
    pool = create_sync_pool(database_url, max_size=2)
    yield ReadModelUsage(pool)
    pool.close()


def seed_tenant(
    store: NornEventStore, tenant_id: uuid.UUID, name: str, plan: str = "enterprise"
) -> None:
    """A tenant for tests that drive services directly (no-op if it exists)."""
    if store.find(Tenant, tenant_id) is None:
        tenant = Tenant.create(
            tenant_id=tenant_id,
            name=name,
            description="",
            plan=plan,
            labels={},
            ctx=CommandContext("system:test", "seed"),
        )
        store.append(tenant)


@pytest.fixture
def settings(database_url: str, nats_url: str, nats_names: NatsNames, tmp_path: Path) -> Settings:
    return settings_for(database_url, nats_url, nats_names, tmp_path / "data")


@pytest.fixture(scope="module")
async def module_settings(
    pg_admin_url: str,
    database_supply: DatabaseSupply,
    nats_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Settings]:
    """Settings for one app shared by a module's tests (tests/integration/conftest.py
    `module_app`): their own database and stream, but this module's, not each test's."""
    with _fresh_database(pg_admin_url, database_supply) as url:
        async with _fresh_nats_names(nats_url) as names:
            yield settings_for(url, nats_url, names, tmp_path_factory.mktemp("data"))


def settings_for(database_url: str, nats_url: str, names: NatsNames, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        nats_url=nats_url,
        data_dir=data_dir,
        jwt_secret=TEST_JWT_SECRET,
        nats_stream=names.stream,
        subject_prefix=names.prefix,
        admin_username="root-admin",
        admin_password="correct-horse-staple-42",
        db_pool_size=4,
        min_position_timeout=10.0,
        rate_limits=GENEROUS_RATE_LIMITS,
        password_hash_cost=CHEAP_PASSWORD_HASH,
    )
