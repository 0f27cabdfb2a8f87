"""``Server(health=True)``, its drain on a graceful stop, and ``asyncapy probe``: real sockets and processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import CallNext, Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.filters import Ip, RateLimit
from asyncapy.serve.health import HEALTH_PACKET, health_frame
from asyncapy.app.routing import Plan
from asyncapy.testing import TestClient

from .conftest import make_server, running
from .procs import ROOT, free_port, wait_for_port

SERVING = {"status": "SERVING"}
NOT_SERVING = {"status": "NOT_SERVING"}


class Order(BaseModel):
    item: str


def guarded_server(seen: list[Any], **options: Any) -> Server:
    """Everything that could stand in the probe's way: a rate limit, a middleware that refuses, a filter."""
    server = make_server(health=True, rate_limit=RateLimit("2/minute"), **options)

    @server.middleware
    async def closed(client: Client, packet: Packet, call_next: CallNext) -> None:
        await client.send({"status": "failure", "error": "ERR_CLOSED"})

    @server.add_handler(Ip("192.0.2.1"))
    async def anything(client: Client, packet: Packet) -> None:
        seen.append(dict(packet))

    return server


@pytest.mark.parametrize("encoding", ["json", "ziproto"])
async def test_the_probe_is_answered_before_limits_middleware_filters_and_routing(encoding: str) -> None:
    seen: list[Any] = []
    async with running(guarded_server(seen)) as server, AsyncClient("127.0.0.1", server.port, timeout=5, encoding=encoding) as client:
        probes = [await client.request(HEALTH_PACKET) for _ in range(5)]  # more than the rate limit allows
        others = [await client.request({"item": "tea"}) for _ in range(3)]
    assert probes == [SERVING] * 5
    assert [reply["error"] for reply in others] == ["ERR_CLOSED", "ERR_CLOSED", "ERR_RATE_LIMITED"]
    assert seen == []  # no handler ever sees the probe


async def test_the_probe_on_the_direct_path_and_its_bytes() -> None:
    """A simple plan (handlers called straight from the connection) answers it too, with the frame HAProxy expects."""
    server = make_server(health=True)

    @server.add_handler()
    async def order(client: Client, packet: Packet[Order]) -> Order:
        return packet.data

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(health_frame() + health_frame())  # pipelined, as a balancer might
        expected = health_frame("SERVING")
        assert await reader.readexactly(2 * len(expected)) == expected * 2
        writer.close()
        async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
            assert await client.request({"item": "tea"}) == {"item": "tea"}


def test_without_health_the_packet_is_an_ordinary_one_and_nothing_is_added() -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, Any]:
        return {"echo": dict(packet)}

    with TestClient(server) as client:
        assert client.request(HEALTH_PACKET) == {"echo": HEALTH_PACKET}
    assert "health" not in server._serving_context(server.compile()).pipeline.layers  # no layer in the way
    healthy = make_server(health=True)
    healthy.register_handler(echo)
    assert healthy._serving_context(healthy.compile()).pipeline.layers[1] == "health"  # the outermost packet layer
    with TestClient(healthy) as client:
        assert client.request(HEALTH_PACKET) == SERVING


def test_drain_needs_health() -> None:
    with pytest.raises(ValueError, match="needs health=True"):
        Server(drain=1.0)
    with pytest.raises(ValueError, match="drain must be 0 or positive"):
        Server(health=True, drain=-1)


async def test_not_serving_from_the_start_of_a_graceful_stop_while_it_still_serves() -> None:
    server = make_server(health=True, drain=1.0)

    @server.add_handler()
    async def order(client: Client, packet: Packet[Order]) -> dict[str, str]:
        return {"ordered": packet.data.item}

    await server.start_serving()
    port = server.port
    async with AsyncClient("127.0.0.1", port, timeout=5) as client:
        assert await client.request(HEALTH_PACKET) == SERVING
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.sleep(0.1)
        assert await client.request(HEALTH_PACKET) == NOT_SERVING  # the open connection hears it
    async with AsyncClient("127.0.0.1", port, timeout=5) as late:  # new connections are still accepted...
        assert await late.request(HEALTH_PACKET) == NOT_SERVING
        assert await late.request({"item": "tea"}) == {"ordered": "tea"}  # ...and served
    await asyncio.wait_for(stopping, 10)
    with pytest.raises(OSError):  # after the drain, the port is closed
        await asyncio.open_connection("127.0.0.1", port)


# -- asyncapy probe -----------------------------------------------------------------------------------

APP = """
from pydantic import BaseModel
from asyncapy import Client, Packet, Server
server = Server("127.0.0.1", {port}, health={health}, drain={drain})

class Order(BaseModel):
    item: str

@server.add_handler()
async def order(client: Client, packet: Packet[Order]) -> dict:
    return {{"ordered": packet.data.item}}
"""


def probe(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncapy", "probe", f"127.0.0.1:{port}", "--timeout", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def serve(tmp_path: Path, name: str, port: int, health: bool, drain: float, *options: str) -> subprocess.Popen[str]:
    (tmp_path / f"{name}.py").write_text(APP.format(port=port, health=health, drain=drain))
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncapy", "run", f"{name}:server", *options], cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    wait_for_port(port, proc)
    return proc


def test_probe_exits_0_when_serving_and_1_otherwise(tmp_path: Path) -> None:
    healthy_port, plain_port = free_port(), free_port()
    healthy = serve(tmp_path, "healthy", healthy_port, True, 3.0)
    plain = serve(tmp_path, "plain", plain_port, False, 0.0)
    try:
        ok = probe(healthy_port)
        assert (ok.returncode, ok.stdout) == (0, "SERVING\n")
        no_health = probe(plain_port)
        assert no_health.returncode == 1 and "ERR_NO_HANDLER" in no_health.stdout
        assert "health=True" in no_health.stderr
        healthy.terminate()  # a graceful stop: drains 3 s, probes say NOT_SERVING
        deadline = time.monotonic() + 2.5
        draining = probe(healthy_port)
        while draining.returncode == 0 and time.monotonic() < deadline:
            draining = probe(healthy_port)
        assert (draining.returncode, draining.stdout) == (1, "NOT_SERVING\n")
        assert healthy.wait(timeout=20) == 0
        gone = probe(healthy_port)
        assert gone.returncode == 1 and "connection refused" in gone.stderr
    finally:
        for proc in (healthy, plain):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_run_health_and_drain_options(tmp_path: Path) -> None:
    port = free_port()
    proc = serve(tmp_path, "plain", port, False, 0.0, "--health", "--drain", "2")
    try:
        assert probe(port).returncode == 0
        proc.terminate()
        time.sleep(0.5)
        assert probe(port).stdout == "NOT_SERVING\n"  # draining: still accepting
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert "Draining: health probes answer NOT_SERVING; closing the port in 2.0 s" in err
