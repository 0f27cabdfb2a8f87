"""Server lifecycle: hooks, config file, run_sync_task, signals, public names."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import pytest

import asyncapy
from asyncapy import Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.client import Client as SyncClient

from .conftest import make_server, running
from .procs import free_port, server_process

DATA = Path(__file__).parent / "data"


async def test_setup_and_shutdown_hooks_run_once_each() -> None:
    events: list[str] = []

    class HookedServer(Server):
        async def setup(self) -> None:
            events.append("setup")

        async def shutdown(self) -> None:
            events.append("shutdown")

    server = HookedServer("127.0.0.1", 0)

    @server.add_handler()
    async def handler(client: Client, packet: Packet) -> dict[str, list[str]]:
        return {"events": events}

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({}) == {"events": ["setup"]}
    assert events == ["setup", "shutdown"]


async def test_run_sync_task_runs_in_a_thread() -> None:
    server = make_server()

    def blocking(a: int, b: int) -> tuple[int, bool]:
        time.sleep(0.01)
        return a + b, threading.current_thread() is threading.main_thread()

    assert await server.run_sync_task(blocking, 2, 3) == (5, False)


async def test_config_file_overrides_the_arguments() -> None:
    server = Server("0.0.0.0", 9999, config=DATA / "server.ini")
    assert (server.addr, server.port, server.header_size, server.byteorder) == ("127.0.0.1", 0, 2, "little")
    assert (server.encoding, server.timeout, server.session_limit) == ("ziproto", 15, 3)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        client = AsyncClient("127.0.0.1", server.port, header_size=2, byteorder="little", encoding="ziproto")
        async with client:
            assert await client.request({"cfg": True}) == {"cfg": True}


def test_config_file_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[AsyncAPY]\nprot = 1\n")
    with pytest.raises(ValueError, match="unknown key 'prot'"):
        Server(config=bad)
    bad.write_text("[AsyncAPY]\nport = many\n")
    with pytest.raises(ValueError, match="bad value for 'port'"):
        Server(config=bad)
    bad.write_text("[Other]\n")
    with pytest.raises(ValueError, match=r"no \[AsyncAPY\] section"):
        Server(config=bad)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"header_size": 9}, "header_size"), ({"byteorder": "middle"}, "byteorder"), ({"timeout": -1}, "timeout")],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Server(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_start_stops_cleanly_on_a_signal_and_lets_handlers_finish(sig: signal.Signals) -> None:
    port = free_port()
    with server_process(["-m", "tests.servers.slow", str(port)], port) as proc:
        with SyncClient("127.0.0.1", port, timeout=10) as client:
            client.send({"sleep": 0.5, "n": 1})
            time.sleep(0.2)  # the handler is running now
            proc.send_signal(sig)
            assert client.receive() == {"done": 1}
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "exited cleanly" in stdout
    assert "Server stopped" in stderr


async def test_serve_runs_until_request_stop() -> None:
    server = make_server()
    task = asyncio.create_task(server.serve())
    for _ in range(100):
        if server.serving:
            break
        await asyncio.sleep(0.01)
    assert server.serving
    server.request_stop()
    await asyncio.wait_for(task, 5)
    assert not server.serving


async def test_registering_after_serving_started_is_refused() -> None:
    server = make_server()
    async with running(server):
        with pytest.raises(RuntimeError, match="before the server starts"):
            server.register_handler(test_serve_runs_until_request_stop)


def test_public_names_are_exported() -> None:
    for name in asyncapy.__all__:
        assert hasattr(asyncapy, name), name
    from asyncapy import APIKeyFactory, Router, StopPropagation, filters  # noqa: F401
    from asyncapy.client import AsyncClient, Client  # noqa: F401
    from asyncapy.app.filters import Filters

    assert {"Ip", "Fields", "APIFactory"} <= set(dir(Filters))
    assert (Path(asyncapy.__file__).parent / "py.typed").exists()
