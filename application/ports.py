"""Interfaces the application needs from the outside world (implemented in
infrastructure/ and projections/)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from domain.connection import ConnectionConfig
from domain.errors import FieldError
from domain.pipeline import StepSpec


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool: ...


@dataclass(frozen=True)
class SecretFacts:
    """What step validation needs to know of a tenant's secret, never its value."""

    name: str
    value_version: int
    allowed_hosts: tuple[str, ...]
    namespaces: tuple[str, ...]


@dataclass(frozen=True)
class SecretRules:
    """How a step's secret references are judged: `secrets` looks a name up in the
    pipeline's tenant (None: no such live secret), `namespace` is the pipeline's, and a
    `new_write` refuses credentials given in clear."""

    secrets: Callable[[str], SecretFacts | None]
    namespace: str | None = None
    new_write: bool = True


class SecretLookup(Protocol):
    """Reads a tenant's secret where a step runs (application/secrets.py)."""

    def use(self, tenant_id: str, name: str, version: int | None) -> tuple[SecretFacts, str]:
        """The secret's facts and the value of its version (the newest when None);
        NotFound or SecretUnreadable otherwise."""
        ...


class PluginCatalog(Protocol):
    def check(
        self, plugin: str, config: dict[str, Any], rules: SecretRules | None = None
    ) -> list[str]:
        """Problems with a step's plugin reference and config, as 'field: message'."""
        ...

    def check_step(
        self,
        step: StepSpec,
        rules: SecretRules | None = None,
        connection: ConnectionConfig | None = None,
    ) -> list[str]:
        """`check` of the step's config over its connection's (`connection`: the
        tenant's connection the step names, None when it has none of that name)."""
        ...


class ConnectionLookup(Protocol):
    """A tenant's connection by name, for validation and where a step runs
    (application/connections.py)."""

    def config_of(self, tenant_id: str, name: str) -> ConnectionConfig | None: ...


class ApiKeySecrets(Protocol):
    """Makes, reads and hashes API keys (infrastructure/api_key_secrets.py)."""

    def new_key(self) -> tuple[str, str]: ...

    def format(self, prefix: str, secret: str) -> str: ...

    def parse(self, key: str) -> tuple[str, str] | None: ...

    def hash(self, prefix: str, secret: str) -> str: ...

    def verify(self, secret_hash: str, prefix: str, secret: str) -> bool: ...


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says. Roles are not in it on purpose: they are read from
    the user at every request, so a change of roles holds at once."""

    subject: str
    token_type: str
    token_id: str
    session_id: str
    expires_at: int
    generation: int = 0
    """Refresh tokens: the session's refresh generation the token was issued for."""
    tenant_id: str | None = None
    """The user's tenant when the token was issued (a user never changes tenant)."""
    not_before: int = 0


class TokenIssuer(Protocol):
    """Signs and verifies access and refresh tokens (infrastructure/security.py)."""

    access_ttl: int
    refresh_ttl: int

    def issue(
        self,
        subject: str,
        token_type: str,
        *,
        session_id: str,
        username: str,
        tenant_id: str | None,
        generation: int = 0,
    ) -> str: ...

    def verify(self, token: str, token_type: str = "access") -> TokenClaims:  # noqa: S107
        """The claims of a valid token of that type, else AuthenticationFailed."""
        ...


class Usage(Protocol):
    """How much of a quota a tenant uses, counted from read models
    (projections/usage.py). Resources: pipelines, running_runs, runs_today, ... Quotas
    are decided on the Usage aggregates (application/quotas.py); these counts start them
    and show usage."""

    def count(self, tenant_id: str, resource: str) -> int | None:
        """Current usage; None for a resource that is not counted (yet)."""
        ...

    def namespace_hold(
        self, tenant_id: str, namespace: str, *, exclusive: bool
    ) -> AbstractContextManager[None]:
        """Hold the tenant's namespace (across processes): shared while a resource is
        placed in it, exclusively while it is removed."""
        ...

    def namespaces_hold(self, places: Sequence[tuple[str, str]]) -> AbstractContextManager[None]:
        """Hold several (tenant id, namespace) shared at once, as `namespace_hold` does
        one: what an atomic batch's commit holds (application/unit_of_work.py)."""
        ...

    def in_namespace(self, tenant_id: str, namespace: str) -> int:
        """How many live resources are placed in the namespace."""
        ...


@dataclass(frozen=True)
class RequestFacts:
    """What authenticating a request reads, in one round trip."""

    versions: dict[UUID, int]
    """The current version of each of the asked aggregates that exists."""


class RequestFactsReader(Protocol):
    """projections/usage.py."""

    def read(self, aggregate_ids: Sequence[UUID]) -> RequestFacts: ...


class AsyncRequestFactsReader(Protocol):
    """The same read on the event loop (projections/usage.py RequestFactsQuery): what
    authenticates a request without a worker thread's hop."""

    async def read(self, aggregate_ids: Sequence[UUID]) -> RequestFacts: ...


@dataclass(frozen=True)
class LoginAttempts:
    """The throttle's view of one key (a username or a client address)."""

    failures: int
    """Failed (or unfinished) attempts counted before this one."""
    locked_for: float
    """Seconds until the lock ends; 0 when not locked."""


