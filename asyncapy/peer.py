"""The remote peer as handlers see it: ``Client`` and its ``Session``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from .codecs import get_codec
from .packet import Packet

if TYPE_CHECKING:
    from .sessions import SessionRegistry


class _Link(Protocol):
    """What a ``Client`` needs from the connection under it."""

    def write_payload(self, payload: bytes, encoding: int) -> None: ...

    def close(self) -> None: ...

    @property
    def closing(self) -> bool: ...

    def drain(self) -> Awaitable[None]: ...


class Session:
    """One connection's identity: a UUID, the peer's address and when it started."""

    __slots__ = ("_id", "address", "port", "started_at")

    def __init__(self, address: str, port: int) -> None:
        self._id: uuid.UUID | None = None
        self.address = address
        self.port = port
        self.started_at = time.time()

    @property
    def id(self) -> uuid.UUID:
        """The session's UUID, made on first use (most sessions never need one)."""
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    def __repr__(self) -> str:
        return f"Session({self.id}, {self.address}:{self.port})"


class Client:
    """The peer of one connection, passed to every handler.

    Attributes:
        address: the peer's IP address (a string, IPv4 or IPv6).
        port: the peer's port.
        session: this connection's ``Session``.
        encoding: the session's encoding name, set by its first packet ("json" or
            "ziproto"); replies use it unless a handler asks for another.
    """

    __slots__ = ("address", "port", "session", "encoding", "_link", "_registry")

    def __init__(
        self,
        address: str,
        port: int,
        session: Session,
        link: _Link,
        registry: SessionRegistry | None = None,
        encoding: str = "json",
    ) -> None:
        self.address = address
        self.port = port
        self.session = session
        self.encoding = encoding
        self._link = link
        self._registry = registry

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing; sends are then ignored."""
        return self._link.closing

    async def send(
        self,
        packet: Packet[Any] | Mapping[str, Any] | BaseModel,
        close: bool = False,
        *,
        encoding: str | None = None,
    ) -> None:
        """Send ``packet`` to the peer; with ``close=True`` close the connection after it.

        A received ``Packet`` sent back in its own encoding re-sends its original
        payload bytes. Sending on a closed connection does nothing.
        """
        self.send_nowait(packet, encoding=encoding)
        if close:
            self._link.close()
        else:
            await self._link.drain()

    def send_nowait(
        self,
        packet: Packet[Any] | Mapping[str, Any] | BaseModel,
        *,
        encoding: str | None = None,
    ) -> None:
        """Queue ``packet`` for sending without waiting for the socket buffer to drain."""
        if self._link.closing:
            return
        if encoding is None and type(packet) is Packet and packet.raw is not None:
            # Echoing a received packet: its own bytes, no codec lookup, no encoding.
            self._link.write_payload(packet.raw, get_codec(packet.encoding).id)
            return
        name = encoding or (packet.encoding if isinstance(packet, Packet) and packet.raw is not None else self.encoding)
        codec = get_codec(name)
        self._link.write_payload(encode_payload(packet, codec.name), codec.id)

    async def close(self) -> None:
        """Close the connection once what was sent has been written."""
        self._link.close()

    def get_sessions(self) -> list[Session]:
        """Every open session from this client's IP address (this one included)."""
        if self._registry is None:
            return [self.session]
        return self._registry.sessions_of(self.address)

    def __repr__(self) -> str:
        return f"Client({self.address})"


def encode_payload(packet: Packet[Any] | Mapping[str, Any] | BaseModel, encoding: str) -> bytes:
    """The payload bytes of ``packet`` in ``encoding`` (a received packet's own bytes if they fit)."""
    codec = get_codec(encoding)
    if isinstance(packet, Packet):
        if packet.raw is not None and packet.encoding == encoding:
            return packet.raw
        return codec.encode(_plain(packet.payload))
    if isinstance(packet, BaseModel):
        if encoding == "json":
            return packet.__pydantic_serializer__.to_json(packet)
        return codec.encode(packet.model_dump(mode="json"))
    if isinstance(packet, Mapping):
        return codec.encode(packet if isinstance(packet, dict) else dict(packet))
    raise TypeError(f"cannot send a {type(packet).__name__}: send a dict, a pydantic model or a Packet")


def _plain(payload: Mapping[str, Any]) -> Any:
    return payload if isinstance(payload, dict) else dict(payload)
