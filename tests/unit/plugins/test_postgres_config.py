"""The database plugins' configs as the catalog checks them when a pipeline is written,
how params are bound, how values are converted, and what reaches libpq. No I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from infrastructure.plugins.base import PluginError
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.plugins.postgres import InputPostgres, OutputPostgres, bind_params
from infrastructure.plugins.postgres_connection import (
    connection_kwargs,
    database_error,
)
from infrastructure.plugins.postgres_guard import Endpoint
from infrastructure.plugins.postgres_values import column_writer, plain
from infrastructure.plugins.sensitive import secrecy_of
from tests.unit.plugins.helpers import make_context

CONNECTION = {"host": "DB.Example.com", "database": "shop", "user": "reader"}


def problems(ref: str, **config: Any) -> list[str]:
    return PluginCatalog().check(ref, {**CONNECTION, **config})


def test_valid_configs_have_no_problems() -> None:
    assert problems("Input.postgres", query="SELECT * FROM orders") == []
    assert (
        problems(
            "Input.postgres",
            query="-- recent\n(WITH x AS (SELECT 1) SELECT * FROM x WHERE d > %(day)s)",
            params={"day": {"param": "day", "default": "2026-01-01"}, "unused": [1, 2]},
            port=6432,
            sslmode="verify-full",
            fetch_size=50_000,
        )
        == []
    )
    assert problems("Output.postgres", table="sales.orders", mode="upsert", key=["id"]) == []
    assert problems("Output.postgres", table="orders", mode="replace", batch_size=1) == []


@pytest.mark.parametrize("missing", ["host", "database", "user"])
def test_connection_fields_are_required(missing: str) -> None:
    config = {k: v for k, v in CONNECTION.items() if k != missing}
    found = PluginCatalog().check("Input.postgres", {**config, "query": "SELECT 1"})
    assert found == [f"config.{missing}: required"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"port": 0}, "config.port"),
        ({"port": 65536}, "config.port"),
        ({"sslmode": "sometimes"}, "config.sslmode"),
        ({"connect_timeout": 0}, "config.connect_timeout"),
        ({"database": "x" * 64}, "config.database"),
        ({"fetch_size": 0}, "config.fetch_size"),
        ({"host": "a,b"}, "config.host"),
    ],
)
def test_bad_connection_fields_are_named(config: dict[str, Any], field: str) -> None:
    found = problems("Input.postgres", query="SELECT 1", **config)
    assert len(found) == 1 and found[0].startswith(field + ":"), found


@pytest.mark.parametrize(
    "query",
    ["DELETE FROM orders", "  insert into t values (1)", "selectx", "COPY t TO STDOUT", "--x"],
)
def test_only_a_reading_statement_is_accepted(query: str) -> None:
    assert problems("Input.postgres", query=query) == [
        "config.query: must be one SELECT statement (or WITH ..., VALUES, TABLE)"
    ]


def test_placeholders_must_have_params_and_params_valid_shapes() -> None:
    assert problems("Input.postgres", query="SELECT %(a)s, %(b)s", params={"a": 1}) == [
        "config.params: the query uses %(b)s, which params lacks"
    ]
    assert problems("Input.postgres", query="SELECT 'a%' || %(a)s", params={"a": 1}) == [
        "config.query: a % that is not a %(name)s placeholder must be written %%"
    ]
    assert problems("Input.postgres", query="SELECT 'a%%' || %(a)s", params={"a": 1}) == []
    assert problems("Input.postgres", query="SELECT 'a%'") == []  # no params: sent as is
    assert problems("Input.postgres", query="SELECT 1", params={"x": {"name": "day"}}) == [
        'config.params.x: an object names a run param: {"param": "<name>"} or'
        ' {"param": "<name>", "default": <value>}'
    ]
    assert problems("Input.postgres", query="SELECT 1", params={"a-b": 1}) == [
        "config.params.a-b: a name of letters, digits and _"
    ]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"mode": "upsert"}, "config.key: required for mode upsert"),
        ({"key": ["id"]}, "config.key: only mode upsert uses a key"),
        ({"mode": "upsert", "key": ["id", "id"]}, "config.key: names a column twice"),
        ({"table": "a.b.c"}, "config.table: a table name, or schema.table"),
        ({"table": "sales."}, "config.table: a table name, or schema.table"),
    ],
)
def test_output_rules(config: dict[str, Any], problem: str) -> None:
    assert problems("Output.postgres", **{"table": "orders", **config}) == [problem]


def test_the_password_is_a_credential_and_host_and_user_may_be_references() -> None:
    for plugin in (InputPostgres, OutputPostgres):
        secrecy = secrecy_of(plugin.Config)
        assert secrecy.required == {"password"}
        assert secrecy.accepted == {"host", "user", "password"}


def test_destinations_are_the_server_in_lower_case_with_its_port() -> None:
    config = InputPostgres.parse_config({**CONNECTION, "query": "SELECT 1"})
    assert InputPostgres.destinations(config) == ["db.example.com:5432"]
    config = OutputPostgres.parse_config({**CONNECTION, "table": "t", "port": 6432})
    assert OutputPostgres.destinations(config) == ["db.example.com:6432"]
    ipv6 = InputPostgres.parse_config({**CONNECTION, "host": "::1", "query": "SELECT 1"})
    assert InputPostgres.destinations(ipv6) == ["[::1]:5432"]


def test_a_url_destination_has_the_schemes_port_unless_it_names_one() -> None:
    from infrastructure.plugins.network import url_hosts

    assert url_hosts("https://API.example.com/x") == ["api.example.com:443"]
    assert url_hosts("http://api.example.com:8080/x") == ["api.example.com:8080"]
    assert url_hosts("http://[::1]/x") == ["[::1]:80"]


def test_params_take_run_params_and_bind_objects_as_jsonb() -> None:
    bound = bind_params(
        {
            "day": {"param": "day"},
            "limit": {"param": "limit", "default": 10},
            "tags": ["a", "b"],
            "meta": {"param": "meta"},
            "plain": "x",
        },
        {"day": "2026-03-01", "meta": {"k": 1}},
    )
    assert bound["day"] == "2026-03-01" and bound["limit"] == 10
    assert bound["tags"] == ["a", "b"] and bound["plain"] == "x"
    assert isinstance(bound["meta"], Jsonb) and bound["meta"].obj == {"k": 1}
    with pytest.raises(PluginError, match=r"params\.day: the run has no param 'day'") as missing:
        bind_params({"day": {"param": "day"}}, {})
    assert missing.value.retryable is False


def test_libpq_gets_the_checked_address_and_nothing_from_the_environment(tmp_path: Path) -> None:
    config = OutputPostgres.parse_config({**CONNECTION, "table": "t", "connect_timeout": 0.5})
    kwargs = connection_kwargs(
        config, Endpoint("db.example.com", "93.184.216.34"), make_context(tmp_path)
    )
    assert kwargs["hostaddr"] == "93.184.216.34" and kwargs["host"] == "db.example.com"
    assert kwargs["password"] == ""  # given, so PGPASSWORD is not read
    assert not Path(kwargs["passfile"]).exists()  # nor ~/.pgpass
    assert kwargs["connect_timeout"] == 2


def test_errors_never_show_the_password() -> None:
    config = InputPostgres.parse_config(
        {**CONNECTION, "query": "SELECT 1", "password": "hunter2-secret"}
    )
    error = database_error(
        "connecting", psycopg.OperationalError("auth failed for hunter2-secret"), config
    )
    assert "hunter2-secret" not in error.message and "***" in error.message
    assert error.retryable is True
    refused = database_error("query", psycopg.errors.ReadOnlySqlTransaction("no"), config)
    assert refused.retryable is False


def test_values_become_json_and_go_back() -> None:
    assert plain([b"\x01\x02", {"a": (1, 2)}]) == ["AQI=", {"a": [1, 2]}]
    json_writer = column_writer("jsonb", "U")
    assert json_writer is not None and json_writer("text") == '"text"'
    assert json_writer(None) is None
    text_writer = column_writer("text", "S")
    assert text_writer is not None and text_writer({"a": 1}) == '{"a":1}'
    bytea = column_writer("bytea", "U")
    assert bytea is not None and bytea("AQI=") == b"\x01\x02"
    with pytest.raises(ValueError, match="base64"):
        bytea("not base64!")
    assert column_writer("int4", "N") is None
