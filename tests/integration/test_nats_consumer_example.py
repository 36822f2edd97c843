"""The README's example NATS consumer, run as written against the real app: it sees how
each run of its tenant ended, from the event alone, and a second start goes on after the
last event it acknowledged (its durable consumer), with nothing twice."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    make_pipeline,
    run_settings,
    step,
    tenant_editor,
    trigger,
    wait_run,
)

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- example: nats-consumer -->"


def example_source() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(re.escape(MARKER) + r"\n```python\n(.*?)```", text, re.S)
    assert block, f"README has no python block after {MARKER}"
    return block.group(1)


class Consumer:
    """The example, as its own process, with its output read line by line."""

    def __init__(self, script: Path, settings: Settings, tenant: str) -> None:
        self._args = (str(script), settings.nats_url or "", tenant)
        self._env = {
            **os.environ,
            "NORN_SUBJECT_PREFIX": settings.subject_prefix,
            "NORN_NATS_STREAM": settings.nats_stream,
        }
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Consumer:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *self._args, env=self._env, stdout=asyncio.subprocess.PIPE
        )
        return self

    async def line(self, seconds: float = 30.0) -> list[str]:
        assert self.process and self.process.stdout
        raw = await asyncio.wait_for(self.process.stdout.readline(), seconds)
        assert raw, "the example consumer exited"
        return raw.decode().split(" ", 5)

    async def nothing_more(self, seconds: float = 2.0) -> None:
        assert self.process and self.process.stdout
        try:
            extra = await asyncio.wait_for(self.process.stdout.readline(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected output {extra!r}")

    async def __aexit__(self, *_: object) -> None:
        assert self.process
        self.process.kill()
        await self.process.wait()


async def test_the_readme_consumer_acts_on_run_outcomes_and_resumes_durably(
    settings: Settings, tmp_path: Path
) -> None:
    script = tmp_path / "consume_runs.py"
    script.write_text(example_source(), encoding="utf-8")
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant, editor, _ = await tenant_editor(client, settings)
        good = await make_pipeline(client, editor, "good", step("a", "Test.emit", config={}))
        bad = await make_pipeline(
            client,
            editor,
            "bad",
            step("a", "Test.fail", config={"message": "no input", "retryable": False}),
        )
        consumer = Consumer(script, settings, tenant)
        async with consumer:
            first = await trigger(client, editor, good)
            assert (await wait_run(client, editor, first["run_id"]))["status"] == "succeeded"
            run_id, name, revision, status, duration, message = await consumer.line()
            assert (run_id, name, revision, status) == (first["run_id"], "good", "1", "succeeded")
            assert float(duration) >= 0 and message.strip() == "None"
        second = await trigger(client, editor, bad)  # while the consumer is stopped
        assert (await wait_run(client, editor, second["run_id"]))["status"] == "failed"
        async with consumer:
            run_id, name, _, status, _, message = await consumer.line()
            assert (run_id, name, status) == (second["run_id"], "bad", "failed")
            assert "no input" in message
            await consumer.nothing_more()
