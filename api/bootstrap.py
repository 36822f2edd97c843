"""The composition root: the one place that builds and wires every component. The CLI,
the app factory and the tests all go through it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api.cli_support import admin_password_block
from application.api_keys import ApiKeyService
from application.authentication import RequestAuthentication
from application.authoring.service import AuthoringService
from application.connections import ConnectionService
from application.deployment_verification import DeploymentVerification
from application.deployments import DeploymentService
from application.event_store import NornEventStore
from application.event_triggers import EventTriggers
from application.executor import RunExecutor
from application.job_firing import JobFiring
from application.jobs import JobService
from application.logins import LoginPolicy, LoginService
from application.pipeline_rollbacks import PipelineRollbacks
from application.pipelines import PipelineService
from application.point_in_time import PointInTime
from application.recovery import RunRecovery
from application.run_execution import ExecutorPolicy
from application.runs import RunService
from application.secrets import SecretService
from application.sessions import SessionService
from application.tenants import TenantService
from application.users import UserService
from application.webhooks import WebhookService
from infrastructure import nats as norn_nats
from infrastructure.api_key_secrets import ApiKeySecrets
from infrastructure.api_key_usage import ApiKeyUsage
from infrastructure.append_pokes import AppendPokes
from infrastructure.authoring_catalog import (
    CatalogForAuthoring,
    GeneratorNotFound,
    load_generator,
)
from infrastructure.connectors import check_connection
from infrastructure.database_availability import DatabaseAvailability
from infrastructure.embedded import Announce, EmbeddedNats, EmbeddedPostgres
from infrastructure.executor_role import ExecutorConfig, ExecutorRole
from infrastructure.heartbeats import PostgresHeartbeats
from infrastructure.idempotency import IdempotencyStore
from infrastructure.leadership import AdvisoryLocks
from infrastructure.live_events import LiveEvents
from infrastructure.login_throttle import PostgresLoginThrottle
from infrastructure.metrics import NornMetrics
from infrastructure.metrics_refresh import MetricsRefresher, any_of
from infrastructure.migrations import migrate
from infrastructure.notifier_role import NotifierRole, url_problem
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.plugins.postgres_guard import protected_databases
from infrastructure.postgres import (
    create_read_pool,
    create_sync_pool,
    decode_json_with_msgspec,
    open_event_store,
)
from infrastructure.rate_limit import RateLimit
from infrastructure.rate_limit_sync import SyncedRateLimiter
from infrastructure.relay import Relay
from infrastructure.relay_feed import RelayFeed
from infrastructure.run_logs import RunLogs
from infrastructure.scheduler_role import SchedulerRole
from infrastructure.secret_store import MasterKeys, PostgresSecretValues, data_dir_master_keys
from infrastructure.security import Argon2PasswordHasher, TokenService, data_dir_keys
from infrastructure.settings import Settings, SettingsError
from infrastructure.step_runner import PluginStepRunner
from infrastructure.stream_limits import StreamSlots
from infrastructure.supervision import Backoff, retry
from infrastructure.trigger_role import TriggerRole
from infrastructure.webhook_deliveries import PostgresWebhookOutbox
from infrastructure.webhook_protocol import RetryPolicy
from infrastructure.webhook_secrets import PostgresWebhookSecrets, SecretCipher
from projections import (
    ALL_PROJECTIONS,
    PROJECTOR_GROUP,
    DeploymentQueries,
    LivePositions,
    ProjectionRunner,
    RunnerSessions,
    VerifyingDeployments,
)
from projections.api_keys import ApiKeyQueries
from projections.audit_queries import AuditQueries
from projections.broadcast import follow_positions
from projections.connections import ConnectionQueries, PipelineConnectionReferences
from projections.job_queries import JobQueries
from projections.pipelines import PipelineQueries
from projections.request_facts import RequestFactsQuery
from projections.run_queries import RunQueries
from projections.secrets import PipelineSecretReferences, SecretQueries
from projections.step_history import StepHistoryQueries
from projections.tenants import TenantQueries
from projections.usage import ReadModelUsage
from projections.users import UserQueries
from projections.webhook_queries import WebhookQueries

log = logging.getLogger(__name__)

ROLES = ("api", "relay", "projector", "executor")


@dataclass
class Servers:
    """Where Postgres and NATS are, and the embedded ones this process uses (shared
    with the other processes of its data dir: stop() lets go, see infrastructure/embedded)."""

    database_url: str
    nats_url: str
    embedded: list[EmbeddedPostgres | EmbeddedNats] = field(default_factory=list)

    def stop(self) -> None:
        for server in reversed(self.embedded):
            with contextlib.suppress(Exception):
                server.stop()
        self.embedded.clear()


def start_servers(
    settings: Settings,
    *,
    run_migrations: bool = True,
    nats: bool = True,
    announce: Announce | None = None,
) -> Servers:
    """Use the configured servers, or the embedded ones under the data dir: those
    already running (another process of the data dir started them), else new ones.
    `nats=False`: PostgreSQL only (a command that never publishes nor consumes).
    `announce` is told of each server started here (an operator command: on stderr)."""
    servers = Servers(database_url=settings.database_url or "", nats_url=settings.nats_url or "")
    try:
        if not settings.database_url:
            pg = EmbeddedPostgres(settings.data_dir)
            servers.embedded.append(pg)
            servers.database_url = pg.start(announce=announce)
        if nats and not settings.nats_url:
            nats_server = EmbeddedNats(settings.data_dir)
            servers.embedded.append(nats_server)
            servers.nats_url = nats_server.start(announce=announce)
        if run_migrations:
            migrate(servers.database_url)
    except BaseException:
        servers.stop()
        raise
    return servers


@dataclass
class Container:
    settings: Settings
    database_url: str
    nats_url: str
    store: NornEventStore
    read_pool: AsyncConnectionPool
    sync_pool: ConnectionPool
    plugins: PluginCatalog
    tokens: TokenService
    usage: ReadModelUsage
    tenants: TenantService
    users: UserService
    sessions: SessionService
    authentication: RequestAuthentication
    logins: LoginService
    pipelines: PipelineService
    pipeline_queries: PipelineQueries
    runs: RunService
    run_queries: RunQueries
    deployments: DeploymentService
    rollbacks: PipelineRollbacks
    jobs: JobService
    job_queries: JobQueries
    deployment_queries: DeploymentQueries
    run_logs: RunLogs
    tenant_queries: TenantQueries
    user_queries: UserQueries
    idempotency: IdempotencyStore
    api_keys: ApiKeyService
    api_key_queries: ApiKeyQueries
    api_key_usage: ApiKeyUsage
    rate_limiter: SyncedRateLimiter
    rate_limits: dict[str, RateLimit]
    stream_slots: StreamSlots
    """Open SSE and WebSocket streams per tenant, against `stream_limits` (per plan)."""
    stream_limits: dict[str, int]
    live_events: LiveEvents
    """One NATS subscription for all the process's live feeds (SSE and WebSocket)."""
    audit_queries: AuditQueries
    """The audit trail's read model (projections/audit_queries.py)."""
    point_in_time: PointInTime
    """?as_of= reads, rebuilt from the event store (application/point_in_time.py)."""
    nats: NatsClient | None = None
    relay: Relay | None = None
    database: DatabaseAvailability | None = None
    """Whether PostgreSQL answers: every pool checks it before waiting for a connection."""
    metrics: NornMetrics = field(default_factory=NornMetrics)
    """This process's Prometheus metrics (its own registry: tests run several apps)."""
    executor: ExecutorRole | None = None
    """The executor role, if this process runs it (health and metrics look at it)."""
    positions: LivePositions = field(default_factory=LivePositions)
    # Webhooks (README "Webhooks"); None only in containers built by hand.
    webhooks: WebhookService | None = None
    webhook_queries: WebhookQueries | None = None
    webhook_secrets: PostgresWebhookSecrets | None = None
    # Tenant secrets (README "Secrets"); None only in containers built by hand.
    secrets: SecretService | None = None
    secret_queries: SecretQueries | None = None
    # Authoring help (README "Authoring help"); None only in containers built by hand.
    authoring: AuthoringService | None = None
    step_history: StepHistoryQueries | None = None
    # Tenant connections (README "Connections"); None only in containers built by hand.
    connections: ConnectionService | None = None
    connection_queries: ConnectionQueries | None = None
    """Where this process's projection runners are (if it runs the projector role): the
    API's min_position waits and readiness consult it before the tracking rows."""

    def close(self) -> None:
        if self.database is not None:
            self.database.close()
        self.store.close()
        self.sync_pool.close()


