"""The `norn` command's surface, without servers: help for everything, --version, and
user errors as one `norn: ...` line and an exit code instead of a traceback."""

from __future__ import annotations

import argparse
import io
import os
import socket
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import api.bootstrap
from api.cli import build_parser, main
from api.cli_support import ProgressLine, open_listener, redact_url
from infrastructure.settings import Settings


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean NORN_* environment and a data dir that must stay untouched: starting a
    server or building the container fails the test."""
    for name in list(os.environ):
        if name.startswith("NORN_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("NORN_DATA_DIR", str(data_dir))

    def no_servers(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("servers were started")

    monkeypatch.setattr(api.bootstrap, "start_servers", no_servers)
    monkeypatch.setattr(api.bootstrap, "build_container", no_servers)
    return data_dir


def _parsers(parser: argparse.ArgumentParser, path: str = "norn") -> Iterator[tuple[str, Any]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help line"
                yield from _parsers(child, f"{path} {name}")


def test_every_command_and_option_has_help() -> None:
    seen = []
    for path, parser in _parsers(build_parser()):
        seen.append(path)
        assert parser.description, f"{path} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{path} {action.option_strings or action.dest} has no help"
    assert {
        "norn events tail",
        "norn events export",
        "norn projections rebuild",
        "norn users create",
        "norn info",
    } <= set(seen)


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"norn {version('norn')}"


@pytest.mark.parametrize(
    "argv",
    [["bogus"], ["events", "tail", "--from", "soon"], ["events", "tail", "--from", "-3"], []],
)
def test_bad_arguments_print_usage_and_exit_2(
    argv: list[str], cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: norn") and "Traceback" not in err


def test_an_unknown_projection_is_named_without_starting_anything(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projections", "rebuild", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("norn: unknown projection 'nope'; one of ") and "pipelines" in err
    assert not cli_env.exists()


def test_an_invalid_setting_is_one_line_and_exit_2(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NORN_PORT", "eighty")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == "norn: configuration error: NORN_PORT must be a number, not 'eighty'\n"
    assert not cli_env.exists()


def test_serve_on_a_busy_port_fails_before_touching_anything(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        monkeypatch.setenv("NORN_PORT", str(held.getsockname()[1]))
        assert main(["serve"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("norn: cannot listen on 127.0.0.1:") and "in use" in err
    assert not cli_env.exists()


@pytest.mark.parametrize("role", ["relay", "projector", "executor"])
def test_a_role_with_a_busy_metrics_port_fails_before_touching_anything(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], role: str
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        monkeypatch.setenv("NORN_METRICS_PORT", str(held.getsockname()[1]))
        assert main([role]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("norn: cannot listen on 127.0.0.1:") and "NORN_METRICS_PORT" in err
    assert not cli_env.exists()


def test_an_unreachable_database_is_one_line_without_its_password(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.undo()  # the real start_servers: it only connects to the URL given
    for name in list(os.environ):
        if name.startswith("NORN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NORN_DATA_DIR", str(cli_env))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv("NORN_DATABASE_URL", f"postgresql://norn:s3cret@127.0.0.1:{closed_port}/x")

    assert main(["migrate"]) == 1

    err = capsys.readouterr().err
    assert err.startswith(
        f"norn: cannot use PostgreSQL (postgresql://norn:***@127.0.0.1:{closed_port}/x)"
    )
    assert err.count("\n") == 1 and "s3cret" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://norn:pw@db:5432/norn", "postgresql://norn:***@db:5432/norn"),
        ("postgresql://norn@db/norn", "postgresql://norn@db/norn"),
        ("postgresql://db/norn?user=a&password=pw", "postgresql://db/norn?user=a&password=***"),
        ("host=db password='p w' user=x", "host=db password=*** user=x"),
        ("nats://user:pw@nats:4222", "nats://user:***@nats:4222"),
        ("nats://s3cr3t-token@nats:4222", "nats://***@nats:4222"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg",
            "postgresql://postgres@/postgres?host=/tmp/pg",  # no password to hide
        ),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_listener_refuses_a_port_in_use_and_serves_a_free_one() -> None:
    first = open_listener("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            open_listener("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass  # already listening: start-up's clients wait in the backlog
    finally:
        first.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_off_a_terminal_is_a_whole_line_now_and_then_with_the_rate() -> None:
    out, clock = io.StringIO(), Clock()
    progress = ProgressLine("rebuilding runs", out, tty=False, every=5.0, clock=clock)
    progress.update(0, 1000)
    clock.now += 1
    progress.update(100, 1000)  # within 5 s of the last line: not shown
    clock.now += 4
    progress.update(500, 1000)
    clock.now += 5
    progress.update(1000, 1000)  # the end is always shown
    progress.finish()
    assert out.getvalue().splitlines() == [
        "rebuilding runs: 0/1000 (0%)",
        "rebuilding runs: 500/1000 (50%), 100/s, about 5s left",
        "rebuilding runs: 1000/1000 (100%), 100/s",
    ]


def test_progress_on_a_terminal_rewrites_one_line_and_ends_it() -> None:
    out, clock = io.StringIO(), Clock()
    progress = ProgressLine("rebuilding runs", out, tty=True, clock=clock)
    progress.update(0, 200)
    clock.now += 60
    progress.update(100, 200)
    progress.finish()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "100/200 (50%), 2/s, about 1m00s left" in text


def test_the_first_admin_password_stands_out_as_a_block() -> None:
    from api.cli_support import admin_password_block

    lines = admin_password_block("admin", "p4ss-w0rd").split("\n")
    assert lines[0] == "" and lines[-1] == ""  # set apart from the log lines around it
    assert lines[1] == lines[-2] and set(lines[1]) == {"="}
    assert "      password: p4ss-w0rd" in lines
    assert any("shown ONCE" in line for line in lines)


def test_a_malformed_database_url_is_a_configuration_error_without_its_password(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NORN_DATABASE_URL", "postgresql://norn:s3cret@db/norn?bogus=1")
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("norn: configuration error: NORN_DATABASE_URL is not a PostgreSQL URL")
    assert "bogus" in err and "s3cret" not in err


def test_info_names_the_servers_in_use_hides_passwords_and_starts_nothing(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("NORN_DATABASE_URL", f"postgresql://norn:s3cret@127.0.0.1:{closed}/norn")
    monkeypatch.setenv("NORN_NATS_URL", f"nats://t0ken@127.0.0.1:{closed}")
    monkeypatch.setenv("NORN_PORT", str(closed))

    assert main(["info"]) == 0

    out = capsys.readouterr().out
    assert f"API: http://127.0.0.1:{closed} (nothing listening)" in out
    assert f"PostgreSQL: postgresql://norn:***@127.0.0.1:{closed}/norn\n" in out
    assert "from NORN_DATABASE_URL; not answering: connection failed" in out
    assert f"NATS: nats://***@127.0.0.1:{closed}\n  from NORN_NATS_URL; not answering" in out
    assert "s3cret" not in out and "t0ken" not in out
    assert not cli_env.exists()


def test_info_on_the_embedded_default_reports_servers_not_running(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"PostgreSQL: embedded, not running (data in {cli_env / 'postgres'})" in out
    assert f"NATS: embedded, not running (data in {cli_env / 'nats'})" in out
    assert not cli_env.exists()


def test_the_http_server_keeps_idle_connections_longer_than_clients_and_balancers() -> None:
    """uvicorn's own 5 s equals httpx's pool expiry: under load the server closed
    connections a client was sending on, and the client saw resets (bench/feeds.py)."""
    from api.cli_commands import http_server_config

    config = http_server_config(object(), Settings.from_env({}))
    assert config.timeout_keep_alive == 65
    assert config.ws_per_message_deflate is False  # CPU per feed and event, for bandwidth
    assert config.access_log is False  # never written at "warning", yet called per response
    assert config.forwarded_allow_ips == "127.0.0.1"

    config = http_server_config(object(), Settings.from_env({"NORN_HTTP_KEEPALIVE": "300"}))
    assert config.timeout_keep_alive == 300
