"""Aliases are the wire names (DESIGN §10): replies, sends, both clients, schema, AsyncAPI, docs page.

Over real sockets: a server on a loopback port, ``AsyncClient`` in the test's loop and
the blocking ``Client`` in a thread. The property test builds random models with
aliases (nested ones too) and round-trips random instances through all of it.
"""

from __future__ import annotations

import asyncio
import keyword
from typing import Any, Literal, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, create_model

from asyncapy import Client, Packet, Server
from asyncapy.model.aliases import has_aliases
from asyncapy.client import AsyncClient
from asyncapy.client import Client as SyncClient
from asyncapy.docs.docspage import render
from asyncapy.model.peer import REPLY_ENCODERS, reply_encoder

from .conftest import make_server, running


class Address(BaseModel):
    street_name: str = Field(alias="streetName")


class User(BaseModel):
    user_id: int = Field(alias="userId")
    home: Address
    nick: str = "anon"


class Plain(BaseModel):
    user_id: int


def user_server() -> Server:
    server = make_server()

    @server.add_handler(group=-1)
    async def sender(client: Client, packet: Packet[User]) -> None:
        if packet.get("as") == "send":  # client.send(model), not a returned reply
            await client.send(packet.data)
            packet.stop_propagation()

    @server.add_handler()
    async def model_reply(client: Client, packet: Packet[User]) -> User:
        if packet.get("as") == "dict":
            return packet.data.model_dump(by_alias=True)  # type: ignore[return-value]  # validated into User
        return packet.data

    return server


WIRE = {"userId": 2, "home": {"streetName": "Elm"}, "nick": "anon"}


@pytest.mark.parametrize("how", ["model", "dict", "send"])
@pytest.mark.parametrize("encoding", ["json", "ziproto"])
async def test_replies_and_requests_use_the_aliases(how: str, encoding: str) -> None:
    user = User(userId=2, home=Address(streetName="Elm"))
    async with running(user_server()) as server, AsyncClient("127.0.0.1", server.port, timeout=5, encoding=encoding) as client:
        sent = await client.request(user) if how == "model" else await client.request({**WIRE, "as": how})
        typed = await client.request(user, reply=User)
    assert sent == WIRE  # the wire names both ways, nested model included
    assert typed == user


async def test_the_blocking_client_sends_and_reads_aliases() -> None:
    user = User(userId=7, home=Address(streetName="Oak"), nick="ada")

    def ask(port: int) -> tuple[dict[str, Any], User]:
        with SyncClient("127.0.0.1", port, timeout=5) as client:
            return client.request(user), client.request(user, reply=User)

    async with running(user_server()) as server:
        raw, typed = await asyncio.to_thread(ask, server.port)
    assert raw == {"userId": 7, "home": {"streetName": "Oak"}, "nick": "ada"}
    assert typed == user


def test_a_model_without_aliases_keeps_the_plain_serializer() -> None:
    """Decided once per model: no alias, no ``by_alias`` (nothing added to the hot path)."""
    assert not has_aliases(Plain) and has_aliases(User) and has_aliases(Address)
    assert reply_encoder(Plain, "json") == Plain.__pydantic_serializer__.to_json
    assert REPLY_ENCODERS["json"][Plain] == Plain.__pydantic_serializer__.to_json
    encode = reply_encoder(User, "json")
    assert encode is not None
    assert encode(User(userId=1, home=Address(streetName="x"))) == (
        b'{"userId":1,"home":{"streetName":"x"},"nick":"anon"}'
    )


def test_schema_asyncapi_and_docs_page_show_the_aliases() -> None:
    server = user_server()
    schema = server.schema()
    assert schema["$defs"]["User"]["required"] == ["userId", "home"]
    assert set(schema["$defs"]["Address"]["properties"]) == {"streetName"}
    doc = server.asyncapi()
    user_schema = doc["components"]["schemas"]["User"]
    assert set(user_schema["properties"]) == {"userId", "home", "nick"}
    page = render(doc)
    assert "<code>userId</code>" in page and "<code>streetName</code>" in page
    assert "user_id" not in page and "street_name" not in page
    assert "&quot;userId&quot;: 0" in page  # the example packet uses the wire names too


class Ping(BaseModel):
    packet_kind: Literal["ping"] = Field(alias="packetKind")