def build_container(settings: Settings, database_url: str, nats_url: str) -> Container:
    decode_json_with_msgspec()
    # One verdict on PostgreSQL's availability for every pool of the process.
    database = DatabaseAvailability(database_url)
    store = open_event_store(database_url, settings.db_pool_size, database)
    read_pool = create_read_pool(database_url, settings.db_pool_size, database)
    sync_pool = create_sync_pool(database_url, settings.db_pool_size, database)
    plugins = PluginCatalog.with_entry_points(settings.plugin_refs)
    if settings.jwt_secret:
        keys = [settings.jwt_secret, *settings.previous_jwt_secrets]
    else:
        keys = data_dir_keys(settings.data_dir)
    tokens = TokenService(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
    )
    hasher = Argon2PasswordHasher(*settings.password_hash_params())
    usage = ReadModelUsage(sync_pool)
    api_keys = ApiKeyService(store, ApiKeySecrets())
    pipelines = PipelineService(store, plugins, usage)
    runs = RunService(store, pipelines, usage, max_attempts=settings.run_max_attempts)
    deployments = DeploymentService(store, pipelines, runs)
    sessions = SessionService(store, hasher, tokens)
    # A request's credentials: one query for the versions of what they name, on the
    # event loop (RequestFactsQuery), in a thread for the dashboard's cookie.
    authentication = RequestAuthentication(
        store, tokens, api_keys, facts=usage, async_facts=RequestFactsQuery(read_pool)
    )
    rate_limits = settings.plan_rate_limits()
    login_policy = LoginPolicy(
        lock_after_user=settings.login_lock_after,
        lock_after_address=5 * settings.login_lock_after,
        lock_seconds=float(settings.login_lock_seconds),
    )
    container = _observed(
        Container(
            settings=settings,
            database_url=database_url,
            nats_url=nats_url,
            database=database,
            store=store,
            read_pool=read_pool,
            sync_pool=sync_pool,
            plugins=plugins,
            tokens=tokens,
            usage=usage,
            tenants=TenantService(store, usage),
            users=UserService(store, hasher),
            sessions=sessions,
            authentication=authentication,
            logins=LoginService(PostgresLoginThrottle(read_pool), login_policy),
            pipelines=pipelines,
            pipeline_queries=PipelineQueries(read_pool),
            runs=runs,
            run_queries=RunQueries(read_pool),
            deployments=deployments,
            rollbacks=PipelineRollbacks(store, pipelines, deployments),
            jobs=JobService(store, pipelines, deployments, runs),
            job_queries=JobQueries(read_pool),
            deployment_queries=DeploymentQueries(read_pool),
            run_logs=RunLogs(read_pool),
            tenant_queries=TenantQueries(read_pool),
            user_queries=UserQueries(read_pool),
            idempotency=IdempotencyStore(
                read_pool, ttl=timedelta(seconds=settings.idempotency_ttl)
            ),
            api_keys=api_keys,
            api_key_queries=ApiKeyQueries(read_pool),
            api_key_usage=ApiKeyUsage(read_pool),
            rate_limiter=SyncedRateLimiter(read_pool, rate_limits),
            rate_limits=rate_limits,
            stream_slots=StreamSlots(read_pool),
            stream_limits=settings.plan_stream_limits(),
            live_events=LiveEvents(settings.subject_prefix),
            audit_queries=AuditQueries(read_pool),
            point_in_time=PointInTime(store),
        )
    )
    _with_webhooks(container, keys)
    _with_secrets(container)
    _with_authoring(container)
    _with_connections(container)
    return container


