"""The default generator against a table of descriptions: the plugins it picks, in
order, and that every draft either passes the real validation or says what it needs;
the same input answers byte-identical JSON."""

from __future__ import annotations

import msgspec
import pytest

from application.authoring.generator import DefaultGenerator
from application.authoring.ports import GenerationRequest
from domain.errors import InvalidDefinition
from domain.pipeline import validate_definition
from tests.unit.authoring.catalogs import EXTENDED

F, H = "Input.file", "Input.http"
FI, T, A = "Data_Processing.filter", "Data_Processing.transform", "Data_Processing.aggregate"
OF, OW = "Output.file", "Output.webhook"
MASK, WIN, WOUT = "Data_Processing.mask", "Input.warehouse", "Output.warehouse"
PIN, POUT = "Input.postgres", "Output.postgres"

TABLE: list[tuple[str, list[str]]] = [
    ("Read orders.csv and write to paid.jsonl", [F, OF]),
    ("Load orders.jsonl, keep only paid orders, write to paid.jsonl", [F, FI, OF]),
    ("read orders.csv where amount > 100 then save to big.csv", [F, FI, OF]),
    ("Read orders.csv, keep rows where amount >= 10 and status is paid, write out.json",
     [F, FI, OF]),
    ("Fetch https://api.example.com/orders and post them to https://hooks.example.com/in", [H, OW]),
    ("Get https://api.example.com/users, then write users.jsonl", [H, OF]),
    ("Import users.json; rename email to contact; save to users.csv", [F, T, OF]),
    ("read events.jsonl, count per day, write daily.csv", [F, A, OF]),
    ("Read orders.csv, total amount by customer and write totals.json", [F, A, OF]),
    ("Read sales.csv, average price per category, write to averages.jsonl", [F, A, OF]),
    ("read sales.csv. group by region and sum amount. save to regions.csv", [F, A, OF]),
    ("load logs.jsonl, exclude debug lines, append to errors.jsonl", [F, FI, OF]),
    ("load logs.jsonl, skip rows where level is debug, write to kept.jsonl", [F, FI, OF]),
    ("read people.csv, add field full_name = first + ' ' + last, write people.jsonl", [F, T, OF]),
    ("read people.csv, compute age_days as age * 365, write people.jsonl", [F, T, OF]),
    ("read people.csv, drop the fields ssn and password, write clean.csv", [F, T, OF]),
    ("read people.csv, lowercase email, write people.jsonl", [F, T, OF]),
    ("read prices.csv, round price to 2 decimals and write prices.json", [F, T, OF]),
    ("Read a.csv and b.csv and write to both.jsonl", [F, F, OF]),
    ("read orders.csv, write to raw.jsonl and post to https://hooks.example.com/raw", [F, OF, OW]),
    ("fetch https://api.example.com/orders, keep only shipped orders, count by carrier, "
     "send to https://hooks.example.com/counts", [H, FI, A, OW]),
    ("Read orders.csv, filter where country in US, UK, write to anglo.csv", [F, FI, OF]),
    ("Read users.jsonl and keep users whose email is not empty; write to mailable.jsonl",
     [F, FI, OF]),
    ("read users.jsonl, only active users, write active.jsonl", [F, FI, OF]),
    ("read tickets.csv, max priority per team, write to worst.csv", [F, A, OF]),
    ("read tickets.csv, lowest score by agent, write to low.csv", [F, A, OF]),
    ("read tickets.csv, number of tickets per status, write to counts.json", [F, A, OF]),
    ("read orders.csv where total is greater than 50, then total and average amount by "
     "customer, then write report.csv", [F, FI, A, OF]),
    ("read in.jsonl where name starts with 'A', write a.jsonl", [F, FI, OF]),
    ("read in.jsonl and remove records where score < 0.5, write ok.jsonl", [F, FI, OF]),
    ("read in.jsonl, rename id to order_id, uppercase country, write out.csv",
     [F, T, T, OF]),
    ("download https://data.example.org/feed.json, filter out rows where price is null, "
     "write to feed.jsonl", [H, FI, OF]),
    ("read orders.csv and notify https://hooks.example.com/orders", [F, OW]),
    ("read metrics.jsonl, trim host, count by host, write hosts.csv", [F, T, A, OF]),
    ("read a.jsonl. where x = 1. where y = 2. write b.jsonl", [F, FI, OF]),
    ("read cards.csv, mask card keeping the last 4, write to masked.csv", [F, MASK, OF]),
    ("query the postgres table customers and write to customers.jsonl", [PIN, OF]),
    ("read customers.csv and store into the database table customers", [F, POUT]),
    ("load the snowflake warehouse table sales and write to sales.jsonl", [WIN, OF]),
    ("read sales.csv and store into the snowflake warehouse table sales", [F, WOUT]),
    ("read the users table from postgres, only active users, write to active.csv",
     [PIN, FI, OF]),
    ("read orders.csv, mask iban, keep only paid orders, store in postgres table paid",
     [F, MASK, FI, POUT]),
    ("Read orders.csv", [F]),
    ("write to out.jsonl", [OF]),
    ("keep only paid orders", [FI]),
    ("frobnicate the widgets", []),
]  # fmt: skip

