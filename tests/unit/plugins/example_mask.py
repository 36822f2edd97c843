"""Data_Processing.mask: the third-party plugin example of the README, verbatim.

In a real package this is norn_acme/mask.py, registered in that package's pyproject.toml:

    [project.entry-points."norn.plugins"]
    mask = "norn_acme.mask:Mask"
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec

from infrastructure.plugins.base import Plugin, PluginError, Record, StepContext


class Mask(Plugin):
    type = "Data_Processing"
    name = "mask"
    description = "Hide the values of some fields, keeping their last few characters."

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        fields: list[str]
        keep_last: Annotated[int, msgspec.Meta(ge=0, le=8)] = 0
        required: bool = False  # fail on a record that lacks one of the fields

    @classmethod
    def check(cls, config: Config) -> list[str]:
        # Rules the schema cannot say, as "config.<field>: message".
        if not config.fields:
            return ["config.fields: name at least one field"]
        return []

    async def execute(
        self, config: Config, context: StepContext, records: AsyncIterator[Record]
    ) -> AsyncIterator[Record]:
        masked = number = 0
        async for record in records:
            number += 1
            out = dict(record)  # never change the upstream step's record
            for field in config.fields:
                if field not in out:
                    if config.required:
                        raise PluginError(
                            f"record {number} has no field {field!r}", retryable=False
                        )
                    continue
                text = "" if out[field] is None else str(out[field])
                kept = text[-config.keep_last :] if config.keep_last else ""
                out[field] = "***" + kept
                masked += 1
            yield out
            if number % 1000 == 0:
                await context.checkpoint()  # lets a cancelled run stop in a long loop
        context.log(f"masked {masked} values in {number} records")
