"""The same routing cases against a real socket and against the in-memory TestClient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

from asyncapy.client import AsyncClient, Sendable
from asyncapy.testing import AsyncTestClient

from .conftest import running
from .routing_cases import build_server


class Peer(Protocol):
    async def send(self, obj: Sendable, encoding: str | None = None) -> None: ...

    async def send_raw(self, data: bytes) -> None: ...

    async def receive(self) -> dict[str, Any]: ...

    async def request(
        self, obj: Sendable, encoding: str | None = None, *, raise_errors: bool = False
    ) -> dict[str, Any]: ...


class SocketPeer:
    """An ``AsyncClient`` plus a way to write raw bytes on its socket."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def send(self, obj: Sendable, encoding: str | None = None) -> None:
        await self.client.send(obj, encoding)

    async def send_raw(self, data: bytes) -> None:
        await self.client.send_raw(data)

    async def receive(self) -> dict[str, Any]:
        return await self.client.receive()

    async def request(
        self, obj: Sendable, encoding: str | None = None, *, raise_errors: bool = False
    ) -> dict[str, Any]:
        return await self.client.request(obj, encoding, raise_errors=raise_errors)


@pytest.fixture(params=["socket", "memory"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[Peer]:
    server = build_server()
    if request.param == "socket":
        async with running(server):
            async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
                yield SocketPeer(client)
    else:
        async with AsyncTestClient(server) as test_client:
            yield test_client


async def test_echo(peer: Peer) -> None:
    assert await peer.request({"kind": "echo", "n": 1}) == {"kind": "echo", "n": 1}
    assert await peer.request({"kind": "echo", "z": [1, 2]}, "ziproto") == {"kind": "echo", "z": [1, 2]}


async def test_fall_through_to_the_next_handler(peer: Peer) -> None:
    assert await peer.request({"kind": "pick", "x": 3}) == {"picked": "x", "x": 3}
    assert await peer.request({"kind": "pick"}) == {"picked": "any"}


async def test_validation_failure_falls_through(peer: Peer) -> None:
    assert await peer.request({"kind": "order", "qty": 2}) == {"order": 2}
    assert await peer.request({"kind": "order", "qty": 0}, "ziproto") == {"order": "invalid"}


async def test_groups_run_in_order(peer: Peer) -> None:
    await peer.send({"kind": "echo", "tag": 1})
    assert await peer.receive() == {"seen_by": "tag"}
    assert await peer.receive() == {"kind": "echo", "tag": 1}


async def test_stop_propagation_skips_later_groups(peer: Peer) -> None:
    assert await peer.request({"kind": "stop"}) == {"stopped": True}
    assert await peer.request({"kind": "echo"}) == {"kind": "echo"}  # nothing else was queued


async def test_no_handler(peer: Peer) -> None:
    reply = await peer.request({"kind": "nothing"})
    assert reply["status"] == "failure" and reply["error"] == "ERR_NO_HANDLER"
    assert "order" in reply["detail"]  # the reasons name the handlers that declined
    assert await peer.request({"kind": "echo"}) == {"kind": "echo"}


async def test_internal_error_hides_the_traceback(peer: Peer) -> None:
    reply = await peer.request({"kind": "boom"}, "ziproto")
    assert reply["error"] == "ERR_INTERNAL"
    assert "a handler bug" not in str(reply)
    assert await peer.request({"kind": "echo"}) == {"kind": "echo"}


async def test_peer_address_and_session_encoding(peer: Peer) -> None:
    assert await peer.request({"kind": "whoami"}, "ziproto") == {"address": "127.0.0.1", "encoding": "ziproto"}


@pytest.mark.parametrize(
    ("raw", "detail_part"),
    [(b"\x00\x00\x00\x04\x16\x00[]", "must be a map"), (b"\x00\x00\x00\x05\x16\x00{x}", "")],
)
async def test_malformed_payload(peer: Peer, raw: bytes, detail_part: str) -> None:
    await peer.send_raw(raw)
    reply = await peer.receive()
    assert reply["error"] == "ERR_REQUEST_MALFORMED"
    assert detail_part in reply["detail"]
    assert await peer.request({"kind": "echo"}) == {"kind": "echo"}


@pytest.mark.parametrize("raw", [b"\x00\x00\x00\x04\x17\x00{}", b"\x00\x00\x00\x04\x16\x07{}"])
async def test_header_invalid(peer: Peer, raw: bytes) -> None:
    await peer.send_raw(raw)
    assert (await peer.receive())["error"] == "ERR_HEADER_INVALID"
    assert await peer.request({"kind": "echo"}) == {"kind": "echo"}