GENERATOR = DefaultGenerator(EXTENDED)


def draft_of(description: str, catalog=EXTENDED, **hints: str):  # type: ignore[no-untyped-def]
    generator = DefaultGenerator(catalog)
    return generator.generate(GenerationRequest(description, hints=hints), catalog.entries())


def test_the_table_is_large_enough() -> None:
    assert len(TABLE) >= 40


@pytest.mark.parametrize(("description", "expected"), TABLE, ids=[d[:40] for d, _ in TABLE])
def test_description_gives_the_expected_plugins_in_order(
    description: str, expected: list[str]
) -> None:
    draft = draft_of(description)
    assert [s.plugin for s in draft.definition.steps] == expected, draft
    try:
        validate_definition(draft.definition, lambda s: EXTENDED.check(s.plugin, s.config))
        valid = True
    except InvalidDefinition:
        valid = False
    assert valid or draft.questions, (description, draft)
    if valid and len(expected) >= 2:
        # a chain: every step after the sources depends on an earlier step
        names = [s.name for s in draft.definition.steps]
        for i, step in enumerate(draft.definition.steps):
            assert all(names.index(d) < i for d in step.depends_on)
            if step.plugin.startswith(("Data_", "Output")):
                assert step.depends_on, step


def test_same_input_gives_byte_identical_json() -> None:
    description = TABLE[20][0]
    first = msgspec.json.encode(draft_of(description))
    assert all(msgspec.json.encode(draft_of(description)) == first for _ in range(5))
    assert b"-" in first  # not an empty draft


def test_config_is_read_from_the_phrase() -> None:
    draft = draft_of(
        "Read orders.csv, keep only paid orders where amount > 100, total amount by "
        "customer, and write to totals.json"
    )
    read, keep, total, write = draft.definition.steps
    assert read.config == {"path": "orders.csv", "format": "csv"}
    assert keep.config == {"expression": 'status == "paid" and amount > 100'}
    assert total.config == {"aggregates": {"total_amount": "sum:amount"}, "group_by": ["customer"]}
    assert write.config == {"path": "totals.json", "format": "json"}
    wiring = [s.depends_on for s in draft.definition.steps]
    assert wiring == [(), ("read",), ("filter",), ("aggregate",)]
    assert draft.questions == [] and any("status" in a for a in draft.assumptions)
    validate_definition(draft.definition, lambda s: EXTENDED.check(s.plugin, s.config))


def test_a_description_holding_nul_is_drafted_not_looped_on_forever() -> None:
    """NUL marks the pieces the phrase splitter hides (quoted text, URLs, files,
    numbers); one in the description itself was never restored and the restoring loop
    never ended: the request hung its worker thread (found by the API fuzzer)."""
    draft = draft_of("read orders.csv\x00 and write \x007\x00 to out.jsonl")
    assert [s.plugin for s in draft.definition.steps] == [F, OF]
