"""``Server(lifespan=...)`` and ``server.state`` (DESIGN §4): in serve(), start(), the CLI
(each worker), and both TestClients; a failing lifespan serves nothing and exits 1."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from asyncapy import Client, LifespanError, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.testing import AsyncTestClient, TestClient

from ..conftest import make_server
from ..procs import ROOT, free_port, server_process


def lifespan_server(events: list[str], fail: bool = False) -> Server:
    @asynccontextmanager
    async def lifespan(server: Server) -> AsyncIterator[None]:
        events.append("enter")
        if fail:
            raise ConnectionRefusedError("the database is down")
        server.state.db = {"orders": 3}
        try:
            yield
        finally:
            events.append("exit")

    class Hooked(Server):
        async def setup(self) -> None:
            events.append("setup")

        async def shutdown(self) -> None:
            events.append("shutdown")

    server = Hooked("127.0.0.1", 0, lifespan=lifespan)

    @server.add_handler()
    async def orders(client: Client, packet: Packet) -> dict[str, int]:
        events.append("handler")
        return {"orders": server.state.db["orders"]}

    return server


async def test_lifespan_around_serve_and_state() -> None:
    events: list[str] = []
    server = lifespan_server(events)
    task = asyncio.ensure_future(server.serve())
    while not server.serving:
        await asyncio.sleep(0.01)
    assert events == ["enter", "setup"]
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        assert await client.request({}) == {"orders": 3}
    server.request_stop()
    await task
    assert events == ["enter", "setup", "handler", "shutdown", "exit"]


def test_lifespan_in_the_test_client() -> None:
    events: list[str] = []
    server = lifespan_server(events)
    with TestClient(server) as client:
        assert client.request({}) == {"orders": 3}
    assert events == ["enter", "setup", "handler", "shutdown", "exit"]


async def test_lifespan_in_the_async_test_client() -> None:
    events: list[str] = []
    server = lifespan_server(events)
    async with AsyncTestClient(server) as client:
        assert await client.request({}) == {"orders": 3}
    assert events == ["enter", "setup", "handler", "shutdown", "exit"]


async def test_failing_lifespan_serves_nothing(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    server = lifespan_server(events, fail=True)
    port = free_port()
    server.port = port
    with pytest.raises(LifespanError) as info:
        await server.start_serving()
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert not server.serving and events == ["enter"]  # no setup(), nothing listening
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert "lifespan failed" in caplog.text
    with pytest.raises(LifespanError):
        with TestClient(lifespan_server([], fail=True)):
            pass


def test_state_is_a_namespace() -> None:
    server = make_server()
    server.state.x = 1
    assert server.state.x == 1
    with pytest.raises(AttributeError, match="'missing'"):
        server.state.missing  # noqa: B018


def _run(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_with_failing_lifespan_exits_1(workers: str) -> None:
    port = free_port()
    result = _run(
        ["-m", "asyncapy", "run", "tests.servers.lifespan_app:server", "--port", str(port), "--workers", workers],
        {"LIFESPAN_FAIL": "1"},
    )
    assert result.returncode == 1, result
    assert "the database is down" in result.stderr
    assert "Serving on" not in result.stderr


def test_start_with_failing_lifespan_exits_1() -> None:
    result = _run(["tests/servers/lifespan_app.py"], {"LIFESPAN_FAIL": "1", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1, result
    assert "the database is down" in result.stderr


def test_lifespan_runs_in_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "lifespan.log"
    port = free_port()
    monkeypatch.setenv("LIFESPAN_LOG", str(log))  # server_process passes the environment on
    args = ["-m", "asyncapy", "run", "tests.servers.lifespan_app:server", "--port", str(port), "--workers", "2"]
    with server_process(args, port) as proc:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (log.exists() and log.read_text().count("enter") == 2):
            time.sleep(0.05)  # the second worker may still be starting
    assert proc.returncode == 0, proc.communicate()
    lines = log.read_text().splitlines()
    enters = {line.split()[1] for line in lines if line.startswith("enter")}
    exits = {line.split()[1] for line in lines if line.startswith("exit")}
    assert len(enters) == 2 and enters == exits, lines
