"""Connection types (infrastructure/connectors.py), the merge of a connection under a
step's config (infrastructure/connection_merge.py) and the secret-reference helpers
(infrastructure/secret_references.py)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.connection import ConnectionConfig
from infrastructure.connection_merge import join_url, merge_connection
from infrastructure.connectors import CONNECTORS, PLAIN_CREDENTIAL, check_connection
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.secret_references import (
    PLACEHOLDER,
    SecretReference,
    dotted,
    find_references,
    is_reference,
    malformed_references,
    substitute,
)

TOKEN = "Distinctive-T0ken-Value-zz9"
PG: dict[str, Any] = {
    "host": {"secret": "db-host"},
    "database": "orders",
    "user": "loader",
    "password": {"secret": "db-password", "version": 3},
}
API = ConnectionConfig(
    "http",
    {
        "base_url": "https://api.example.com/v1",
        "headers": {"Authorization": {"secret": "api-token"}, "Accept": "application/json"},
        "timeout": 12.5,
    },
)


def problems(type_: str, config: dict[str, Any]) -> dict[str, str]:
    return {p.field: p.message for p in check_connection(type_, config).problems}


# --- secret references ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"secret": "db"}, True),
        ({"secret": "db", "version": 2}, True),
        ({"secret": "db", "version": 0}, False),
        ({"secret": "db", "version": True}, False),
        ({"secret": "db", "version": "2"}, False),
        ({"secret": "db", "other": 1}, False),
        ({"secret": "-db"}, False),
        ({"secret": 5}, False),
        ({"version": 1}, False),
        ("db", False),
        (None, False),
    ],
)
def test_a_reference_is_exactly_a_secret_name_and_an_optional_version(
    value: Any, expected: bool
) -> None:
    assert is_reference(value) is expected


def test_references_are_found_at_any_depth_but_the_config_itself_is_fields() -> None:
    config = {
        "secret": {"secret": "signing"},  # Output.webhook has a field called `secret`
        "headers": {"X-Key": {"secret": "key", "version": 2}},
        "list": [{"a": {"secret": "deep"}}],
        "bad": {"secret": "x", "extra": True},
    }
    assert find_references(config) == [
        SecretReference(("secret",), "signing"),
        SecretReference(("headers", "X-Key"), "key", 2),
        SecretReference(("list", 0, "a"), "deep"),
    ]
    assert malformed_references(config) == [("bad",)]
    assert find_references({"secret": "name-only"}) == []  # a field, not a reference
    replaced = substitute(config)
    assert replaced["secret"] == PLACEHOLDER and replaced["headers"]["X-Key"] == PLACEHOLDER
    assert replaced["list"] == [{"a": PLACEHOLDER}] and replaced["bad"] == config["bad"]
    assert config["secret"] == {"secret": "signing"}  # a copy: the original is unchanged
    assert dotted(("list", 0, "a")) == "config.list[0].a"


# --- checking a connection's config -----------------------------------------------------------


def test_valid_configs_pass_and_their_references_are_listed_with_fields() -> None:
    checked = check_connection("postgres", PG)
    assert checked.problems == []
    assert [(r.field, r.name, r.version) for r in checked.secrets] == [
        ("config.host", "db-host", None),
        ("config.password", "db-password", 3),
    ]
    assert problems("http", API.config) == {}
    assert problems("postgres", {**PG, "sslmode": "verify-full", "port": 6543}) == {}


@pytest.mark.parametrize(
    ("type_", "config", "field"),
    [
        ("postgres", {**PG, "password": TOKEN}, "config.password"),
        ("http", {"base_url": "https://a.example", "headers": {"authorization": TOKEN}}, None),
        ("http", {"base_url": "https://a.example", "headers": {"X-API-KEY": TOKEN}}, None),
        ("http", {"base_url": "https://a.example", "headers": {"Cookie": TOKEN}}, None),
    ],
)
def test_a_plain_credential_is_refused_by_field_and_never_quoted(
    type_: str, config: dict[str, Any], field: str | None
) -> None:
    found = problems(type_, config)
    header = next(iter(config.get("headers", {})), "")
    assert found == {field or f"config.headers.{header}": PLAIN_CREDENTIAL}
    assert TOKEN not in str(found)


def test_plain_text_is_fine_where_a_reference_is_only_accepted() -> None:
    assert problems("postgres", {**PG, "host": "db.example.com", "user": "loader"}) == {}
    plain_header = {"base_url": "https://a.example", "headers": {"X-Trace": "on"}}
    assert problems("http", plain_header) == {}


def test_a_reference_where_none_is_accepted_or_a_malformed_one_is_refused() -> None:
    found = problems(
        "postgres", {**PG, "database": {"secret": "db-name"}, "user": {"secret": "u", "v": 1}}
    )
    assert set(found) == {"config.database", "config.user"}
    assert "takes no secret reference" in found["config.database"]
    assert '{"secret": "<name>"}' in found["config.user"]
    whole = problems("http", {"base_url": "https://a.example", "headers": {"secret": "h"}})
    assert "takes no secret reference" in whole["config.headers"]
    url = problems("http", {"base_url": {"secret": "u"}})
    assert "takes no secret reference" in url["config.base_url"]


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"host": "h", "user": "u"}, "config.database", "required"),
        ({**PG, "port": 0}, "config.port", "Expected `int` >= 1"),
        ({**PG, "sslmode": "sometimes"}, "config.sslmode", "Invalid enum value 'sometimes'"),
        ({**PG, "schema": "x"}, "config.schema", "unknown field"),
    ],
)
def test_postgres_schema_problems_name_their_field(
    config: dict[str, Any], field: str, message: str
) -> None:
    assert problems("postgres", config) == {field: message}


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://a.example",
        "a.example/v1",
        "https://a.example/v1?key=1",
        "https://a.example/#x",
        "https://user:pw@a.example/",
        "https://",
    ],
)
def test_a_base_url_is_http_with_a_host_and_nothing_after_its_path(base_url: str) -> None:
    assert list(problems("http", {"base_url": base_url})) == ["config.base_url"]


def test_an_unknown_type_lists_the_known_ones() -> None:
    assert problems("ftp", {}) == {
        "type": "unknown connection type 'ftp' (one of http, postgres; see GET /api/v1/connectors)"
    }


def test_each_type_has_a_schema_marking_its_credentials_and_serves_real_plugins() -> None:
    pg = CONNECTORS["postgres"].schema()["$defs"]["PostgresConnection"]["properties"]
    assert pg["password"]["anyOf"][0]["x-norn-secret"] == "required"
    assert pg["host"]["x-norn-secret"] == "accepted"
    http = CONNECTORS["http"].schema()["$defs"]["HttpConnection"]["properties"]
    assert "authorization" in http["headers"]["x-norn-sensitive-keys"]
    catalog = PluginCatalog()
    assert all(catalog.get(ref) is not None for ref in CONNECTORS["http"].serves)


# --- merging a connection under a step's config -----------------------------------------------


def test_step_fields_win_and_the_connection_fills_in_the_rest() -> None:
    merged = merge_connection(
        "Input.postgres",
        {"database": "reports", "query": "select 1"},
        "warehouse",
        ConnectionConfig("postgres", PG),
    )
    assert merged.problems == ()
    assert merged.config == {**PG, "database": "reports", "query": "select 1"}


def test_headers_merge_by_name_case_insensitively_the_step_winning() -> None:
    step = {"url": "items", "headers": {"accept": "text/csv", "X-Step": "1"}}
    merged = merge_connection("Input.http", step, "api", API)
    assert merged.config["headers"] == {
        "Authorization": {"secret": "api-token"},
        "accept": "text/csv",
        "X-Step": "1",
    }
    assert merged.config["timeout"] == 12.5 and "base_url" not in merged.config
    assert API.config["headers"]["Accept"] == "application/json"  # the connection's unchanged


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "https://api.example.com/v1"),
        ("items", "https://api.example.com/v1/items"),
        ("/items?page=2", "https://api.example.com/v1/items?page=2"),
        ("?page=2", "https://api.example.com/v1?page=2"),
        ("//evil.example/x", "https://api.example.com/v1/evil.example/x"),
        ("https://other.example/x", "https://other.example/x"),
    ],
)
def test_a_relative_url_is_appended_to_base_url_and_never_leaves_its_host(
    url: str | None, expected: str
) -> None:
    step = {} if url is None else {"url": url}
    merged = merge_connection("Output.webhook", step, "api", API)
    assert merged.problems == () and merged.config["url"] == expected


def test_join_url_puts_one_slash_between_base_and_path() -> None:
    assert join_url("https://a.example/", "/x") == "https://a.example/x"
    assert join_url("https://a.example", "") == "https://a.example"


@pytest.mark.parametrize(
    ("plugin", "found", "problem"),
    [
        (
            "Input.http",
            ConnectionConfig("postgres", PG),
            "connection: a postgres connection cannot serve Input.http"
            " (it serves Input.postgres, Output.postgres)",
        ),
        (
            "Output.file",
            API,
            "connection: a http connection cannot serve Output.file"
            " (it serves Input.http, Output.webhook)",
        ),
        (
            "Input.http",
            None,
            "connection: no connection named 'api' (POST /api/v1/connections creates one)",
        ),
        (
            "Input.http",
            ConnectionConfig("ldap", {}),
            "connection: 'api' is of type 'ldap', unknown to this server",
        ),
    ],
)
def test_a_connection_that_cannot_serve_the_step_is_a_problem(
    plugin: str, found: ConnectionConfig | None, problem: str
) -> None:
    merged = merge_connection(plugin, {"url": "x"}, "api", found)
    assert merged.problems == (problem,) and merged.config == {}


def test_a_url_that_is_no_text_is_a_problem_of_the_step() -> None:
    merged = merge_connection("Input.http", {"url": 5}, "api", API)
    assert merged.problems == (
        "config.url: a URL, absolute or relative to the connection's base_url",
    )


def test_a_merged_http_config_passes_the_plugins_own_schema() -> None:
    """What the lead's validation will do with the merge: the plugin's Config takes it
    (references substituted, as for any step config before resolution)."""
    catalog = PluginCatalog()
    for plugin, step in (("Input.http", {"url": "orders"}), ("Output.webhook", {})):
        merged = merge_connection(plugin, step, "api", API)
        assert catalog.check(plugin, merged.config) == []


@pytest.mark.parametrize(
    "base_url",
    [
        "https://[::1",
        "https://[zz]/x",
        "https://x.com:99999/",
        "https://x.com:abc/",
        "https://a:b:c/",
    ],
)
def test_a_base_url_that_does_not_parse_is_refused_by_field(base_url: str) -> None:
    """As a webhook's URL is: a 422 naming the field, where it was a 500 (a bracket
    left open) or stored as it came (a port that is no port)."""
    found = problems("http", {"base_url": base_url})
    assert list(found) == ["config.base_url"] and found["config.base_url"].startswith(
        "not a URL"
    ), found
