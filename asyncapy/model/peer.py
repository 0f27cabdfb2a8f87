"""The remote peer as handlers see it: ``Client`` and its ``Session``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping
from functools import partial
from typing import Any, Final, Protocol

from pydantic import BaseModel

from .aliases import dump_for_wire, json_encoder
from ..wire.codecs import CODEC_IDS, finite_json, get_codec
from .packet import Packet


class _Sessions(Protocol):
    """What a ``Client`` needs from the ``SessionRegistry`` (``sessions.py``, which imports this module)."""

    def sessions_of(self, address: str) -> list[Session]: ...


class _Link(Protocol):
    """What a ``Client`` needs from the connection under it."""

    def write_payload(self, payload: bytes, encoding: int) -> None: ...

    def close(self) -> None: ...

    @property
    def closing(self) -> bool: ...

    def drain(self) -> Awaitable[None]: ...


class _Done:
    """An awaitable that is done at once (a closed link's ``drain``)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


class _ClosedLink:
    """What a ``Client`` writes through once its connection is gone (or had none): nothing, at once."""

    closing = True

    def write_payload(self, payload: bytes, encoding: int) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> Awaitable[None]:
        return _Done()


CLOSED_LINK: Final = _ClosedLink()


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


_NOT_A_CONNECTION: Final = (
    "asyncapy.Client is the peer a handler receives, made by the server; to connect to a server, "
    "use asyncapy.client.Client (blocking) or asyncapy.client.AsyncClient: "
    'from asyncapy.client import Client; Client("127.0.0.1", 1500)'
)


class Client:
    """The peer of one connection, passed to every handler (the server makes it).

    To connect to a server, use ``asyncapy.client.Client`` or ``AsyncClient``.

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
        session: Session | None = None,
        link: _Link = CLOSED_LINK,
        registry: _Sessions | None = None,
        encoding: str = "json",
    ) -> None:
        if not isinstance(session, Session):
            raise TypeError(_NOT_A_CONNECTION)
        self.address = address
        self.port = port
        self.session = session
        self.encoding = encoding
        self._link = link
        self._registry = registry

    def _view(self, link: _Link) -> Client:
        """The same peer answering through ``link`` (an AsyncAProto v2 request's), made without checks."""
        view: Client = _new_client(Client)
        view.address = self.address
        view.port = self.port
        view.session = self.session
        view.encoding = self.encoding
        view._link = link
        view._registry = self._registry
        return view

    def _detach(self) -> None:
        """The connection is gone: drop the reference to it (so that no cycle keeps it alive)."""
        self._link = CLOSED_LINK

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing; sends are then ignored."""
        return self._link.closing

    def send(
        self,
        packet: Packet[Any] | Mapping[str, Any] | BaseModel,
        close: bool = False,
        *,
        encoding: str | None = None,
    ) -> Awaitable[None]:
        """Send ``packet`` to the peer; with ``close=True`` close the connection after it.

        ``await client.send(...)``: the packet is queued when ``send`` is called, and
        awaiting waits while the socket's write buffer is over its high-water mark.
        (Not a coroutine function: a coroutine per reply would cost more than the
        rest of an echo.) A received ``Packet`` sent back in its own encoding re-sends
        its original payload bytes. Sending on a closed connection does nothing.
        """
        link = self._link
        if encoding is None and type(packet) is Packet and packet.raw is not None and not link.closing:
            link.write_payload(packet.raw, CODEC_IDS[packet.encoding])  # an echo
        else:
            self.send_nowait(packet, encoding=encoding)
        if close:
            link.close()
        return link.drain()

    def send_nowait(
        self,
        packet: Packet[Any] | Mapping[str, Any] | BaseModel,
        *,
        encoding: str | None = None,
    ) -> None:
        """Queue ``packet`` for sending without waiting for the socket buffer to drain."""
        link = self._link
        if link.closing:
            return
        if encoding is None:
            kind = type(packet)
            if kind is Packet and packet.raw is not None:  # type: ignore[union-attr]
                # Echoing a received packet: its own bytes, no encoding.
                link.write_payload(packet.raw, CODEC_IDS[packet.encoding])  # type: ignore[union-attr]
                return
            received = kind is not dict and _encoder(kind) is _encode_packet and packet.raw is not None  # type: ignore[union-attr]
            encoding = packet.encoding if received else self.encoding  # type: ignore[union-attr]
        codec = get_codec(encoding)
        link.write_payload(encode_payload(packet, codec.name), codec.id)

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


_new_client = object.__new__


def encode_payload(packet: Packet[Any] | Mapping[str, Any] | BaseModel, encoding: str) -> bytes:
    """The payload bytes of ``packet`` in ``encoding`` (a received packet's own bytes if they fit)."""
    kind = type(packet)
    if kind is dict:
        return get_codec(encoding).encode(packet)
    if kind is Packet:
        return _encode_packet(packet, encoding)  # type: ignore[arg-type]
    return _encoder(kind)(packet, encoding)


def _encode_packet(packet: Packet[Any], encoding: str) -> bytes:
    if packet.raw is not None and packet.encoding == encoding:
        return packet.raw
    payload = packet.payload
    return get_codec(encoding).encode(payload if isinstance(payload, dict) else dict(payload))


def _encode_model(model: BaseModel, encoding: str) -> bytes:
    """A model in a codec other than JSON, keyed by its aliases when it has any (``asyncapy.model.aliases``)."""
    return get_codec(encoding).encode(dump_for_wire(model))


def _model_encoder(kind: type[BaseModel]) -> Callable[[Any, str], bytes]:
    """How to send instances of ``kind``: JSON by pydantic-core's serializer (by alias when it has aliases)."""
    to_json = _model_json(kind)

    def encode(model: BaseModel, encoding: str) -> bytes:
        if encoding == "json":
            return to_json(model)
        return _encode_model(model, encoding)

    return encode


def _model_json(kind: type[BaseModel]) -> Callable[[BaseModel], bytes]:
    """A model's JSON encoder: pydantic-core's serializer, which writes NaN and infinities as
    ``null``; so for a model that may hold a float, one that refuses them (DESIGN §10)."""
    to_json: Callable[[BaseModel], bytes] = json_encoder(kind)  # by alias when it has aliases
    if not _may_hold_float(kind.__pydantic_core_schema__, set()):
        return to_json  # nothing to check: no cost per reply

    def encode(model: BaseModel) -> bytes:
        data = to_json(model)
        return data if data.find(b"null") < 0 else finite_json(data, model)

    return encode


#: Core schema types whose JSON may be a float: floats, and what holds anything.
_FLOATY: Final = frozenset({"float", "any", "is-instance", "is-subclass", "callable", "function-plain", "function-wrap"})


def _may_hold_float(schema: Any, seen: set[int]) -> bool:
    """Whether a pydantic core schema can serialize a float anywhere (conservative: custom
    serializers and extra fields count as yes)."""
    if id(schema) in seen:
        return False
    seen.add(id(schema))
    if isinstance(schema, dict):
        if schema.get("type") in _FLOATY or schema.get("sub_type") == "float" or "serialization" in schema:
            return True
        if schema.get("extra_fields_behavior") == "allow":
            return True
        return any(_may_hold_float(value, seen) for value in schema.values())
    if isinstance(schema, (list, tuple)):
        return any(_may_hold_float(value, seen) for value in schema)
    return isinstance(schema, float)


def _encode_mapping(mapping: Mapping[str, Any], encoding: str) -> bytes:
    return get_codec(encoding).encode(mapping if isinstance(mapping, dict) else dict(mapping))


def _refuse(packet: Any, encoding: str) -> bytes:
    raise TypeError(f"cannot send a {type(packet).__name__}: send a dict, a pydantic model or a Packet")


def _encoder(kind: type) -> Callable[[Any, str], bytes]:
    encode = _ENCODERS.get(kind)
    if encode is None:
        encode = _ENCODERS[kind] = _encoder_for(kind)
    return encode


def _encoder_for(kind: type) -> Callable[[Any, str], bytes]:
    """How to encode instances of ``kind``: worked out once per type (ABC checks are slow)."""
    if issubclass(kind, Packet):
        return _encode_packet
    if issubclass(kind, BaseModel):
        return _model_encoder(kind)
    if issubclass(kind, Mapping):
        return _encode_mapping
    return _refuse


def reply_encoder(kind: type, encoding: str) -> Callable[[Any], bytes] | None:
    """How to encode, in ``encoding``, what a handler returned; None: it is not a reply (ignored).

    A handler's reply is a dict or a pydantic model. Worked out once per type and
    encoding; a model's JSON encoder is pydantic-core's own serializer, called directly
    (with ``by_alias=True`` bound when the model has aliases: they are the wire names).
    """
    table = REPLY_ENCODERS.get(encoding)
    if table is None:
        table = REPLY_ENCODERS[encoding] = {}
    try:
        return table[kind]
    except KeyError:
        pass
    codec = get_codec(encoding)
    encode: Callable[[Any], bytes] | None = None
    if issubclass(kind, dict):
        encode = codec.encode
    elif issubclass(kind, BaseModel):
        if codec.name == "json":
            encode = _model_json(kind)  # by alias when it has aliases; NaN refused
        else:
            encode = partial(_encode_model, encoding=codec.name)
    table[kind] = encode
    return encode


#: Codec name -> reply type -> encoder, filled by ``reply_encoder`` (read it directly on
#: a hot path); the types are classes of the application, a bounded set.
REPLY_ENCODERS: dict[str, dict[type, Callable[[Any], bytes] | None]] = {}
#: Types seen by ``encode_payload``; they are classes of the application, a bounded set.
_ENCODERS: dict[type, Callable[[Any, str], bytes]] = {}


def write_reply(client: Client, reply: Any) -> None:
    """Write what a handler returned, as the connection does: a dict or a model is sent, anything else ignored."""
    name = client.encoding
    try:
        encode = REPLY_ENCODERS[name][type(reply)]
    except KeyError:
        encode = reply_encoder(type(reply), name)
    if encode is not None:
        client._link.write_payload(encode(reply), CODEC_IDS[name])  # a closing link ignores it