def _with_authoring(container: Container) -> None:
    """Drafts, descriptions and analyses of pipelines. The generator an installation
    names (NORN_GENERATOR) is loaded now, so that a wrong name stops start-up."""
    c = container
    generator = None
    if c.settings.generator:
        try:
            generator = load_generator(c.settings.generator)
        except GeneratorNotFound as error:
            raise SettingsError(str(error)) from None
    c.authoring = AuthoringService(c.pipelines, CatalogForAuthoring(c.plugins), generator)
    c.step_history = StepHistoryQueries(c.read_pool)


def master_keys(settings: Settings) -> list[str]:
    """Tenant secrets' master keys, current first: NORN_SECRET_KEY (and the previous
    ones), else the data dir's (made on first start)."""
    if settings.secret_key:
        return [settings.secret_key, *settings.previous_secret_keys]
    return data_dir_master_keys(settings.data_dir)


def _with_secrets(container: Container) -> None:
    """Tenant secrets: values under a data key each, wrapped by the master key."""
    c = container
    values = PostgresSecretValues(c.sync_pool, MasterKeys(master_keys(c.settings)))
    c.secrets = SecretService(c.store, values, PipelineSecretReferences(c.sync_pool))
    c.secret_queries = SecretQueries(c.read_pool)


def _with_connections(container: Container) -> None:
    """Tenant connections: configs checked by their type, secrets looked up in the store."""
    c = container
    references = PipelineConnectionReferences(c.sync_pool)
    c.connections = ConnectionService(c.store, check_connection, references)
    c.connection_queries = ConnectionQueries(c.read_pool)


