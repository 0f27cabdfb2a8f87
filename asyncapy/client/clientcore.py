"""The client side of AsyncAProto without I/O, shared by every client.

``ClientCore`` turns objects into frames and received bytes into replies, and knows
whether its connection is still in step; ``read_reply`` turns a reply map into what
``request`` returns. The blocking ``Client``, the ``AsyncClient`` and the test
clients only move bytes between a socket (or memory) and this module. The wire:
docs/protocol.md; the v2 side of it is ``clientmux``.
"""

from __future__ import annotations

import enum

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..wire.codecs import CODECS, DecodeError, get_codec
from ..wire.errors import (
    ConnectionClosed,
    ErrorReply,
    HeaderInvalid,
    PayloadTooLarge,
    ProtocolError,
    ReplyValidationError,
    RequestMalformed,
)
from ..model.packet import Packet
from ..model.peer import encode_payload
from ..wire.protocol import (
    CLIENT_MAX_PACKET_SIZE,
    Batch,
    Byteorder,
    Frame,
    FrameDecoder,
    FrameError,
    check_byteorder,
    check_header_size,
    encode_frame,
)

Sendable = Packet[Any] | Mapping[str, Any] | BaseModel


class _Unset(enum.Enum):
    UNSET = "UNSET"


#: The default of ``request(timeout=)``: the client's own ``timeout`` (None means no timeout).
UNSET = _Unset.UNSET
Unset = Literal[_Unset.UNSET]
T = TypeVar("T")

_ERRORS: dict[str, type[ProtocolError]] = {
    "ERR_HEADER_INVALID": HeaderInvalid,
    "ERR_PAYLOAD_TOO_LARGE": PayloadTooLarge,
}


class ClientCore:
    """One connection's protocol state: framing, the receive buffer, end of stream.

    Args:
        encoding: the default encoding of sent packets.
        header_size, byteorder: the Content-Length field, as the server has it.
        max_packet_size: the largest reply accepted.
        address: "host:port", for error messages.
    """

    def __init__(
        self,
        encoding: str = "json",
        header_size: int = 4,
        byteorder: str = "big",
        max_packet_size: int = CLIENT_MAX_PACKET_SIZE,
        address: str = "",
    ) -> None:
        self.encoding = get_codec(encoding).name
        self.header_size = check_header_size(header_size)
        self.byteorder: Byteorder = check_byteorder(byteorder)
        self.max_packet_size = max_packet_size
        self.address = address
        self._decoder = FrameDecoder(self.header_size, self.byteorder, max_packet_size, frozenset(CODECS))
        self.eof = False
        #: Frames received on this connection.
        self.received = 0

    def fresh(self) -> ClientCore:
        """A core with the same settings and nothing received, for a new connection."""
        return ClientCore(self.encoding, self.header_size, self.byteorder, self.max_packet_size, self.address)

    def frame(self, obj: Sendable, encoding: str | None = None) -> bytes:
        """The bytes that send ``obj`` (a dict, a model or a ``Packet``)."""
        codec = get_codec(encoding or self.encoding)
        return encode_frame(encode_payload(obj, codec.name), codec.id, self.header_size, self.byteorder)

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the server; ``b""`` means it closed the connection."""
        if data:
            self._decoder.feed(data)
        else:
            self.eof = True

    @property
    def idle(self) -> bool:
        """True when nothing unasked-for was received: a new request may use the connection.

        Bytes waiting before a request was sent, or the end of the stream, mean the
        connection is out of step with its requests (or gone): it must not be reused.
        """
        return not self.eof and self._decoder.buffered == 0 and not self._decoder.in_frame

    @property
    def in_frame(self) -> bool:
        """True when part of a reply has arrived."""
        return self._decoder.in_frame

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more data arrives.

        Raises:
            ConnectionClosed: the server closed the connection mid-frame or between frames.
            ProtocolError: the server's bytes are not valid frames.
        """
        if not self._decoder.in_frame and not self.eof:
            return None  # nothing buffered: the usual state before a reply
        return self._frame(self._decoder.pull(1))

    def receive_frame(self, data: bytes) -> Frame | None:
        """``receive_data(data)`` then ``next_frame()``; a read holding exactly one frame
        (the usual reply) is sliced out without copying it into the buffer."""
        if not data:
            self.eof = True
            return self.next_frame()
        return self._frame(self._decoder.receive(data, 1))

    def _frame(self, events: Batch) -> Frame | None:
        if events:
            event = events[0]
            if type(event) is tuple:
                self.received += 1
                return Frame(*event)
            assert isinstance(event, FrameError)
            raise _ERRORS.get(event.code, HeaderInvalid)(f"the server sent a bad frame: {event.detail}")
        if self.eof:
            raise self.closed_error(" in the middle of a packet" if self._decoder.in_frame else "")
        return None

    def closed_error(self, how: str = "") -> ConnectionClosed:
        server = f"the server {self.address}" if self.address else "the server"
        return ConnectionClosed(f"{server} closed the connection{how}")

    def raw(self, frame: Frame) -> bytes:
        """The frame exactly as it was on the wire."""
        return encode_frame(frame.payload, frame.encoding, self.header_size, self.byteorder)

    def decode(self, frame: Frame) -> dict[str, Any]:
        """The reply map carried by ``frame``."""
        return decode_reply(frame)


