"""StepContext: paths stay inside the tenant's folder, logs reach the executor, and a
cancelled run stops at the next checkpoint."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from infrastructure.plugins.base import PluginError, StepContext
from tests.unit.plugins.helpers import make_context


def test_the_tenant_folder_is_created_on_demand(context: StepContext) -> None:
    assert not context.files.exists()

    path = context.tenant_path("in/orders.jsonl")

    assert context.files.is_dir()
    assert path == context.files.resolve() / "in" / "orders.jsonl"


@pytest.mark.parametrize(
    "relative",
    ["../x.jsonl", "a/../../x", "..", "/etc/passwd", "..\\x", "C:\\x", "", " ", ".", "a\0b"],
)
def test_a_path_that_would_leave_the_folder_is_refused(context: StepContext, relative: str) -> None:
    with pytest.raises(PluginError) as refused:
        context.tenant_path(relative)

    assert refused.value.retryable is False


def test_a_symbolic_link_to_outside_is_refused(tmp_path: Path, context: StepContext) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"secret": 1}\n')
    context.files.mkdir(parents=True)
    os.symlink(outside, context.files / "linked-dir")
    os.symlink(outside / "secret.jsonl", context.files / "linked.jsonl")

    for relative in ("linked-dir/secret.jsonl", "linked.jsonl", "linked-dir/new.jsonl"):
        with pytest.raises(PluginError, match="leads outside the tenant's folder"):
            context.tenant_path(relative)


def test_a_symbolic_link_within_the_folder_is_fine(context: StepContext) -> None:
    (context.files / "data").mkdir(parents=True)
    os.symlink(context.files / "data", context.files / "current")

    assert context.tenant_path("current/a.jsonl") == context.files.resolve() / "data" / "a.jsonl"


def test_one_tenant_cannot_reach_another_through_the_root(tmp_path: Path) -> None:
    context = make_context(tmp_path, files=tmp_path / "files" / "t-1")
    (tmp_path / "files" / "t-2").mkdir(parents=True)

    with pytest.raises(PluginError):
        context.tenant_path("../t-2/orders.jsonl")


def test_log_passes_level_and_message_to_the_executor(context: StepContext) -> None:
    context.log("read 3 records")
    context.log("slow server", level="warning")

    assert context.logs == [("info", "read 3 records"), ("warning", "slow server")]  # type: ignore[attr-defined]


def test_the_default_logger_accepts_messages(tmp_path: Path) -> None:
    context = StepContext("t", "r", "s", tmp_path, tmp_path / "files", {}, asyncio.Event())

    context.log("nobody listens")

    assert context.allow_private_networks is False


async def test_checkpoint_stops_a_cancelled_run(context: StepContext) -> None:
    await context.checkpoint()

    context.cancelled.set()

    with pytest.raises(PluginError, match="cancelled") as stopped:
        await context.checkpoint()
    assert stopped.value.retryable is False
