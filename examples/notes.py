"""The tutorial's service (docs/tutorial.md): notes stored under keys.

Serve it with ``.venv/bin/asyncapy run examples.notes:server`` and call it with
``.venv/bin/asyncapy send 127.0.0.1:1500 '{"kind": "get", "key": "tea"}'``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from asyncapy import APIKeyFactory, ApiError, Client, Depends, Packet, Server
from asyncapy.filters import ApiKey

Key = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,40}$")]


class Store:
    """Where the notes live: a dict here, a database client in a real service."""

    def __init__(self) -> None:
        self.notes: dict[str, str] = {}


@asynccontextmanager
async def lifespan(server: Server) -> AsyncIterator[None]:
    server.state.store = Store()  # opened before the first connection
    yield
    server.state.store.notes.clear()  # closed after the last one


server = Server("127.0.0.1", 1500, lifespan=lifespan)
writers = APIKeyFactory(["key-for-the-tutorial"])


def store() -> Store:
    """The dependency handlers declare to reach the store."""
    found: Store = server.state.store
    return found


class Put(BaseModel):
    kind: Literal["put"]
    key: Key
    text: str = Field(max_length=1000)


class Get(BaseModel):
    kind: Literal["get"]
    key: Key


class ListKeys(BaseModel):
    kind: Literal["list"]


class Stored(BaseModel):
    kind: Literal["stored"] = "stored"
    key: str


class Note(BaseModel):
    kind: Literal["note"] = "note"
    key: str
    text: str


class Keys(BaseModel):
    kind: Literal["keys"] = "keys"
    keys: list[str]


@server.add_handler(ApiKey(writers))
async def put(client: Client, packet: Packet[Put], notes: Store = Depends(store)) -> Stored:
    """Store a note under a key (writing needs an API key)."""
    notes.notes[packet.data.key] = packet.data.text
    return Stored(key=packet.data.key)


@server.add_handler(errors=["ERR_NOT_FOUND"])
async def get(client: Client, packet: Packet[Get], notes: Store = Depends(store)) -> Note:
    """The note stored under a key."""
    text = notes.notes.get(packet.data.key)
    if text is None:
        raise ApiError("ERR_NOT_FOUND", f"no note {packet.data.key!r}")
    return Note(key=packet.data.key, text=text)


@server.add_handler()
async def list_keys(client: Client, packet: Packet[ListKeys], notes: Store = Depends(store)) -> Keys:
    """Every key, sorted."""
    return Keys(keys=sorted(notes.notes))


if __name__ == "__main__":
    server.start()