def decode_reply(frame: Frame) -> dict[str, Any]:
    """The map carried by ``frame``, a packet from the server.

    Raises:
        RequestMalformed: the payload does not decode, or is not a map.
    """
    try:
        value = CODECS[frame.encoding].decode(frame.payload)
    except DecodeError as exc:
        raise RequestMalformed(f"the server sent an undecodable payload: {exc}") from None
    if not isinstance(value, dict):
        raise RequestMalformed(f"the server sent a {type(value).__name__}, not a map")
    return value


def maybe_unread(core: ClientCore, closed: BaseException) -> bool:
    """True when a request that ended with ``closed`` may not have reached the server.

    That is when the server closed a connection on which it had answered before (it may
    have closed it between two requests) and no byte of a reply arrived. The client then asks the
    stream whether TCP reported a reset (the server's end refused data it never read):
    only then is the request sent again. A request the server read and then closed on
    (a handler closing without a reply) ends with a plain close, and is not sent twice.
    """
    return isinstance(closed, ConnectionClosed) and core.received > 0 and not core.in_frame


def check_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """Return ``reply``, or raise ``ErrorReply`` when it is an error packet."""
    if reply.get("status") == "failure" and "error" in reply:
        raise ErrorReply(reply)
    return reply


def read_reply(reply: dict[str, Any], model: Any, raise_errors: bool) -> Any:
    """What ``request`` returns for ``reply``: the map, or (``model`` given) a validated ``model``.

    Raises:
        ErrorReply: the reply is an error packet (always, when ``model`` is given).
        ReplyValidationError: the reply does not validate against ``model``.
    """
    if model is None:
        return check_reply(reply) if raise_errors else reply
    check_reply(reply)
    try:
        return validator(model)(reply)
    except ValidationError as exc:
        raise ReplyValidationError(reply, model, exc) from exc


def validator(model: type[T]) -> Callable[[Any], T]:
    """How to validate a reply map into ``model``: made once per type (a model's own
    validator, else one ``TypeAdapter``)."""
    validate = _VALIDATORS.get(model)
    if validate is None:
        if isinstance(model, type) and issubclass(model, BaseModel):
            validate = model.model_validate
        else:
            validate = TypeAdapter(model).validate_python
        _VALIDATORS[model] = validate
    return validate


#: Reply type -> its validator; the types are classes of the application, a bounded set.
_VALIDATORS: dict[Any, Callable[[Any], Any]] = {}


def connect_error(exc: OSError, address: str) -> OSError:
    """``exc``, a failure to connect, as the same kind of ``OSError`` naming ``address``."""
    text = f"cannot connect to {address}: {exc.strerror or exc}"
    try:
        return type(exc)(exc.errno, text) if exc.errno is not None else type(exc)(text)
    except TypeError:  # an OSError subclass with a constructor of its own
        return OSError(exc.errno, text)