def _with_webhooks(container: Container, server_secrets: list[str]) -> None:
    """Webhook subscriptions: secrets encrypted under a key derived from the server's
    (JWT) secret; the SSRF guard at creation as for plugins."""
    c = container
    c.webhook_secrets = PostgresWebhookSecrets(c.sync_pool, SecretCipher(server_secrets))
    c.webhooks = WebhookService(
        c.store,
        c.webhook_secrets,
        url_problem(c.settings.allow_private_networks),
        PostgresWebhookOutbox(c.sync_pool),
    )
    c.webhook_queries = WebhookQueries(c.read_pool)


def _observed(container: Container) -> Container:
    """Hand the metrics what they read at scrape time (infrastructure/metrics.py)."""
    metrics = container.metrics
    metrics.database = container.database
    metrics.streams, metrics.live_events = container.stream_slots, container.live_events
    if metrics.open_streams is not None and metrics.live_listeners is not None:
        container.stream_slots.on_change = metrics.open_streams.set
        container.live_events.on_change = metrics.live_listeners.set
    metrics.pools = {
        "store": container.store.recorder.datastore.pool,  # type: ignore[attr-defined]
        "read": container.read_pool,
        "sync": container.sync_pool,
    }
    container.store.recorder.event_tally = metrics.events  # type: ignore[attr-defined]
    return container


def bootstrap_admin(container: Container, announce: Callable[[str], None] = print) -> None:
    """Create the platform admin named by settings; on the embedded default with none
    named, create `admin` with a random password and show it once."""
    settings = container.settings
    if settings.admin_username and settings.admin_password:
        if container.users.ensure_platform_admin(settings.admin_username, settings.admin_password):
            log.info("created platform admin %s", settings.admin_username)
        return
    if settings.database_url is None:
        password = secrets.token_urlsafe(18)
        if container.users.ensure_platform_admin("admin", password):
            announce(admin_password_block("admin", password))


APPENDING_ROLES = frozenset({"executor", "scheduler", "notifier"})
"""Background roles that append events (runs' progress, fires and triggers, a webhook
disabled): besides the HTTP API, what makes a process poke the relay."""


def pokes_needed(roles: set[str], serves_http: bool) -> bool:
    """Whether a process appends, so that its appends should poke a relay elsewhere
    (infrastructure/append_pokes.py): a relay or projector alone appends nothing, and
    keeps no NATS connection for pokes (its relay's poll would cover an append anyway)."""
    return serves_http or bool(roles & APPENDING_ROLES)


