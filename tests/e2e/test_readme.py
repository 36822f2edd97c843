"""The README's examples, run as written (README "A walk through the API"): every `sh`
block that talks to the API (`$B`), in order, in one bash, against a `norn serve` started
the way the quick start starts it, in the directory it runs in.

curl is wrapped to note each answer's status and the line that asked. An example may
answer 4xx only where its own comment says so (`# 412: ...`, `# 409 while ...`): that is
how the README shows an error on purpose. Everything else must succeed, no answer may be
a 5xx, and the script must reach its end with every variable it uses set."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infrastructure.embedded import free_port
from infrastructure.settings import Settings
from tests.support.processes import norn_env

README = Path(__file__).resolve().parents[2] / "README.md"
NORN = str(Path(sys.executable).parent / "norn")
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
PRELUDE = """set -u
curl() { command curl -w "%{stderr}STATUS %{http_code} ${BASH_LINENO[0]}\\n" "$@"; }
"""


def walkthrough() -> list[str]:
    """The script's lines: the README's API examples, in order."""
    blocks = [b for b in BLOCK.findall(README.read_text()) if "$B" in b or "B=" in b]
    return [line for block in blocks for line in block.splitlines()]


def commands(lines: list[str]) -> dict[int, str]:
    """Each script line (1-based, after the prelude) -> the text of the whole command it
    belongs to (continuation lines and the comment lines right after it included)."""
    offset = PRELUDE.count("\n")
    owner: dict[int, str] = {}
    start = 0
    for i, line in enumerate(lines):
        continued = i > 0 and (
            lines[i - 1].rstrip().endswith("\\")
            or line.lstrip().startswith("#")
            or lines[i - 1].count("'") % 2 == 1  # inside a quoted multi-line body
            or line.startswith((" ", "}"))
        )
        if not continued:
            start = i
        owner[i] = str(start)
    text: dict[str, list[str]] = {}
    for i, key in owner.items():
        text.setdefault(key, []).append(lines[i])
    return {i + 1 + offset: "\n".join(text[key]) for i, key in owner.items()}


def expected_errors(command: str) -> set[int]:
    comments = " ".join(part.split("#", 1)[1] for part in command.splitlines() if "#" in part)
    return {int(code) for code in re.findall(r"\b(4\d\d)\b", comments)}


def start_serve(settings: Settings, cwd: Path, port: int) -> subprocess.Popen[bytes]:
    env = norn_env(
        settings,
        NORN_PORT=str(port),
        NORN_ADMIN_USERNAME="admin",
        NORN_ADMIN_PASSWORD=settings.admin_password or "",
        NORN_DATA_DIR=None,  # the default, ./.norn, as in the README
    )
    process = subprocess.Popen([NORN, "serve"], env=env, cwd=cwd)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "norn serve exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("norn serve did not become ready")


def test_the_readme_walkthrough_runs_as_written(settings: Settings, tmp_path: Path) -> None:
    lines = walkthrough()
    assert len(lines) > 100, "the README's examples were not found"
    script = "\n".join(lines)
    port = free_port()
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    script = script.replace("<printed password>", settings.admin_password or "")
    process = start_serve(settings, tmp_path, port)
    try:
        done = subprocess.run(  # noqa: S603
            ["bash", "-c", PRELUDE + script + "\necho WALKTHROUGH-DONE"],  # noqa: S607
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert done.stdout.rstrip().endswith("WALKTHROUGH-DONE"), done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    by_line = commands(lines)
    answers = [
        (int(status), int(line))
        for status, line in re.findall(r"^STATUS (\d{3}) (\d+)$", done.stderr, re.M)
    ]
    assert len(answers) > 60, done.stderr[-3000:]
    unexpected = [
        (status, by_line.get(line, f"line {line}"))
        for status, line in answers
        if status >= 500
        or status == 0
        or (status >= 400 and status not in expected_errors(by_line.get(line, "")))
    ]
    assert not unexpected, unexpected
    # What the walk-through made is really there: the run wrote its output.
    assert list(tmp_path.glob(".norn/files/*/paid.jsonl"))
