"""Connection types (README "Connections"): what a tenant's connection of each type
holds, as a msgspec schema (GET /api/v1/connectors shows it), and which step plugins it
serves. Credential fields carry the marks of infrastructure/plugins/sensitive.py, read
by the same `secrecy_of` as plugin configs: a `SensitiveText` must be a secret
reference, a `SecretText` may be, and so may a header value (those of the sensitive
header names must be).

`check_connection` (application/ports.py `ConnectionChecker`) is the whole validation
of a connection's config but for whether the secrets it references exist (the service
looks those up in the tenant's store): the
schema, no plain credential, no reference where none is accepted. Merging a connection
under a step's config is infrastructure/connection_merge.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from application.ports import ConfigCheck, ReferencedSecret
from domain.errors import FieldError
from infrastructure.plugins.schema import Seconds, StepConfig, Url
from infrastructure.plugins.sensitive import Headers, SecretText, SensitiveText, secrecy_of
from infrastructure.secret_references import (
    PLACEHOLDER,
    REFERENCE_SHAPE,
    dotted,
    find_references,
    malformed_references,
    substitute,
)

PLAIN_CREDENTIAL = (
    'a credential must be a secret reference {"secret": "<name>"}, never the value itself:'
    " create the secret with POST /api/v1/secrets"
)

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresConnection(StepConfig, kw_only=True):
    """A PostgreSQL server and database; serves Input.postgres and Output.postgres,
    whose fields of the same names it fills in."""

    host: SecretText
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 5432
    database: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    user: SecretText
    password: SensitiveText | None = None
    sslmode: Annotated[SslMode, msgspec.Meta(description="libpq's sslmode")] = "prefer"
    connect_timeout: Annotated[
        int, msgspec.Meta(ge=1, le=300, description="Seconds allowed to connect.")
    ] = 10


class HttpConnection(StepConfig, kw_only=True):
    """An HTTP API; serves Input.http and Output.webhook. A step's relative `url` is
    appended to `base_url` (a step without `url` calls `base_url`); headers merge by
    name (case-insensitive), the step's winning."""

    base_url: Annotated[
        Url,
        msgspec.Meta(
            description="http(s) URL, without query, fragment or user:password (give"
            " credentials as headers holding secret references)."
        ),
    ]
    headers: Headers = {}
    timeout: Seconds = 30.0


@dataclass(frozen=True)
class Connector:
    type: str
    description: str
    config: type[StepConfig]
    serves: tuple[str, ...]
    """The plugins (Type.name) whose steps may name a connection of this type."""

    def schema(self) -> dict[str, Any]:
        return msgspec.json.schema(self.config)


CONNECTORS: dict[str, Connector] = {
    c.type: c
    for c in (
        Connector(
            "postgres",
            "A PostgreSQL database: host, port, database, user, password, sslmode.",
            PostgresConnection,
            ("Input.postgres", "Output.postgres"),
        ),
        Connector(
            "http",
            "An HTTP API: a base URL, headers (credentials as secret references), timeout.",
            HttpConnection,
            ("Input.http", "Output.webhook"),
        ),
    )
}


def unknown_type(type_: str) -> FieldError:
    known = ", ".join(sorted(CONNECTORS))
    return FieldError(
        "type", f"unknown connection type {type_!r} (one of {known}; see GET /api/v1/connectors)"
    )


def check_connection(type_: str, config: dict[str, Any]) -> ConfigCheck:
    """Every problem of a connection's config but unknown secrets, as FieldErrors naming
    `type` or `config.<field>`. No message quotes a value of the config (a misplaced
    credential must not be echoed back)."""
    connector = CONNECTORS.get(type_)
    if connector is None:
        return ConfigCheck([unknown_type(type_)], [])
    secrecy = secrecy_of(connector.config)
    problems: list[FieldError] = []
    blanked: list[tuple[str | int, ...]] = []
    for path in malformed_references(config):
        problems.append(FieldError(dotted(path), f"a secret reference is {REFERENCE_SHAPE}"))
        blanked.append(path)
    references = find_references(config)
    for ref in references:
        if not secrecy.accepts(ref.path):
            problems.append(
                FieldError(dotted(ref.path), "takes no secret reference: give the value itself")
            )
    for path in _plain_credentials(config, secrecy.required, secrecy.keyed):
        problems.append(FieldError(dotted(path), PLAIN_CREDENTIAL))
        blanked.append(path)
    # The schema sees placeholders where references and refused credentials were, so
    # that it judges the rest and no error of its can be about a credential's text.
    checked = _blank(substitute(config), blanked)
    try:
        parsed = msgspec.convert(checked, connector.config)
    except msgspec.ValidationError as error:
        problem = _schema_problem(str(error))
        if problem.field not in {p.field for p in problems}:  # one problem per field
            problems.append(problem)
    else:
        problems.extend(_rules(parsed))
    secrets = [ReferencedSecret(dotted(r.path), r.name, r.version) for r in references]
    return ConfigCheck(problems, secrets)


def _plain_credentials(
    config: dict[str, Any], required: frozenset[str], keyed: dict[str, frozenset[str]]
) -> list[tuple[str | int, ...]]:
    """Where a credential is given as text instead of a reference."""
    found: list[tuple[str | int, ...]] = [
        (name,) for name in sorted(required) if isinstance(config.get(name), str)
    ]
    for name, sensitive in sorted(keyed.items()):
        values = config.get(name)
        if isinstance(values, dict):
            found.extend(
                (name, key)
                for key, value in values.items()
                if str(key).lower() in sensitive and isinstance(value, str)
            )
    return found


def _blank(config: dict[str, Any], paths: list[tuple[str | int, ...]]) -> dict[str, Any]:
    for path in paths:
        holder: Any = config
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = PLACEHOLDER
    return config


def _rules(parsed: msgspec.Struct) -> list[FieldError]:
    """What the schema cannot say."""
    if isinstance(parsed, HttpConnection):
        try:
            url = urlsplit(parsed.base_url)
            url.port  # noqa: B018 (read to check it: urlsplit leaves the port unparsed)
        except ValueError as error:  # "https://[::1", "https://x.com:99999/"
            return [FieldError("config.base_url", f"not a URL: {error}")]
        if url.query or url.fragment or "@" in url.netloc or not url.hostname:
            return [
                FieldError(
                    "config.base_url",
                    "an http(s) URL with a host and without query, fragment or user:password"
                    " (credentials go in headers, as secret references)",
                )
            ]
    return []


def _schema_problem(message: str) -> FieldError:
    # msgspec says e.g. "Object missing required field `host` - at `$`" or
    # "Expected `int`, got `str` - at `$.port`"; it never quotes the value.
    text, _, where = message.partition(" - at `")
    where = where.rstrip("`")
    if "missing required field `" in text:
        return FieldError(f"config.{text.split('`')[1]}", "required")
    if "unknown field `" in text:
        return FieldError(f"config.{text.split('`')[1]}", "unknown field")
    path = where.removeprefix("$")
    return FieldError(f"config{path}" if path.startswith(("[", ".")) else "config", text)
