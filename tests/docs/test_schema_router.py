"""``server.schema()`` against the compiled router: typed handlers, filters, shared defs."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from asyncapy import Client, Packet
from asyncapy.app.filters import ApiKey, Fields, Ip

from ..conftest import make_server


class Login(BaseModel):
    kind: Literal["login"]
    user: str


class Logout(BaseModel):
    kind: Literal["logout"]


class Welcome(BaseModel):
    greeting: str


Session = Annotated[Union[Login, Logout], Field(discriminator="kind")]


def build() -> Any:
    server = make_server()

    @server.add_handler(Ip("127.0.0.1"), group=-1)
    async def audit(client: Client, packet: Packet) -> None:
        return None

    @server.add_handler(ApiKey(["k1"]))
    async def login(client: Client, packet: Packet[Login]) -> Welcome:
        return Welcome(greeting=packet.data.user)

    @server.add_handler()
    async def session(client: Client, event: Session) -> dict[str, Any]:
        return {}

    @server.add_handler(Fields(user=r"\w+", token=None))
    async def legacy(client: Client, packet: Packet) -> None:
        return None

    return server


def test_routes_in_dispatch_order() -> None:
    routes = build().schema()["routes"]
    assert [(r["group"], r["handler"], r["style"]) for r in routes] == [
        (-1, "build.<locals>.audit", "untyped"),
        (0, "build.<locals>.login", "packet"),
        (0, "build.<locals>.session", "model"),
        (0, "build.<locals>.legacy", "untyped"),
    ]


def test_accepted_packets_and_replies_share_defs() -> None:
    doc = build().schema()
    audit, login, session, legacy = doc["routes"]
    assert set(doc["$defs"]) == {"Login", "Logout", "Welcome"}
    assert login["accepts"]["allOf"][0] == {"$ref": "#/$defs/Login"}
    assert login["accepts"]["allOf"][1]["required"] == ["api_key"]
    assert login["reply"] == {"$ref": "#/$defs/Welcome"}
    assert session["accepts"]["oneOf"] == [{"$ref": "#/$defs/Login"}, {"$ref": "#/$defs/Logout"}]
    assert session["accepts"]["discriminator"]["propertyName"] == "kind"
    assert session["reply"]["type"] == "object"
    assert audit["accepts"] == {"type": "object"} and audit["reply"] is None


def test_filters_in_words_and_as_json_schema() -> None:
    audit, login, _, legacy = build().schema()["routes"]
    assert audit["filters"] == [{"description": "client address in 127.0.0.1/32", "schema": None}]
    assert login["filters"][0]["description"] == "a valid API key in field 'api_key'"
    fields = legacy["filters"][0]["schema"]
    assert fields["properties"]["user"]["pattern"] == r"^(?:\w+)$"
    assert fields["additionalProperties"] is False
    assert legacy["accepts"] == fields
