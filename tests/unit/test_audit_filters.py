"""The audit trail's pure parts: globs as PostgreSQL regular expressions (the same
matches as the feed's fnmatch), the conditions a filter makes (the tenant scope always
among them), cursors, the request id an item carries, and the CLI's arguments."""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, datetime

import pytest
from litestar.exceptions import ValidationException

from api.cli import build_parser
from api.controllers.audit import request_id_of
from api.controllers.audit_params import parse_as_of, parse_time
from infrastructure.envelope import CloudEvent
from projections.audit_queries import AuditFilter, audit_where, glob_regex
from projections.pagination import decode_cursor, encode_cursor

TYPES = [
    "norn.pipeline.created.v1",
    "norn.pipeline.revised.v1",
    "norn.pipeline.rolled_back.v1",
    "norn.run.queued.v1",
    "norn.run.step_succeeded.v2",
    "norn.name_claim.taken.v1",
    "norn.api_key.created.v1",
    "norn.x[y].v1",
    "norn.a^b.v1",
]
PATTERNS = [
    "*",
    "norn.pipeline.*",
    "norn.*.created.v1",
    "norn.run.step_*.v?",
    "norn.pipeline.re[vw]ised.v1",
    "norn.pipeline.[!r]*",
    "norn.[]x]*",
    "norn.x[[]y].v1",
    "norn.a^b.v1",
    "norn.name_claim.taken.v1",
    "norn.pipeline.created.v",
    "[",
    "norn.api_key.*",
    "norn.[a-p]*",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_glob_matches_what_fnmatch_matches(pattern: str) -> None:
    # Python's re stands in for PostgreSQL's: the regexes use only what both read alike
    # (escaped literals, ".", ".*", bracket expressions); the API tests run them in SQL.
    regex = re.compile(glob_regex(pattern))
    for event_type in TYPES:
        assert bool(regex.search(event_type)) == fnmatch.fnmatchcase(event_type, pattern), (
            pattern,
            event_type,
        )


def test_a_bad_range_is_the_callers_mistake() -> None:
    with pytest.raises(ValueError, match="types"):
        glob_regex("norn.[z-a]")


def _sql(where: object) -> str:
    return where.clause().as_string(None)  # type: ignore[attr-defined]


def test_the_tenant_scope_is_always_a_condition_and_a_filter_only_narrows_it() -> None:
    scoped = audit_where(AuditFilter(tenant="t-b", only_tenant="t-a"))
    assert scoped.params == ["t-b", "t-a"]  # both must hold: B's scope, A asked: nothing
    assert '"a"."tenant_id" = %s' in _sql(scoped)
    unscoped = audit_where(AuditFilter(tenant=None))
    assert unscoped.params == [] and _sql(unscoped) == ""


def test_every_filter_becomes_a_condition() -> None:
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    where = audit_where(
        AuditFilter(
            tenant="t",
            kinds=frozenset({"run", "pipeline"}),
            types=("norn.run.*", "norn.pipeline.created.v1"),
            resources=(("pipeline", "p1"), ("run", "r1")),
            actor="user:u",
            since=since,
            until=until,
            after=10,
            before=20,
        )
    )
    text = _sql(where)
    for condition in (
        "a.aggregate_type = ANY(%s)",
        "(a.type ~ %s OR a.type ~ %s)",
        "(a.aggregate_type = %s AND a.originator_id = %s) OR",
        "a.actor = %s",
        "a.time >= %s",
        "a.time < %s",
        "a.position > %s",
        "a.position < %s",
    ):
        assert condition in text, condition
    assert where.params == [
        "t",
        ["pipeline", "run"],
        r"^norn\.run\..*$",
        r"^norn\.pipeline\.created\.v1$",
        "pipeline",
        "p1",
        "run",
        "r1",
        "user:u",
        since,
        until,
        10,
        20,
    ]
    # Every kind readable: no kind condition at all.
    assert "aggregate_type = ANY" not in _sql(audit_where(AuditFilter(tenant="t")))


def test_a_cursor_carries_the_last_position_and_refuses_another_order() -> None:
    cursor = encode_cursor("position", "asc", 42, 42)
    assert decode_cursor(cursor, "position", "asc", int, id_type=int) == (42, 42)
    with pytest.raises(ValueError, match="order=asc"):
        decode_cursor(cursor, "position", "desc", int, id_type=int)


def _event(actor: str, causation: str | None) -> CloudEvent:
    return CloudEvent(
        id="e",
        source="/tenants/t/pipelines/p",
        type="norn.pipeline.created.v1",
        subject="p",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        data={},
        position=1,
        version=1,
        tenant="t",
        actor=actor,
        correlationid="c",
        causationid=causation,
    )


def test_the_request_id_is_the_cause_of_what_a_request_did() -> None:
    assert request_id_of(_event("user:u", "0a1b")) == "0a1b"
    assert request_id_of(_event("api_key:k", "0a1b")) == "0a1b"
    assert request_id_of(_event("user:u", "idempotent:abcd")) is None
    assert request_id_of(_event("system:executor", "run-id")) is None
    assert request_id_of(_event("user:u", None)) is None


def test_as_of_is_a_position_or_a_time_with_an_offset() -> None:
    assert parse_as_of("42") == 42
    assert parse_as_of("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_as_of(None) is None
    for bad in ("soon", "2026-01-31T12:00:00", "-1", "4.2", "٣", str(2**63)):
        with pytest.raises(ValidationException):
            parse_as_of(bad)
    with pytest.raises(ValidationException):
        parse_time("since", "2026-01-31")  # a date has no offset


def test_export_arguments_are_checked_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "events",
            "export",
            "--tenant",
            "6F9619FF-8B86-D011-B42D-00C04FC964FF",
            "--since",
            "2026-01-01T00:00:00+01:00",
        ]
    )
    assert args.tenant == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert args.since == datetime(2025, 12, 31, 23, tzinfo=UTC) and args.until is None
    for argv in (
        ["events", "export"],
        ["events", "export", "--tenant", "acme"],
        [
            "events",
            "export",
            "--tenant",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "--until",
            "today",
        ],
        [
            "events",
            "export",
            "--tenant",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "--until",
            "2026-01-01T00:00:00",
        ],
    ):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == 2
    assert "usage: norn events export" in capsys.readouterr().err
