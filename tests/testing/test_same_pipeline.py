"""The test clients take the production path: the same pipeline, eager stepping and observation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel

from asyncapy import ApiError, Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.serve.connection import Connection
from asyncapy.testing import AsyncTestClient, TestClient

from ..conftest import make_server, running


class Item(BaseModel):
    item: int


def shop(**kwargs: object) -> Server:
    server = make_server(**kwargs)

    @server.add_handler(errors=["ERR_GONE"])
    async def buy(client: Client, packet: Packet[Item]) -> dict[str, int]:
        if packet.data.item < 0:
            raise ApiError("ERR_GONE", "sold out")
        return {"bought": packet.data.item}

    @server.middleware
    async def passthrough(client: Client, packet: Packet, call_next: object) -> None:
        await call_next()  # type: ignore[operator]

    return server


async def test_the_test_client_builds_the_served_pipeline(tmp_path: Path) -> None:
    served = shop(access_log=str(tmp_path / "served.log"))
    tested = shop(access_log=str(tmp_path / "tested.log"))
    async with running(served):
        assert served._ctx is not None
        served_layers = served._ctx.pipeline.layers
        async with AsyncClient("127.0.0.1", served.port) as client:
            assert await client.request({"item": 1}) == {"bought": 1}
            assert (await client.request({"item": -1}))["error"] == "ERR_GONE"
    async with AsyncTestClient(tested) as client:
        assert client._ctx is not None
        assert client._ctx.pipeline.layers == served_layers
        assert "observation" in served_layers and "middleware (1)" in served_layers
        assert await client.request({"item": 1}) == {"bought": 1}
        assert (await client.request({"item": -1}))["error"] == "ERR_GONE"
    # observed alike: one access-log line per packet, the same outcomes
    outcomes = [[line.split()[-2] for line in (tmp_path / name).read_text().splitlines()] for name in ("served.log", "tested.log")]
    assert outcomes[0] == outcomes[1] == ["OK", "ERR_GONE"]


def test_the_blocking_test_client_is_observed(tmp_path: Path) -> None:
    server = shop(access_log=str(tmp_path / "a.log"))
    with TestClient(server) as client:
        assert client.request({"item": 2}) == {"bought": 2}
    assert (tmp_path / "a.log").read_text().split()[-2] == "OK"


async def test_handlers_are_stepped_eagerly_in_the_test_client() -> None:
    """A handler that does not wait runs within the read that brought its packet, in a host
    task's name, and leaves its connection holding no task: as on a socket."""
    server = make_server()
    seen: list[asyncio.Task[object] | None] = []

    @server.add_handler()
    async def where(client: Client, packet: Packet) -> dict[str, bool]:
        seen.append(asyncio.current_task())
        return {"ok": True}

    async with AsyncTestClient(server, protocol=1) as client:  # the v1 Connection's stepping
        assert await client.request({}) == {"ok": True}
        conn = client.connection
        assert isinstance(conn, Connection)
        assert conn._host is None  # the burst borrowed the run's spare host: eager, never handed over
        assert client._ctx is not None and client._ctx.spare is not None
        assert seen == [client._ctx.spare.task]