class LoginThrottle(Protocol):
    """Login-attempt bookkeeping shared by every API process (infrastructure). An attempt
    is counted before its password is checked, in one atomic step, so guesses sent in
    parallel cannot all pass a check made before any of them had failed."""

    async def begin(
        self, keys: list[str], lock_after: list[int], lock_seconds: float
    ) -> list[LoginAttempts]:
        """Count an attempt against every key, unless one is locked. A key this attempt
        would take past its `lock_after` is locked for `lock_seconds` now instead.
        Returns each key's state; the attempt may go on only if none is locked."""
        ...

    async def failed(self, keys: list[str], lock_after: list[int], lock_seconds: float) -> None:
        """The attempt failed (it is already counted): lock for `lock_seconds` each key
        whose count has reached its `lock_after`."""
        ...

    async def succeeded(self, forget: str, uncount: list[str]) -> None:
        """The attempt succeeded: `forget` loses its failures (unless locked), and each
        of `uncount` counts this attempt no more."""
        ...


@dataclass(frozen=True)
class StepCall:
    """One attempt of one step of a run, as a step runner needs it."""

    run_id: str
    tenant_id: str
    run_attempt: int
    step: StepSpec
    step_attempt: int
    params: dict[str, Any]
    namespace: str | None = None
    """The pipeline's: a secret limited to namespaces is refused outside them."""


@dataclass(frozen=True)
class StepOutcome:
    records_in: int
    records_out: int


class StepRunner(Protocol):
    """Runs steps with their plugins (infrastructure/step_runner.py): feeds each the
    outputs of the steps it depends on, keeps its output for the steps after it, and
    keeps its log lines."""

    async def run(self, call: StepCall, cancelled: asyncio.Event) -> StepOutcome:
        """Run the attempt; StepFailed when it fails. Cancelling the task stops it."""
        ...

    async def reuse(
        self, run_id: str, tenant_id: str, previous_run_id: str, step: str
    ) -> StepOutcome | None:
        """Take over a previous run's output of `step`; None when it is gone."""
        ...

    async def finished(self, run_id: str, tenant_id: str, succeeded: bool) -> None:
        """The run ended. Outputs of a run that did not succeed may be kept for a retry
        from its failed step."""
        ...


class Heartbeats(Protocol):
    """Proof that an executor still works on a run (infrastructure/heartbeats.py)."""

    def lease(self, run_id: str, attempt: int, executor_id: str) -> None:
        """Before the claim of `attempt` is saved (synchronous, like the claim): its
        first beat, so that recovery finds every started attempt by its beats alone."""
        ...

    async def beat(self, run_id: str, attempt: int, executor_id: str) -> None: ...

    async def stop(self, run_id: str, attempt: int) -> None:
        """The attempt ended here; a later attempt's beats are left alone."""
        ...

    async def drop_stale(self, run_id: str, attempt: int, older_than: float) -> None:
        """Remove the attempt's lease unless it was renewed in the last `older_than` s."""
        ...

    async def stale(self, older_than: float, limit: int) -> list[tuple[str, int]]:
        """(run id, attempt) of the attempts whose executor has not beaten for
        `older_than` seconds; the run's events say whether it is really lost."""
        ...


class SecretValues(Protocol):
    """Where secrets' values are kept, each secret's encrypted under a data key of its
    own, itself wrapped by the master key (infrastructure/secret_store.py). The values
    are in no event: the events name a value's row (`value_id`) only."""

    def seal(
        self,
        secret_id: UUID,
        tenant_id: str,
        version: int,
        value_id: UUID,
        value: str,
        *,
        new_key: bool,
    ) -> bool:
        """Encrypt and keep a value version under the secret's data key, before the
        event that makes it current is appended. `new_key` (a create): make the data key
        if the secret has none. False, keeping nothing, when there is no data key to use:
        none (destroyed, and not `new_key`), or wrapped by a master key not configured."""
        ...

    def open(self, secret_id: UUID, version: int, value_id: UUID) -> str | None:
        """The value; None when it cannot be read (its data key was destroyed, the row
        is gone or was tampered with)."""
        ...

    def destroy(self, secret_id: UUID) -> None:
        """Destroy the secret's data key (and its ciphertexts): crypto-shredding, before
        the deletion's event is appended."""
        ...


@dataclass(frozen=True)
class SecretReference:
    pipeline_id: str
    """The id of what references the secret: a pipeline's, or a connection's."""
    pipeline_name: str
    kind: str = "pipeline"
    """"pipeline" (a step's config) or "connection" (a connection's config)."""


class SecretReferences(Protocol):
    """Which of a tenant's pipelines and connections reference a secret by name
    (`{"secret": name}` anywhere in a step's or a connection's config), from their read
    models (projections/secrets.py)."""

    def referencing(self, tenant_id: str, name: str) -> list[SecretReference]: ...


@dataclass(frozen=True)
class ReferencedSecret:
    """A secret reference in a config: the field holding it (config.password) and the
    secret it names, with the value version it pins (None: the current one)."""

    field: str
    name: str
    version: int | None = None


@dataclass(frozen=True)
class ConfigCheck:
    """A connection config as its type judges it: every problem (schema, plain
    credentials, references where none is accepted), and the secrets it references,
    which the service looks up in the connection's tenant."""

    problems: list[FieldError]
    secrets: list[ReferencedSecret]


ConnectionChecker = Callable[[str, dict[str, Any]], ConfigCheck]
"""(type, config) -> ConfigCheck: infrastructure/connectors.py `check_connection`."""


@dataclass(frozen=True)
class ConnectionReference:
    pipeline_id: str
    pipeline_name: str


class ConnectionReferences(Protocol):
    """Which of a tenant's pipelines have a step whose `connection` is the name, from the
    pipelines read model (projections/connections.py)."""

    def referencing(self, tenant_id: str, name: str) -> list[ConnectionReference]: ...
