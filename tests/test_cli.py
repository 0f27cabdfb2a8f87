"""The ``asyncapy`` command: loading MODULE:SERVER, schema, send, and run + send end to end."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncapy import Client, Packet
from asyncapy.cli import CLIError, load_server, main

from .conftest import make_server, running
from .procs import ROOT, free_port, server_process


def asyncapy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncapy", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def served_example() -> Iterator[int]:
    """``python -m asyncapy run examples.typed_api:server`` on a free port, SIGTERM'd afterwards."""
    port = free_port()
    args = ["-m", "asyncapy", "run", "examples.typed_api:server", "--port", str(port), "--log-level", "warning"]
    with server_process(args, port) as proc:
        yield port
    assert proc.returncode == 0, proc.communicate()


@pytest.mark.parametrize("encoding", ["json", "ziproto"])
def test_send_round_trips_against_run(served_example: int, encoding: str) -> None:
    result = asyncapy("send", f"127.0.0.1:{served_example}", '{"kind": "ping"}', "--encoding", encoding)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"kind": "pong"}


@pytest.mark.parametrize("extra", [["--workers", "2"], ["--uvloop"]])
def test_run_with_workers_or_uvloop_serves_and_stops(extra: list[str]) -> None:
    port = free_port()
    args = ["-m", "asyncapy", "run", "examples.typed_api:server", "--port", str(port), *extra]
    with server_process(args, port) as proc:
        for encoding in ("json", "ziproto"):
            result = asyncapy("send", f"127.0.0.1:{port}", '{"kind": "add", "a": 2, "b": 3}', "--encoding", encoding)
            assert json.loads(result.stdout) == {"kind": "sum", "result": 5}, result.stderr
    assert proc.returncode == 0, proc.communicate()


def test_run_refuses_zero_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "examples.typed_api:server", "--workers", "0"]) == 2
    assert "workers must be" in capsys.readouterr().err


def test_send_to_a_server_that_is_down() -> None:
    result = asyncapy("send", f"127.0.0.1:{free_port()}", "{}", "--timeout", "5")
    assert result.returncode == 3
    assert "connection refused" in result.stderr and result.stdout == ""


def test_run_on_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = asyncapy("run", "examples.typed_api:server", "--port", str(port))
    assert result.returncode == 3
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr


async def test_send_reports_an_error_reply(capsys: pytest.CaptureFixture[str]) -> None:
    server = make_server()

    @server.add_handler()
    async def boom(client: Client, packet: Packet) -> None:
        raise RuntimeError("bug")

    async with running(server):
        code = await asyncio.to_thread(main, ["send", f"127.0.0.1:{server.port}", "{}", "--timeout", "5"])
    out, err = capsys.readouterr()
    assert code == 1
    reply = json.loads(out)  # on stdout, for scripts
    assert reply["status"] == "failure" and reply["error"] == "ERR_INTERNAL" and "bug" not in out
    assert "the server answered ERR_INTERNAL" in err


def test_send_prints_an_error_reply_on_stdout_and_exits_1(served_example: int) -> None:
    """A script reads the error packet from stdout; the exit status says it was one."""
    result = asyncapy("send", f"127.0.0.1:{served_example}", '{"kind": "add", "a": "one"}')
    assert result.returncode == 1, result.stderr
    reply = json.loads(result.stdout)
    assert reply["status"] == "failure" and reply["error"] == "ERR_NO_HANDLER" and reply["errors"]
    assert "the server answered ERR_NO_HANDLER" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "localhost", "{}"], "expected HOST:PORT"),
        (["send", "127.0.0.1:1", "[1]"], "must be a JSON object"),
        (["send", "127.0.0.1:1", "{nope"], "not valid JSON"),
        (["schema", "examples.typed_api"], "expected MODULE:SERVER"),
        (["schema", "examples.nowhere:server"], "could not import module 'examples.nowhere'"),
        (["schema", "examples.typed_api:nobody"], "has no attribute 'nobody'"),
        (["schema", "examples.typed_api:Ping"], "not an asyncapy Server"),
    ],
)
def test_usage_errors_are_clear(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["run"], ["schema"], ["send"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: asyncapy" in capsys.readouterr().out


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "examples.typed_api:server"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["handler"] for r in doc["routes"]] == ["ping", "add", "area", "hello"]


def test_schema_asyncapi_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    args = ["schema", "examples.typed_api:server", "--asyncapi", "--title", "T", "--api-version", "3", "-o", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["asyncapi"] == "3.0.0" and doc["info"] == {"title": "T", "version": "3"}


def test_python_dash_m_schema_from_the_current_directory() -> None:
    result = asyncapy("schema", "examples.typed_api:server", "--asyncapi")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["servers"]["main"]["host"] == "127.0.0.1:1500"


def test_load_server_adds_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_cli_app.py").write_text("from asyncapy import Server\napp = Server(port=0)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    assert load_server("my_cli_app:app").port == 0
    with pytest.raises(CLIError):
        load_server("my_cli_app:")