class Pong(BaseModel):
    packet_kind: Literal["pong"] = Field(default="pong", alias="packetKind")


async def test_a_tag_under_an_alias_still_indexes_the_route() -> None:
    server = make_server()

    @server.add_handler()
    async def ping(client: Client, packet: Ping) -> Pong:
        return Pong()

    assert server.compile().groups[0].key == "packetKind"
    async with running(server), AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        assert await client.request(Ping(packetKind="ping")) == {"packetKind": "pong"}


# -- the property: random models with aliases, both clients, both encodings ------------------------

NAMES = st.from_regex(r"[a-z]{1,6}(_[a-z]{1,4})?", fullmatch=True).filter(lambda n: not keyword.iskeyword(n))
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
SCALARS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "int": (int, st.integers(-(2**63), 2**63 - 1)),
    "str": (str, TEXT),
    "bool": (bool, st.booleans()),
    "float": (float, st.floats(allow_nan=False, allow_infinity=False)),
    "list": (list[int], st.lists(st.integers(-1000, 1000), max_size=3)),
    "optional": (Optional[str], st.none() | TEXT),  # noqa: UP007 - pydantic on 3.9-style too
}


@st.composite
def aliased_models(draw: st.DrawFn, depth: int = 0) -> tuple[type[BaseModel], st.SearchStrategy[Any]]:
    """A model whose fields have aliases (some, or all), possibly holding a nested such model."""
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    fields: dict[str, Any] = {}
    values: dict[str, st.SearchStrategy[Any]] = {}
    aliases: set[str] = set()
    for index, name in enumerate(names):
        alias = draw(st.none() | st.just(_camel(name) + f"X{index}"))
        if alias is not None:
            aliases.add(alias)
        if depth == 0 and draw(st.booleans()) and index == len(names) - 1:
            inner, inner_values = draw(aliased_models(depth=1))
            kind, strategy = inner, inner_values
        else:
            kind, strategy = SCALARS[draw(st.sampled_from(sorted(SCALARS)))]
        fields[name] = (kind, Field(alias=alias) if alias is not None else ...)
        values[alias or name] = strategy
    if not aliases:  # at least one alias in every model under test
        first = names[0]
        kind = fields[first][0]
        fields[first] = (kind, Field(alias=_camel(first) + "Y"))
        values[_camel(first) + "Y"] = values.pop(first)
    config = ConfigDict(populate_by_name=draw(st.booleans()))
    model = create_model(f"M{depth}_{'_'.join(names)}", __config__=config, **fields)
    return model, st.fixed_dictionaries(values).map(lambda wire: model.model_validate(wire))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _wire_keys(value: Any) -> Any:
    """The key structure of a reply map (values dropped: floats compare by the model)."""
    if isinstance(value, dict):
        return {key: _wire_keys(item) for key, item in value.items()}
    return None


def _expected_keys(instance: BaseModel) -> Any:
    return _wire_keys(instance.model_dump(mode="json", by_alias=True))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_random_models_with_aliases_round_trip_through_both_clients(data: st.DataObject) -> None:
    model, instances = data.draw(aliased_models())
    values = data.draw(st.lists(instances, min_size=1, max_size=3))
    encoding = data.draw(st.sampled_from(["json", "ziproto"]))
    server = make_server()

    async def echo(client: Client, packet: Packet[Any]) -> Any:
        return packet.data

    echo.__annotations__ = {"client": Client, "packet": Packet[model], "return": model}  # type: ignore[valid-type]
    server.register_handler(echo)

    def blocking(port: int) -> list[tuple[Any, Any]]:
        with SyncClient("127.0.0.1", port, timeout=5, encoding=encoding) as client:
            return [(client.request(value), client.request(value, reply=model)) for value in values]

    async def main() -> None:
        async with running(server), AsyncClient("127.0.0.1", server.port, timeout=5, encoding=encoding) as client:
            for value in values:
                raw = await client.request(value)
                assert _wire_keys(raw) == _expected_keys(value), raw
                assert model.model_validate(raw) == value
                assert await client.request(value, reply=model) == value
            for (raw, typed), value in zip(await asyncio.to_thread(blocking, server.port), values):
                assert _wire_keys(raw) == _expected_keys(value)
                assert typed == value

    asyncio.run(main())

