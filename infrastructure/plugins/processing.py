"""Data_Processing.filter, .transform and .aggregate.

filter and transform stream (one record in memory at a time) and use the expression
language of infrastructure/plugins/expressions.py, parsed once per step. aggregate holds
one accumulator per group, so its memory grows with the number of groups, never with the
number of records; `max_groups` bounds it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from infrastructure.plugins.aggregates import AGGREGATE_SPEC, Groups, parse_aggregate
from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext
from infrastructure.plugins.expressions import Expression, ExpressionError, expression_problem
from infrastructure.plugins.schema import NonEmpty, StepConfig

CHECK_EVERY = 1000
_FIELDS = "New or replaced field → expression; every expression sees the incoming record."
_AGGREGATES = (
    "Output field → count | count:<field> | sum:<field> | avg:<field> | min:<field> | "
    "max:<field>. Nulls are skipped; count counts records."
)
_GROUP_BY = "Fields whose values form a group; none: one group of all records."
_MAX = "Most groups held in memory; more fails the step."
FieldName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


def _failed(ref: str, number: int, expression: Expression, error: ExpressionError) -> PluginError:
    return PluginError(
        f"{ref}: record {number}: {expression.text!r} failed: {error}", retryable=False
    )


class Filter(Plugin):
    type, name = "Data_Processing", "filter"
    description = "Keep records for which an expression is true, e.g. amount > 10."

    class Config(StepConfig):
        expression: NonEmpty

    @classmethod
    def check(cls, config: Any) -> list[str]:
        problem = expression_problem(config.expression)
        return [f"config.expression: {problem}"] if problem else []

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        expression = Expression(config.expression)
        number = kept = 0
        async for record in records:
            number += 1
            try:
                keep = expression.evaluate(record)
            except ExpressionError as error:
                raise _failed(self.ref(), number, expression, error) from None
            if keep:
                kept += 1
                yield record
            if number % CHECK_EVERY == 0:
                await context.checkpoint()
        context.log(f"kept {kept} of {number} records")


class Transform(Plugin):
    type, name = "Data_Processing", "transform"
    description = "Add or replace fields with computed expressions; optionally drop fields."

    class Config(StepConfig):
        fields: Annotated[dict[FieldName, NonEmpty], msgspec.Meta(description=_FIELDS)] = {}
        drop: Annotated[list[FieldName], msgspec.Meta(description="Fields to remove.")] = []

    @classmethod
    def check(cls, config: Any) -> list[str]:
        if not config.fields and not config.drop:
            return ["config: set 'fields' or 'drop'"]
        problems = []
        for name, text in config.fields.items():
            problem = expression_problem(text)
            if problem:
                problems.append(f"config.fields.{name}: {problem}")
        for name in config.drop:
            if name in config.fields:
                problems.append(f"config.drop: {name!r} is also computed in fields")
        return problems

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        computed = [(name, Expression(text)) for name, text in config.fields.items()]
        drop = set(config.drop)
        number = 0
        async for record in records:
            number += 1
            values = {}
            for name, expression in computed:
                try:
                    values[name] = expression.evaluate(record)
                except ExpressionError as error:
                    raise _failed(self.ref(), number, expression, error) from None
            out = {k: v for k, v in record.items() if k not in drop} if drop else dict(record)
            out.update(values)
            yield out
            if number % CHECK_EVERY == 0:
                await context.checkpoint()


class Aggregate(Plugin):
    type, name = "Data_Processing", "aggregate"
    description = "Group records by fields and compute count, sum, avg, min and max per group."

    class Config(StepConfig):
        aggregates: Annotated[
            dict[FieldName, Annotated[str, msgspec.Meta(max_length=300)]],
            msgspec.Meta(description=_AGGREGATES),
        ]
        group_by: Annotated[list[FieldName], msgspec.Meta(description=_GROUP_BY)] = []
        max_groups: Annotated[int, msgspec.Meta(gt=0, le=10_000_000, description=_MAX)] = 1_000_000

    @classmethod
    def check(cls, config: Any) -> list[str]:
        problems = []
        if not config.aggregates:
            problems.append('config.aggregates: name at least one, e.g. {"n": "count"}')
        if len(set(config.group_by)) != len(config.group_by):
            problems.append("config.group_by: a field is named twice")
        for name, spec in config.aggregates.items():
            if not re.fullmatch(AGGREGATE_SPEC, spec):
                problems.append(
                    f"config.aggregates.{name}: {spec!r} is not count, count:<field>, "
                    "sum:<field>, avg:<field>, min:<field> or max:<field>"
                )
            if name in config.group_by:
                problems.append(f"config.aggregates.{name}: also a group_by field")
        return problems

    async def execute(
        self, config: Any, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        specs = {name: parse_aggregate(spec) for name, spec in config.aggregates.items()}
        groups = Groups(config.group_by, specs, config.max_groups, self.ref())
        number = 0
        async for record in records:
            number += 1
            groups.add(record, number)
            if number % CHECK_EVERY == 0:
                await context.checkpoint()
        context.log(f"{number} records in {len(groups)} groups")
        for row in groups.rows():
            yield row