class Roles:
    """The background roles one process runs beside (or instead of) the HTTP API."""

    def __init__(self, container: Container, roles: set[str], *, serves_http: bool = True) -> None:
        self._container = container
        self._roles = roles
        self._serves_http = serves_http
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._runner_sessions: RunnerSessions | None = None
        self._pokes: asyncio.Task[None] | None = None
        # One session for the leadership locks of every role in this process (relay,
        # projection runners, executor maintenance): one backend instead of one each.
        # It connects when first used, so an API-only process opens none.
        self._locks = AdvisoryLocks(container.database_url)

    async def start(self) -> None:
        c, s = self._container, self._container.settings
        refresher = MetricsRefresher(
            c.metrics,
            c.read_pool,
            c.positions,
            any_of(lambda: c.nats, lambda: c.executor.nats if c.executor else None),
            s.nats_stream,
        )
        if s.metrics_port is not None or c.metrics.serves_workers:
            # Only a process serving /metrics on a port of its own (or to its HTTP
            # workers) refreshes them on a timer (its scrapes are answered from another
            # thread). The API refreshes
            # them when scraped, and a process nobody scrapes has no use for them: with
            # a backlog of queued runs, counting them every 5 s in every process cost
            # more than anything else its idle passes did.
            self._start(refresher.run(self._stop), "metrics")
        # The projector beside the relay takes the windows it reads in memory, not back
        # from NATS (infrastructure/relay_feed.py).
        feed = RelayFeed() if {"relay", "projector"} <= self._roles else None
        if "relay" in self._roles:
            c.relay = Relay(
                database_url=c.database_url,
                nats_url=c.nats_url,
                stream=s.nats_stream,
                subject_prefix=s.subject_prefix,
                locks=self._locks,
                feed=feed,
            )
            c.metrics.relay = c.relay
            self._start(c.relay.run(self._stop), "relay")
        # Appends made in this process wake its relay directly; unless that relay leads,
        # they poke the leading one over NATS (infrastructure/append_pokes.py).
        pokes = None
        if pokes_needed(self._roles, self._serves_http):
            pokes = AppendPokes(c.nats_url, s.subject_prefix)
            self._pokes = asyncio.create_task(pokes.run(self._stop), name="append-pokes")
        c.store.recorder.on_append = appended(c.relay, pokes)  # type: ignore[attr-defined]
        if "projector" in self._roles:
            # One leadership session and one small pool for all the runners, instead of
            # two connections each.
            self._runner_sessions = RunnerSessions(c.database_url, locks=self._locks)
            await self._runner_sessions.open()
            c.metrics.projection_positions = lambda: {
                p.name: c.positions.get(p.name) for p in ALL_PROJECTIONS
            }
            # One runner for every read model: each event is fetched, decoded and acked
            # once for all of them, not once per projection (docs/architecture.md §6).
            runner = ProjectionRunner(
                ALL_PROJECTIONS,
                name=PROJECTOR_GROUP,
                database_url=c.database_url,
                nats_url=c.nats_url,
                stream=s.nats_stream,
                subject_prefix=s.subject_prefix,
                positions=c.positions,
                sessions=self._runner_sessions,
                feed=feed,
            )
            self._start(runner.run(self._stop), "projector")
        if "executor" in self._roles:
            c.executor = c.metrics.executor = executor_role(c, self._locks)
            self._start(c.executor.run(self._stop), "executor")
        if "scheduler" in self._roles:
            firing = JobFiring(c.store, c.pipelines, c.runs, clock=lambda: datetime.now(UTC))
            scheduler = SchedulerRole(
                c.database_url,
                firing,
                lead=c.settings.scheduler_lead,
                observe=c.metrics.observe_fires,
            )
            self._start(scheduler.run(self._stop), "scheduler")
            triggers = TriggerRole(
                c.database_url,
                EventTriggers(c.store, c.runs),
                observe=c.metrics.observe_triggers,
            )
            self._start(triggers.run(self._stop), "triggers")
        if "notifier" in self._roles:
            notifier = notifier_role(c)
            self._start(notifier.run(self._stop), "notifier")

    def _start(self, role: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(role, name=name)
        task.add_done_callback(_said_if_failed)
        self._tasks.append(task)

    async def stop(self, grace: float = 10.0) -> None:
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._tasks.clear()
        if self._pokes is not None:
            # After the roles: what they append while stopping (runs handed back) still
            # pokes. It ends on the stop, unless a connect to NATS is under way.
            _, pending = await asyncio.wait({self._pokes}, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(self._pokes, return_exceptions=True)
            self._pokes = None
        if self._runner_sessions is not None:
            # After the runners: each persists its position on the way out.
            await self._runner_sessions.close()
            self._runner_sessions = None
        # After every role has released its lock (closing releases any left anyway).
        await self._locks.close()

    async def wait(self) -> None:
        await self._stop.wait()


def appended(relay: Relay | None, pokes: AppendPokes | None) -> Callable[[], None]:
    """The recorder's `on_append`: wake this process's relay, and poke over NATS unless
    it is the one that leads (a standby's wake-up publishes nothing)."""

    def on_append() -> None:
        if relay is not None:
            relay.wake()
            if relay.is_leader:
                return
        if pokes is not None:
            pokes.poke()

    return on_append


def _said_if_failed(task: asyncio.Task[Any]) -> None:
    """A role that ends with an error is logged when it ends, not at the process's stop:
    the process goes on without it, which an operator must learn at once."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("role %s failed and has stopped", task.get_name(), exc_info=error)


def executor_role(c: Container, locks: AdvisoryLocks | None = None) -> ExecutorRole:
    """The executor role over the container's store, pools and plugins; `locks`: the
    process's leadership session (the role opens its own without it)."""
    s = c.settings
    steps = PluginStepRunner(
        c.plugins,
        workspace_root=s.workspace_dir,
        files_root=s.files_dir,
        logs=c.run_logs,
        allow_private_networks=s.allow_private_networks,
        secrets=c.secrets,
        connections=c.connections,
        # Database plugins never reach Norn's own database, whatever the allowance.
        protected_databases=protected_databases(c.database_url),
    )
    heartbeats = PostgresHeartbeats(c.read_pool, c.sync_pool)
    verification = DeploymentVerification(c.store)
    candidates = VerifyingDeployments(c.sync_pool)
    executor = RunExecutor(
        c.store,
        steps,
        heartbeats,
        c.usage,
        executor_id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
        policy=ExecutorPolicy(heartbeat_interval=s.heartbeat_interval),
        run_ended=verification.run_ended,
    )
    config = ExecutorConfig(
        database_url=c.database_url,
        nats_url=c.nats_url,
        events_stream=s.nats_stream,
        prefix=s.subject_prefix,
        concurrency=s.executor_concurrency,
        maintenance_interval=min(5.0, s.heartbeat_interval),
    )
    recovery = RunRecovery(c.store, heartbeats, timeout=s.heartbeat_timeout, save=executor.save)
    return ExecutorRole(
        config,
        executor,
        recovery,
        steps,
        locks,
        c.metrics.observe_run,
        settle_verifications=functools.partial(verification.sweep_pass, candidates),
    )


def notifier_role(c: Container, policy: RetryPolicy | None = None, **options: Any) -> NotifierRole:
    """The notifier role over the container's webhooks (tests pass a faster `policy`)."""
    assert c.webhooks is not None and c.webhook_secrets is not None
    return NotifierRole(
        c.database_url,
        c.webhooks,
        c.webhook_secrets,
        allow_private_networks=c.settings.allow_private_networks,
        policy=policy,
        observe=c.metrics.observe_webhook,
        **options,
    )


async def connect_feed(container: Container, *, follow_projector: bool) -> None:
    """NATS for live feeds; retried in the background so the API starts without it
    (the API's lifespan cancels it on shutdown). `follow_projector`: the projector runs
    in another process, whose read-model positions then wake this one's read-your-writes
    waits (projections/broadcast.py)."""
    nc = await retry(
        "live feed: connecting to NATS",
        lambda: asyncio.wait_for(norn_nats.connect(container.nats_url, name="norn-api"), 5),
        backoff=Backoff(first=1.0, cap=5.0),
        quiet=(Exception,),  # an outage, not a bug: no traceback
        logger=log,
    )
    if follow_projector:
        # Kept across reconnects by the client (it subscribes again). Without it the
        # waits only poll the tracking rows: slower, never wrong.
        try:
            await follow_positions(nc, container.settings.subject_prefix, container.positions)
        except Exception as error:
            log.warning("not following the projector's positions: %r", error)
    container.nats = nc
