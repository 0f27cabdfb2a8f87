"""Routing over real sockets: fall-through, groups, propagation, misses, errors, replies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from asyncapy import APIKeyFactory, Client, Packet, StopPropagation
from asyncapy.client import AsyncClient
from asyncapy.app.filters import ApiKey, Fields

from ..conftest import make_server, running


class Add(BaseModel):
    kind: Literal["add"]
    a: int
    b: int


class Concat(BaseModel):
    kind: Literal["add"]
    a: str
    b: str


class Sum(BaseModel):
    total: int


class Halt(BaseModel):
    kind: Literal["halt", "raise"]


async def test_validation_failure_falls_through_and_typed_reply_is_sent() -> None:
    server = make_server()

    @server.add_handler()
    async def add(client: Client, packet: Packet[Add]) -> Sum:
        return Sum(total=packet.data.a + packet.data.b)

    @server.add_handler()
    async def concat(client: Client, packet: Concat) -> dict[str, Any]:
        return {"joined": packet.a + packet.b}

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"kind": "add", "a": 1, "b": 2}) == {"total": 3}
            assert await client.request({"kind": "add", "a": "x", "b": "y"}) == {"joined": "xy"}
            assert await client.request({"kind": "add", "a": 4, "b": 5}, "ziproto") == {"total": 9}
            assert await client.request({"kind": "add", "a": "z", "b": "q"}, "ziproto") == {"joined": "zq"}


async def test_groups_run_in_ascending_order() -> None:
    server = make_server()
    for group in (1, -1, 0):
        server.register_handler(_reply_group(group), group=group)
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            await client.send({"n": 1})
            assert [await client.receive() for _ in range(3)] == [{"group": -1}, {"group": 0}, {"group": 1}]


async def test_stop_propagation_in_both_forms() -> None:
    server = make_server()

    @server.add_handler()
    async def halt(client: Client, packet: Packet[Halt]) -> None:
        await client.send({"stopped_by": packet.data.kind})
        if packet.data.kind == "raise":
            raise StopPropagation
        packet.stop_propagation()

    server.register_handler(_reply_group(1), group=1)
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            for payload in ({"kind": "halt"}, {"kind": "raise"}, {"kind": "other"}):
                await client.send(payload)
            replies = [await client.receive() for _ in range(3)]
    assert replies == [{"stopped_by": "halt"}, {"stopped_by": "raise"}, {"group": 1}]


async def test_no_handler_says_why_without_echoing_secrets() -> None:
    server = make_server()
    keys = APIKeyFactory()
    key = keys.create()

    @server.add_handler(ApiKey(keys))
    async def add(client: Client, packet: Packet[Add]) -> Sum:
        return Sum(total=0)

    @server.add_handler(Fields(ping=None))
    async def ping(client: Client, packet: Packet) -> None: ...

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            bad_key = {"kind": "add", "a": 1, "b": 2, "api_key": "hunter2-not-a-key"}
            reply = await client.request(bad_key)
            assert reply["error"] == "ERR_NO_HANDLER"
            assert "add" in reply["detail"] and "API key in field 'api_key'" in reply["detail"]
            assert "ping" in reply["detail"] and "exactly the fields ping" in reply["detail"]
            assert "hunter2" not in reply["detail"]
            assert reply["detail"] == (await server.explain(bad_key)).text

            invalid = {"kind": "add", "a": "secret-value", "b": 2, "api_key": key}
            reply = await client.request(invalid, "ziproto")
            assert reply["error"] == "ERR_NO_HANDLER"
            assert "invalid: a: Input should be a valid integer" in reply["detail"]
            assert key not in reply["detail"] and "secret-value" not in reply["detail"]
            assert await client.request({"kind": "add", "a": 1, "b": 2, "api_key": key}) == {"total": 0}


async def test_handler_error_is_err_internal_and_connection_stays() -> None:
    server = make_server()

    @server.add_handler()
    async def boom(client: Client, packet: Packet[Add]) -> None:
        raise ValueError("a bug")

    @server.add_handler()
    async def fine(client: Client, packet: Packet) -> dict[str, Any]:
        return {"ok": True}

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            reply = await client.request({"kind": "add", "a": 1, "b": 2})
            assert reply["error"] == "ERR_INTERNAL" and "a bug" not in str(reply)
            assert await client.request({"other": 1}) == {"ok": True}


async def test_explain_reports_each_route() -> None:
    server = make_server()

    @server.add_handler(Fields(kind=None, a=None, b=None))
    async def add(client: Client, packet: Packet[Add]) -> None: ...

    @server.add_handler()
    async def concat(client: Client, packet: Packet[Concat]) -> None: ...

    @server.add_handler(group=2)
    async def halt(client: Client, packet: Halt) -> None: ...

    account = await server.explain({"kind": "add", "a": "x", "b": "y"})
    assert [(o.name, o.outcome) for o in account.outcomes] == [
        ("test_explain_reports_each_route.<locals>.add", "invalid"),
        ("test_explain_reports_each_route.<locals>.concat", "matched"),
        ("test_explain_reports_each_route.<locals>.halt", "not-candidate"),  # its kind tag differs
    ]
    assert not account.miss and account.text.startswith("would run:")
    miss = await server.explain({"kind": "nope"})
    assert miss.miss and "no handler takes this 'kind'" in miss.text


def _reply_group(group: int) -> Any:
    async def reply(client: Client, packet: Packet) -> dict[str, Any]:
        return {"group": group}

    reply.__qualname__ = f"group_{group}"
    return reply


class Profile(BaseModel):
    name: str
    age: int
    email: str
    city: str
    zip: int


async def test_miss_detail_is_short() -> None:
    server = make_server()

    @server.add_handler()
    async def profile(client: Client, packet: Packet[Profile]) -> None: ...

    account = await server.explain({"name": 1, "age": "old", "password": "pa55word"})
    assert account.miss
    assert account.text.count(":") <= 5 and "(+2 more)" in account.text
    assert "pa55word" not in account.text and "old" not in account.text


class Sized(BaseModel):
    size: int


async def test_a_miss_lists_its_groups_in_ascending_order() -> None:
    """Group 0's reasons come before group 1's, the group's tag note included."""
    server = make_server()

    @server.add_handler(group=1)
    async def add(client: Client, packet: Packet[Add]) -> None: ...

    @server.add_handler(group=1)
    async def halt(client: Client, packet: Packet[Halt]) -> None: ...

    @server.add_handler(group=0)
    async def sized(client: Client, packet: Packet[Sized]) -> None: ...

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            reply = await client.request({"kind": "nope", "size": "big"})
    assert reply["error"] == "ERR_NO_HANDLER"
    lines = reply["detail"].split("; ")
    assert [line.split(":")[0].split("(group ")[-1].rstrip(")") for line in lines] == ["0", "group 1"], lines
    assert lines[0].startswith("test_a_miss_lists_its_groups_in_ascending_order.<locals>.sized (group 0)")
    assert lines[1] == "group 1: no handler takes this 'kind' (known: 'add', 'halt', 'raise')"
    assert [entry["group"] for entry in reply["errors"]] == [0]


async def test_a_packet_without_the_tag_is_told_the_field_is_missing() -> None:
    server = make_server()

    @server.add_handler()
    async def add(client: Client, packet: Packet[Add]) -> None: ...

    @server.add_handler()
    async def halt(client: Client, packet: Packet[Halt]) -> None: ...

    miss = await server.explain({"a": 1, "b": 2})
    assert miss.miss and miss.text == "group 0: the packet has no 'kind' field (its handlers take 'add', 'halt', 'raise')"
