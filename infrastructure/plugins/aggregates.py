"""Group-by accumulators for Data_Processing.aggregate.

One entry per group, each holding one small state per aggregate: memory grows with the
number of groups (bounded by max_groups), not with the number of records.

Null (or missing) values are skipped by count:<field>, sum, avg, min and max, as in SQL;
`count` counts records. Over no values, sum is 0 and avg, min and max are null. With no
group_by there is exactly one group, so even an empty input gives one row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from infrastructure.plugins.base import PluginError, Record

AGGREGATE_SPEC = r"^(count|(count|sum|avg|min|max):\S.{0,255})$"


@dataclass(frozen=True)
class AggregateSpec:
    function: str  # count, sum, avg, min, max
    field: str | None  # None: count records


def parse_aggregate(spec: str) -> AggregateSpec:
    function, _, field = spec.partition(":")
    return AggregateSpec(function, field or None)


def _initial(spec: AggregateSpec) -> Any:
    if spec.function == "count":
        return 0
    if spec.function == "sum":
        return 0
    if spec.function == "avg":
        return [0, 0]
    return None  # min, max: nothing seen yet


def _group_key(value: Any) -> Any:
    # True == 1 in Python; a boolean must not share a group with a number.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict | list):
        return ("json", msgspec.json.encode(value))
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Groups:
    def __init__(
        self, group_by: list[str], specs: dict[str, AggregateSpec], max_groups: int, ref: str
    ) -> None:
        self.group_by, self.specs, self.max_groups, self.ref = group_by, specs, max_groups, ref
        self.groups: dict[tuple[Any, ...], tuple[Record, list[Any]]] = {}
        if not group_by:
            self.groups[()] = ({}, [_initial(s) for s in specs.values()])

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, record: Record, number: int) -> None:
        values = [record.get(field) for field in self.group_by]
        key = tuple(_group_key(v) for v in values)
        entry = self.groups.get(key)
        if entry is None:
            if len(self.groups) >= self.max_groups:
                raise PluginError(
                    f"{self.ref}: record {number} starts group {len(self.groups) + 1}, more "
                    f"than max_groups ({self.max_groups}); raise it or group by fewer fields",
                    retryable=False,
                )
            entry = (
                dict(zip(self.group_by, values, strict=True)),
                [_initial(s) for s in self.specs.values()],
            )
            self.groups[key] = entry
        states = entry[1]
        for i, (name, spec) in enumerate(self.specs.items()):
            states[i] = self._step(states[i], spec, record, number, name)

    def _step(self, state: Any, spec: AggregateSpec, record: Record, number: int, name: str) -> Any:
        if spec.field is None:
            return state + 1
        value = record.get(spec.field)
        if value is None:
            return state
        if spec.function == "count":
            return state + 1
        if spec.function in ("sum", "avg") and not _is_number(value):
            raise PluginError(
                f"{self.ref}: record {number}: {spec.function}:{spec.field} (for {name!r}) "
                f"needs numbers, got {_shown(value)}",
                retryable=False,
            )
        if spec.function == "sum":
            return state + value
        if spec.function == "avg":
            return [state[0] + value, state[1] + 1]
        if state is None:
            return value
        try:
            better = value < state if spec.function == "min" else value > state
        except TypeError:
            raise PluginError(
                f"{self.ref}: record {number}: {spec.function}:{spec.field} cannot compare "
                f"{_shown(value)} with {_shown(state)}",
                retryable=False,
            ) from None
        return value if better else state

    def rows(self) -> Iterator[Record]:
        for values, states in self.groups.values():
            row = dict(values)
            for (name, spec), state in zip(self.specs.items(), states, strict=True):
                if spec.function == "avg":
                    row[name] = state[0] / state[1] if state[1] else None
                else:
                    row[name] = state
            yield row


def _shown(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."
