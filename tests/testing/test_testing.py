"""TestClient / AsyncTestClient specifics: sync use, calls, hooks, connections."""

from __future__ import annotations

import pytest

from asyncapy import Client, ErrorReply, Packet, Server
from asyncapy.wire.errors import ClientTimeout, ConnectionClosed
from asyncapy.testing import AsyncTestClient, TestClient

from ..conftest import make_server
from ..routing_cases import Order, build_server, echo, pick_any, pick_x


def test_sync_request_and_calls() -> None:
    server = build_server()
    with TestClient(server) as client:
        assert client.request({"kind": "pick", "x": 1}) == {"picked": "x", "x": 1}
        assert client.request({"kind": "pick"}, "ziproto") == {"picked": "any"}
        assert [dict(p) for p in client.calls["pick_x"]] == [{"kind": "pick", "x": 1}]
        assert [p.encoding for p in client.calls_of(pick_any)] == ["ziproto"]
        assert client.calls["boom"] == []
        client.reset_calls()
        assert client.calls_of(pick_x) == []


def test_calls_of_an_unknown_handler() -> None:
    with TestClient(build_server()) as client:
        with pytest.raises(KeyError, match="not a handler"):
            client.calls_of(test_calls_of_an_unknown_handler)  # type: ignore[arg-type]


def test_error_replies_raise_on_request() -> None:
    with TestClient(build_server()) as client:
        with pytest.raises(ErrorReply) as info:
            client.request({"kind": "boom"}, raise_errors=True)
        assert info.value.code == "ERR_INTERNAL"


def test_receive_all_is_the_raw_frame() -> None:
    with TestClient(build_server()) as client:
        client.send({"kind": "echo"})
        payload = b'{"kind":"echo"}'
        assert client.receive_all() == (len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload


async def test_usable_inside_an_async_test() -> None:
    with TestClient(build_server()) as client:
        assert client.request({"kind": "echo"}) == {"kind": "echo"}


async def test_async_client_and_fake_address() -> None:
    async with AsyncTestClient(build_server(), address="10.1.2.3") as client:
        assert await client.request({"kind": "whoami"}) == {"address": "10.1.2.3", "encoding": "json"}
        assert len(client.calls_of(echo)) == 0


async def test_hooks_run_on_enter_and_exit() -> None:
    events: list[str] = []

    class Hooked(Server):
        async def setup(self) -> None:
            events.append("setup")

        async def shutdown(self) -> None:
            events.append("shutdown")

    server = Hooked("127.0.0.1", 0)
    server.register_handler(echo)
    async with AsyncTestClient(server) as client:
        assert events == ["setup"]
        await client.request({"a": 1})
    assert events == ["setup", "shutdown"]


async def test_handler_closing_the_connection_then_reconnect() -> None:
    server = make_server()

    @server.add_handler()
    async def bye(client: Client, packet: Packet) -> None:
        await client.send({"bye": True}, close=True)

    async with AsyncTestClient(server, protocol=2) as client:  # on v2, the next request reconnects
        assert await client.request({}) == {"bye": True}
        assert await client.request({}) == {"bye": True}
    async with AsyncTestClient(server, protocol=1) as client:  # one v1 connection for request and receive
        assert await client.request({}) == {"bye": True}
        with pytest.raises(ConnectionClosed):
            await client.receive()
        await client.close()
        assert await client.request({}) == {"bye": True}  # a new connection


async def test_session_limit_and_payload_too_large() -> None:
    server = build_server(max_packet_size=64)
    async with AsyncTestClient(server, protocol=2) as client:
        reply = await client.request({"kind": "echo", "pad": "x" * 100})
        assert reply["error"] == "ERR_PAYLOAD_TOO_LARGE"
        assert (await client.request({"kind": "echo"}))["kind"] == "echo"  # a new connection
    async with AsyncTestClient(server, protocol=1) as client:  # v1: see the close with receive()
        reply = await client.request({"kind": "echo", "pad": "x" * 100})
        assert reply["error"] == "ERR_PAYLOAD_TOO_LARGE"
        with pytest.raises(ConnectionClosed):
            await client.receive()


async def test_receive_times_out_without_a_reply() -> None:
    server = make_server()

    @server.add_handler()
    async def silent(client: Client, packet: Packet) -> None:
        pass

    async with AsyncTestClient(server, timeout=0.05) as client:
        await client.send({})
        with pytest.raises(ClientTimeout):
            await client.receive()
        assert len(client.calls["test_receive_times_out_without_a_reply.<locals>.silent"]) == 1


async def test_not_entered_is_a_clear_error() -> None:
    client = AsyncTestClient(build_server())
    with pytest.raises(RuntimeError, match="async with"):
        await client.request({})
    sync = TestClient(build_server())
    with pytest.raises(RuntimeError, match="with TestClient"):
        sync.request({})


def test_registration_is_frozen_like_serving() -> None:
    server = build_server()
    with TestClient(server):
        with pytest.raises(RuntimeError, match="before the server starts"):
            server.register_handler(echo)



class Doubler:
    """A handler that is an object with an async ``__call__`` and a typed packet."""

    async def __call__(self, client: Client, packet: Packet[Order]) -> dict[str, int]:
        return {"double": packet.data.qty * 2}


def test_callable_object_handlers_are_recorded_and_typed() -> None:
    server = make_server()
    doubler = Doubler()
    server.register_handler(doubler)
    with TestClient(server) as client:
        assert client.request({"kind": "order", "qty": 4}) == {"double": 8}
        assert client.calls_of(doubler)[0].data == Order(kind="order", qty=4)
        reply = client.request({"kind": "order", "qty": -1})
        assert reply["error"] == "ERR_NO_HANDLER"


def test_dead_route_warnings_are_not_repeated(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    server.register_handler(echo)
    server.register_handler(pick_any)  # never reached: echo takes every packet
    with caplog.at_level("WARNING", logger="asyncapy"):
        with TestClient(server):
            pass
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "pick_any" in warnings[0].getMessage()
