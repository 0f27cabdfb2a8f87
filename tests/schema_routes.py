"""Routes shaped like the compiled router's (the contract ``asyncapy.docs.schema`` reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from asyncapy import Client


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool = True


class Owner(BaseModel):
    name: str
    pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]


class Ack(BaseModel):
    ok: bool


Pet = Annotated[Union[Cat, Dog], Field(discriminator="kind")]


class NameFilter:
    """Like ``Fields(name=r"[a-z]+")``: describable, and expressible as JSON Schema."""

    def check(self, client: Client, packet: Any) -> bool:
        return True

    def describe(self) -> str:
        return "Fields(name='[a-z]+')"

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {"name": {"pattern": "[a-z]+"}}, "required": ["name"]}


class OpaqueFilter:
    def check(self, client: Client, packet: Any) -> bool:
        return True

    def describe(self) -> str:
        return "Ip('10.0.0.0/8')"

    def json_schema(self) -> None:
        return None


async def adopt(client: Client, packet: Any) -> Ack:
    """Adopt a pet."""
    return Ack(ok=True)


async def feed(client: Client, packet: Any) -> None:
    return None


async def anything(client: Client, packet: Any) -> None:
    return None


@dataclass(frozen=True)
class FakeRoute:
    name: str
    group: int
    handler: Any
    filters: tuple[Any, ...] = ()
    models: tuple[type[BaseModel], ...] = ()
    accepts: Any = None
    reply_type: Any = None
    style: str = "untyped"
    extra: dict[str, Any] = field(default_factory=dict)


ROUTES = (
    FakeRoute("adopt", -1, adopt, (NameFilter(),), (Owner,), Owner, Ack, "packet"),
    FakeRoute("feed", 0, feed, (OpaqueFilter(),), (Cat, Dog), Pet, None, "model"),
    FakeRoute("anything", 0, anything),
)
