"""All configuration, read once from NORN_* environment variables and validated at start.

A bad value stops start-up with one message naming the variable and what is wrong."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from domain.tenant import PLANS
from infrastructure.rate_limit import RateLimit
from infrastructure.stream_limits import parse_stream_limits

RATE_LIMITED_PLANS = (*PLANS, "platform")
"""The tenant plans, and `platform` for platform admins."""


HTTP_WORKERS_BY_DEFAULT = 2
"""API-only worker processes started beside `norn serve` (which then runs only the
roles; `norn api`, which answers too, starts one fewer: `default_http_workers`) unless
NORN_HTTP_WORKERS says otherwise, where the process may use two cores or more; none on
one core. One worker is one Python
process: its GIL caps it below a core (0.83 of one under wrk's creates, 11 context
switches per create between its event loop and its command threads) while a quarter of
the two cores stood idle. Two, measured in turn on two cores in one sitting: creates
from wrk 16.1-16.4% of raw INSERT+COMMIT against 13.3-14.0%, GETs 3,084-3,231/s
against 2,341-2,412/s, the read models' lag at 500 creates/s about the same (README
"HTTP workers")."""


class SettingsError(ValueError):
    pass


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_http_workers(*, answers_itself: bool = False) -> int:
    """Workers when NORN_HTTP_WORKERS is unset: HTTP_WORKERS_BY_DEFAULT beside `norn serve`
    where it may use two cores, none on one; one fewer beside `norn api`, which answers
    too, so that as many processes answer in either."""
    if usable_cores() < 2:
        return 0
    return HTTP_WORKERS_BY_DEFAULT - 1 if answers_itself else HTTP_WORKERS_BY_DEFAULT


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    """NORN_DATABASE_URL: PostgreSQL URL; unset = embedded server under the data dir."""
    nats_url: str | None = None
    """NORN_NATS_URL: NATS URL; unset = embedded nats-server with JetStream."""
    data_dir: Path = Path(".norn")
    host: str = "127.0.0.1"
    port: int = 8080
    admin_username: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    """NORN_JWT_SECRET: HS256 signing key (>= 32 bytes); unset = generated and kept in
    the data dir."""
    jwt_previous_secrets: str | None = field(default=None, repr=False)
    """NORN_JWT_PREVIOUS_SECRETS: comma-separated older keys that still verify tokens
    they signed (key rotation)."""
    secret_key: str | None = field(default=None, repr=False)
    """NORN_SECRET_KEY: the master key of tenant secrets (32 bytes, base64url); unset =
    generated and kept in the data dir (secrets.key). Every process that reads or writes
    secrets needs the same one: set it when roles run on several hosts."""
    secret_previous_keys: str | None = field(default=None, repr=False)
    """NORN_SECRET_PREVIOUS_KEYS: comma-separated older master keys, still unwrapping the
    data keys `norn secrets rotate-key` has not re-wrapped yet."""
    jwt_issuer: str = "norn"
    jwt_audience: str = "norn-api"
    access_token_ttl: int = 900
    refresh_token_ttl: int = 7 * 24 * 3600
    nats_stream: str = "NORN_EVENTS"
    subject_prefix: str = "norn"
    db_pool_size: int = 10
    max_body_bytes: int = 1_048_576
    min_position_timeout: float = 5.0
    idempotency_ttl: int = 24 * 3600
    """NORN_IDEMPOTENCY_TTL: seconds an Idempotency-Key is remembered."""
    rate_limits: str = "free=100/20,pro=1000/100,enterprise=10000/500,platform=10000/500"
    """NORN_RATE_LIMITS: requests per hour / burst, per plan (platform: platform admins)."""
    stream_limits: str = "free=5,pro=50,enterprise=500,platform=100"
    """NORN_STREAM_LIMITS: open event streams (SSE and WebSocket together) per tenant, per
    plan (platform: platform admins, all together)."""
    login_lock_after: int = 10
    """NORN_LOGIN_LOCK_AFTER: failed logins of one username before it is locked."""
    login_lock_seconds: int = 900
    password_hash_cost: str = "m=65536,t=3,p=4"  # noqa: S105 - a cost, not a secret
    """NORN_PASSWORD_HASH_COST: argon2id cost of new password hashes, in argon2's own
    notation (memory KiB, iterations, lanes); at least m=19456,t=2 (OWASP's minimum).
    Existing hashes keep the cost they were made with. The test suite builds its
    settings directly, without this check, with a far lower cost."""
    files_root: Path | None = None
    """NORN_FILES_ROOT: tenants' folders for file plugins; unset = <data dir>/files."""
    workspace_root: Path | None = None
    """NORN_WORKSPACE_ROOT: runs' scratch space; unset = <data dir>/runs."""
    allow_private_networks: bool = False
    """NORN_ALLOW_PRIVATE_NETWORKS=1: plugins may reach private and loopback addresses."""
    plugins: str = ""
    """NORN_PLUGINS: extra plugin classes to load, as module:Class, comma-separated."""
    generator: str = ""
    """NORN_GENERATOR: the `norn.generators` entry point that drafts pipelines for POST
    /pipelines/generate (README "Authoring help"); unset = the built-in offline one."""
    executor_concurrency: int = 4
    """NORN_EXECUTOR_CONCURRENCY: runs one executor process runs at a time."""
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    """NORN_HEARTBEAT_TIMEOUT: a running run whose executor has not beaten for this long
    is recovered."""
    scheduler_lead: float = 5.0
    """NORN_SCHEDULER_LEAD: seconds before a due time that a scheduler plans its jobs and
    builds their runs, so that at the time only their appends are left (0: plan at it)."""
    run_max_attempts: int = 3
    """NORN_RUN_MAX_ATTEMPTS: executions of a run before an executor loss marks it
    crashed instead of queueing it again."""
    execute_wait_timeout: float = 60.0
    """NORN_EXECUTE_WAIT_TIMEOUT: longest wait of POST /pipelines/execute with wait."""
    forwarded_allow_ips: str = "127.0.0.1"
    """NORN_FORWARDED_ALLOW_IPS: reverse proxies (comma-separated IPs or networks, or *)
    whose X-Forwarded-For gives the client address."""
    http_keepalive: int = 65
    """NORN_HTTP_KEEPALIVE: seconds an idle client connection is kept open. Longer than
    the idle timeouts of clients' pools (httpx 5 s) and load balancers (AWS ALB 60 s), so
    that the client side always closes first: a server that closes first races a request
    the client is sending on that connection, which the client sees as a reset."""
    log_level: str = "INFO"
    log_format: str = "text"
    """NORN_LOG_FORMAT: text, or json (one object per line: time, level, logger,
    message, request_id/tenant_id/run_id when known, exception)."""
    metrics_token: str | None = field(default=None, repr=False)
    """NORN_METRICS_TOKEN: if set, GET /metrics needs `Authorization: Bearer <token>`."""
    metrics_port: int | None = None
    """NORN_METRICS_PORT: where `norn relay|projector|executor` serve /metrics (they
    serve no HTTP otherwise); unset = no metrics endpoint for them."""
    http_workers: int | None = None
    """NORN_HTTP_WORKERS: API-only worker processes started beside this one, answering
    HTTP on its port (api/http_workers.py). For `norn serve`: with 0, the serve process
    answers itself, beside every background role; with N >= 1, N workers answer and it
    runs only the background roles. For `norn api`: it answers too, beside N workers.
    Unset (None): `default_http_workers` (`http_workers_beside`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"NORN_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def http_workers_beside(self, *, answers_itself: bool) -> int:
        """The HTTP workers to start beside this process: NORN_HTTP_WORKERS, else the
        default for a process that answers HTTP itself (`norn api`) or not (`norn serve`
        with workers)."""
        if self.http_workers is not None:
            return self.http_workers
        return default_http_workers(answers_itself=answers_itself)

    def validate(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append("NORN_PORT must be between 1 and 65535")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            problems.append("NORN_JWT_SECRET must be at least 32 bytes")
        if (self.admin_username is None) != (self.admin_password is None):
            problems.append("set both NORN_ADMIN_USERNAME and NORN_ADMIN_PASSWORD, or neither")
        elif self.admin_username is not None and self.admin_password is not None:
            # Checked here, before a first start initialises anything, not when the
            # admin is created at the end of it.
            from application.users import check_password_policy
            from domain.errors import InvalidCommand

            try:
                check_password_policy(self.admin_username, self.admin_password)
            except InvalidCommand as error:
                problems.append(f"NORN_ADMIN_PASSWORD: {error}")
        if not 0 <= self.scheduler_lead <= 30:
            problems.append("NORN_SCHEDULER_LEAD must be between 0 and 30 seconds")
        if not 1 <= self.http_keepalive <= 3600:
            problems.append("NORN_HTTP_KEEPALIVE must be between 1 and 3600 seconds")
        if self.access_token_ttl < 30:
            problems.append("NORN_ACCESS_TOKEN_TTL must be at least 30 seconds")
        if not self.subject_prefix.replace("_", "").replace("-", "").isalnum():
            problems.append("NORN_SUBJECT_PREFIX must be letters, digits, '_' or '-'")
        if self.db_pool_size < 2:
            problems.append("NORN_DB_POOL_SIZE must be at least 2")
        if not 1024 <= self.max_body_bytes <= 100_000_000:
            problems.append("NORN_MAX_BODY_BYTES must be between 1024 and 100000000")
        if not 0 < self.min_position_timeout <= 60:
            problems.append("NORN_MIN_POSITION_TIMEOUT must be more than 0 and at most 60 seconds")
        if not 60 <= self.idempotency_ttl <= 30 * 24 * 3600:
            problems.append("NORN_IDEMPOTENCY_TTL must be between 60 seconds and 30 days")
        if not self.nats_stream.replace("_", "").replace("-", "").isalnum():
            problems.append("NORN_NATS_STREAM must be letters, digits, '_' or '-'")
        for secret in self.previous_jwt_secrets:
            if len(secret.encode()) < 32:
                problems.append("every key in NORN_JWT_PREVIOUS_SECRETS must be at least 32 bytes")
                break
        problems.extend(self._secret_key_problems())
        try:
            self.plan_rate_limits()
        except ValueError as error:
            problems.append(f"NORN_RATE_LIMITS {error}")
        try:
            self.plan_stream_limits()
        except ValueError as error:
            problems.append(f"NORN_STREAM_LIMITS {error}")
        if not 3 <= self.login_lock_after <= 1000:
            problems.append("NORN_LOGIN_LOCK_AFTER must be between 3 and 1000")
        if not 1 <= self.login_lock_seconds <= 86_400:
            problems.append("NORN_LOGIN_LOCK_SECONDS must be between 1 and 86400")
        try:
            memory, iterations, lanes = self.password_hash_params()
        except ValueError as error:
            problems.append(f"NORN_PASSWORD_HASH_COST {error}")
        else:
            if memory < 19456 or iterations < 2 or not 1 <= lanes <= 16:
                problems.append(
                    "NORN_PASSWORD_HASH_COST must be at least m=19456,t=2 with p from 1 to 16"
                )
        if not 1 <= self.executor_concurrency <= 1000:
            problems.append("NORN_EXECUTOR_CONCURRENCY must be between 1 and 1000")
        if not 0.1 <= self.heartbeat_interval <= 300:
            problems.append("NORN_HEARTBEAT_INTERVAL must be between 0.1 and 300 seconds")
        if not 2 * self.heartbeat_interval <= self.heartbeat_timeout <= 3600:
            problems.append(
                "NORN_HEARTBEAT_TIMEOUT must be at least twice NORN_HEARTBEAT_INTERVAL "
                "and at most 3600 seconds"
            )
        if not 1 <= self.run_max_attempts <= 10:
            problems.append("NORN_RUN_MAX_ATTEMPTS must be between 1 and 10")
        if not 0 < self.execute_wait_timeout <= 3600:
            problems.append("NORN_EXECUTE_WAIT_TIMEOUT must be more than 0 and at most 3600")
        for ref in self.plugin_refs:
            module, _, attr = ref.partition(":")
            if not module or not attr:
                problems.append(f"NORN_PLUGINS entries read module:Class, not {ref!r}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            problems.append("NORN_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if self.log_format not in ("text", "json"):
            problems.append("NORN_LOG_FORMAT must be text or json")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            problems.append("NORN_METRICS_PORT must be between 1 and 65535")
        if self.http_workers is not None and not 0 <= self.http_workers <= 64:
            problems.append("NORN_HTTP_WORKERS must be between 0 and 64")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            problems.append("NORN_METRICS_TOKEN must be at least 16 characters")
        if self.database_url is not None and (error := _conninfo_problem(self.database_url)):
            problems.append(f"NORN_DATABASE_URL is not a PostgreSQL URL: {error}")
        if problems:
            raise SettingsError("; ".join(problems))

    def _secret_key_problems(self) -> list[str]:
        from infrastructure.secret_store import parse_master_key

        problems = []
        for name, keys in (
            ("NORN_SECRET_KEY", (self.secret_key,) if self.secret_key is not None else ()),
            ("NORN_SECRET_PREVIOUS_KEYS", self.previous_secret_keys),
        ):
            for key in keys:
                try:
                    parse_master_key(key)
                except ValueError as error:
                    problems.append(f"{name} {error}")
                    break
        if self.previous_secret_keys and self.secret_key is None:
            problems.append("NORN_SECRET_PREVIOUS_KEYS needs NORN_SECRET_KEY (the new key)")
        return problems

    @property
    def previous_secret_keys(self) -> tuple[str, ...]:
        raw = self.secret_previous_keys or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    @property
    def plugin_refs(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.plugins.split(",") if part.strip())

    @property
    def files_dir(self) -> Path:
        return self.files_root or self.data_dir / "files"

    @property
    def workspace_dir(self) -> Path:
        return self.workspace_root or self.data_dir / "runs"

    @property
    def previous_jwt_secrets(self) -> tuple[str, ...]:
        raw = self.jwt_previous_secrets or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def plan_rate_limits(self) -> dict[str, RateLimit]:
        """NORN_RATE_LIMITS parsed: {plan: RateLimit}; ValueError says what is wrong."""
        limits: dict[str, RateLimit] = {}
        for item in self.rate_limits.split(","):
            plan, _, value = item.strip().partition("=")
            per_hour, _, burst = value.partition("/")
            plan = plan.strip()
            try:
                limit = RateLimit(int(per_hour), int(burst))
            except ValueError:
                raise ValueError(
                    f"must read like free=100/20,pro=1000/100 (per hour/burst), not {item!r}"
                ) from None
            if not 1 <= limit.burst <= limit.per_hour <= 100_000_000:
                raise ValueError(f"{plan}: need 1 <= burst <= per hour <= 100000000")
            # A misspelt or repeated plan would otherwise be ignored or silently win.
            if plan not in RATE_LIMITED_PLANS:
                raise ValueError(
                    f"names an unknown plan {plan!r} (plans: {', '.join(RATE_LIMITED_PLANS)})"
                )
            if plan in limits:
                raise ValueError(f"sets {plan} twice")
            limits[plan] = limit
        missing = set(RATE_LIMITED_PLANS) - set(limits)
        if missing:
            raise ValueError(f"has no limit for {', '.join(sorted(missing))}")
        return limits

    def plan_stream_limits(self) -> dict[str, int]:
        """NORN_STREAM_LIMITS parsed: {plan: open streams}; ValueError says what is wrong."""
        return parse_stream_limits(self.stream_limits, RATE_LIMITED_PLANS)

    def password_hash_params(self) -> tuple[int, int, int]:
        """NORN_PASSWORD_HASH_COST parsed: (memory KiB, iterations, lanes); ValueError
        says what is wrong (the hashing library's own bounds, not the minimum)."""
        values: dict[str, int] = {}
        for item in self.password_hash_cost.split(","):
            key, _, value = item.strip().partition("=")
            if key not in ("m", "t", "p") or key in values or not value.isdigit():
                raise ValueError(f"must read like m=65536,t=3,p=4, not {self.password_hash_cost!r}")
            values[key] = int(value)
        if set(values) != {"m", "t", "p"}:
            raise ValueError(f"must set m, t and p, not {self.password_hash_cost!r}")
        memory, iterations, lanes = values["m"], values["t"], values["p"]
        if iterations < 1 or lanes < 1 or memory < 8 * lanes:
            raise ValueError("needs t >= 1, p >= 1 and m >= 8 * p")
        return memory, iterations, lanes

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.nats_url is None


def _conninfo_problem(url: str) -> str | None:
    """What libpq would refuse in `url` (a URL or key=value string), or None. The
    message names the offending part, never the password."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except ProgrammingError as error:
        return str(error)
    return None


def _parse(name: str, type_: object, raw: str) -> object:
    key = f"NORN_{name.upper()}"
    text = str(type_)
    try:
        if "Path" in text:
            return Path(raw)
        if text.startswith("bool"):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise SettingsError(f"{key} must be 1/true/yes/on or 0/false/no/off, not {raw!r}")
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number, not {raw!r}") from None
    return raw
