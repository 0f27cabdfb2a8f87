"""AsyncAProto framing without I/O: bytes in, frames out (the wire: docs/protocol.md).

A v1 frame is ``Content-Length`` (``header_size`` bytes, ``byteorder``),
``Protocol-Version`` (1 byte, 22), ``Content-Encoding`` (1 byte) and the payload;
Content-Length counts the payload plus those two bytes. A v2 frame (Protocol-Version
23) adds ``Kind`` (1 byte), ``Stream-Id`` and ``Deadline-Ms`` (4 bytes each, big-endian)
before the payload; Content-Length counts those too (payload + 11).

``FrameDecoder`` is fed raw bytes and hands back, one at a time, ``Frame`` events
(``V2Frame`` on a v2 connection), ``FrameError`` events or ``NEED_DATA``. It never
buffers more than one frame's header plus the body of a frame it accepted: a frame too
large is rejected from its header alone, and a frame with a bad header is skipped
without buffering it. A decoder made with ``kinds`` reads both versions, and the first
frame of the connection fixes which one (``version``); one made without reads v1 only,
as before v2 existed. Nothing here imports asyncio; the server and both clients share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import struct
import functools
import sys
from typing import Any, Final, Generic, Literal, NamedTuple, Union, overload

from typing_extensions import TypeVar

from .errors import ERR_HEADER_INVALID, ERR_PAYLOAD_TOO_LARGE

PROTOCOL_VERSION: Final = 22
#: Protocol-Version and Content-Encoding: the two bytes Content-Length counts besides the payload.
FRAME_TAIL: Final = 2
#: AsyncAProto v2: many requests in flight on one connection, each on its own Stream-Id.
PROTOCOL_VERSION_2: Final = 23
#: Protocol-Version, Content-Encoding, Kind, Stream-Id and Deadline-Ms: what a v2
#: Content-Length counts besides the payload.
V2_TAIL: Final = 11
#: The v2 header after Content-Length; Stream-Id and Deadline-Ms are big-endian whatever ``byteorder`` is.
V2_HEADER: Final = struct.Struct(">BBBII")

# v2 Kind byte values.
REQUEST: Final = 0
REPLY: Final = 1
ITEM: Final = 2
END: Final = 3
CANCEL: Final = 4
PUSH: Final = 5
KIND_NAMES: Final = ("REQUEST", "REPLY", "ITEM", "END", "CANCEL", "PUSH")
#: What a server receives from a client (the ``kinds`` of the server's decoder) ...
SENT_BY_CLIENT: Final = frozenset({REQUEST, CANCEL})
#: ... and what a client receives from a server.
SENT_BY_SERVER: Final = frozenset({REPLY, ITEM, END, PUSH})
#: Kinds that always name a request's stream: Stream-Id 0 (the connection's) is invalid on them.
_STREAM_KINDS: Final = frozenset({REQUEST, ITEM, END, CANCEL})
#: The largest Stream-Id and Deadline-Ms (4 unsigned bytes; a deadline of about 49.7 days).
MAX_STREAM_ID: Final = 2**32 - 1
MAX_DEADLINE_MS: Final = 2**32 - 1
DEFAULT_HEADER_SIZE: Final = 4
#: 1 MiB: large enough for any API request, small enough that 1,000 greedy peers
#: cannot hold more than a GiB of server memory between them.
DEFAULT_MAX_PACKET_SIZE: Final = 1024 * 1024
#: Replies may be larger than requests; clients accept up to 64 MiB (the load generator's bound).
CLIENT_MAX_PACKET_SIZE: Final = 64 * 1024 * 1024
#: Drop the consumed prefix of the buffer once it is this large, so that a long
#: pipelined stream is not copied once per frame.
_COMPACT_AT: Final = 64 * 1024

Byteorder = Literal["big", "little"]


class _NeedData:
    """The decoder needs more bytes before it can say anything."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


class Frame(NamedTuple):
    """One whole packet: its Content-Encoding byte and its raw payload.

    ``next_event`` returns these; the server's batch calls (``pull``, ``receive``)
    return the same two fields as a plain tuple, cheaper still.
    """

    encoding: int
    payload: bytes


class V2Frame(NamedTuple):
    """One whole v2 frame, its fields in wire order (``deadline_ms`` 0: none)."""

    encoding: int
    kind: int
    stream_id: int
    deadline_ms: int
    payload: bytes


#: What ``pull`` and ``receive`` return for a frame: the ``Frame`` fields as a plain
#: tuple, which costs a fraction of a named tuple to make and to free (one per packet).
RawFrame = tuple[int, bytes]
#: The same for a v2 frame: the ``V2Frame`` fields.
RawV2Frame = tuple[int, int, int, int, bytes]


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame the peer got wrong.

    ``encoding`` is the Content-Encoding byte when it was a known one (the error reply
    should use it), else ``None``. ``fatal`` means the connection must be closed.
    ``version`` is the Protocol-Version the error reply is framed in (the connection's;
    22 until its first frame said otherwise) and ``stream_id`` the v2 Stream-Id it
    answers (0: the connection, also when the frame's v2 header could not be read).
    """

    code: str
    detail: str
    encoding: int | None
    fatal: bool
    version: int = PROTOCOL_VERSION
    stream_id: int = 0


Event = Union[Frame, V2Frame, FrameError, _NeedData]
#: A v1 decoder's batch; a two-version decoder's holds ``RawV2Frame`` too.
Batch = list[Union[RawFrame, FrameError]]
#: The frames a decoder hands out: ``RawFrame`` (v1 only, the default) or either version's.
F = TypeVar("F", default=RawFrame)


def check_header_size(header_size: int) -> int:
    """Validate ``header_size`` (1 to 8 bytes) and return it."""
    if not isinstance(header_size, int) or not 1 <= header_size <= 8:
        raise ValueError(f"header_size must be an int from 1 to 8, not {header_size!r}")
    return header_size


def check_byteorder(byteorder: str) -> Byteorder:
    """Validate ``byteorder`` ("big" or "little") and return it."""
    if byteorder == "big":
        return "big"
    if byteorder == "little":
        return "little"
    raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")


def encode_frame(
    payload: bytes,
    encoding: int,
    header_size: int = DEFAULT_HEADER_SIZE,
    byteorder: Byteorder = "big",
) -> bytes:
    """Frame ``payload`` for the wire.

    Raises:
        OverflowError: the payload does not fit in a ``header_size``-byte length.
    """
    return frame_header(len(payload), encoding, header_size, byteorder) + payload


#: Protocol-Version and Content-Encoding, as the two bytes after Content-Length, per encoding.
HEADER_TAILS: Final = tuple(bytes((PROTOCOL_VERSION, encoding)) for encoding in range(256))


def frame_header(
    payload_size: int,
    encoding: int,
    header_size: int = DEFAULT_HEADER_SIZE,
    byteorder: Byteorder = "big",
) -> bytes:
    """The bytes that go before a payload of ``payload_size`` bytes (write them, then the payload)."""
    return (payload_size + FRAME_TAIL).to_bytes(header_size, byteorder) + HEADER_TAILS[encoding]


_STRUCT_CODES: Final = {1: "B", 2: "H", 4: "I", 8: "Q"}


def header_packer(header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big") -> Callable[[int, int, int], bytes]:
    """``pack(content_length, version, encoding)``: a frame's header in one C call for the usual sizes."""
    code = _STRUCT_CODES.get(header_size)
    if code is not None:
        return struct.Struct((">" if byteorder == "big" else "<") + code + "BB").pack

    def pack(content_length: int, version: int, encoding: int) -> bytes:
        return content_length.to_bytes(header_size, byteorder) + bytes((version, encoding))

    return pack


def _check_v2(encoding: int, kind: int, stream_id: int, deadline_ms: int) -> None:
    if not 0 <= encoding <= 255:
        raise ValueError(f"Content-Encoding is one byte, not {encoding!r}")
    if not 0 <= kind < len(KIND_NAMES):
        raise ValueError(f"Kind is one of {', '.join(f'{n} {k}' for k, n in enumerate(KIND_NAMES))}, not {kind!r}")
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"Stream-Id is 0 to {MAX_STREAM_ID}, not {stream_id!r}")
    if not 0 <= deadline_ms <= MAX_DEADLINE_MS:
        raise ValueError(f"Deadline-Ms is 0 to {MAX_DEADLINE_MS}, not {deadline_ms!r}")


def v2_header(
    payload_size: int,
    encoding: int,
    kind: int,
    stream_id: int,
    deadline_ms: int = 0,
    header_size: int = DEFAULT_HEADER_SIZE,
    byteorder: Byteorder = "big",
) -> bytes:
    """The bytes that go before a v2 payload of ``payload_size`` bytes.

    Raises:
        ValueError: a field out of its range.
        OverflowError: the frame does not fit in a ``header_size``-byte length.
    """
    _check_v2(encoding, kind, stream_id, deadline_ms)
    return (payload_size + V2_TAIL).to_bytes(header_size, byteorder) + V2_HEADER.pack(
        PROTOCOL_VERSION_2, encoding, kind, stream_id, deadline_ms
    )


def encode_v2(
    kind: int,
    stream_id: int,
    payload: bytes,
    encoding: int,
    deadline_ms: int = 0,
    header_size: int = DEFAULT_HEADER_SIZE,
    byteorder: Byteorder = "big",
) -> bytes:
    """Frame ``payload`` as a v2 frame of ``kind``; see ``v2_header`` for the errors."""
    return v2_header(len(payload), encoding, kind, stream_id, deadline_ms, header_size, byteorder) + payload


def encode_request(
    stream_id: int, payload: bytes, encoding: int, deadline_ms: int = 0, header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big"
) -> bytes:
    """A REQUEST on ``stream_id`` (non-zero) that expires ``deadline_ms`` after the server read it (0: never)."""
    if stream_id == 0:
        raise ValueError("a REQUEST needs a non-zero Stream-Id (0 is the connection's)")
    return encode_v2(REQUEST, stream_id, payload, encoding, deadline_ms, header_size, byteorder)


def encode_reply(
    stream_id: int, payload: bytes, encoding: int, header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big"
) -> bytes:
    """The REPLY to the request on ``stream_id`` (0: an error of the connection itself)."""
    return encode_v2(REPLY, stream_id, payload, encoding, 0, header_size, byteorder)


def encode_item(
    stream_id: int, payload: bytes, encoding: int, header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big"
) -> bytes:
    """One ITEM of the stream that answers the request on ``stream_id``."""
    if stream_id == 0:
        raise ValueError("an ITEM needs the Stream-Id of its request, not 0")
    return encode_v2(ITEM, stream_id, payload, encoding, 0, header_size, byteorder)


def encode_end(
    stream_id: int, payload: bytes = b"", encoding: int = 0, header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big"
) -> bytes:
    """The END of a stream: an empty payload, or the error map that ended it."""
    if stream_id == 0:
        raise ValueError("an END needs the Stream-Id of its request, not 0")
    return encode_v2(END, stream_id, payload, encoding, 0, header_size, byteorder)


def encode_cancel(stream_id: int, encoding: int = 0, header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big") -> bytes:
    """A CANCEL of the request in flight on ``stream_id`` (an empty payload)."""
    if stream_id == 0:
        raise ValueError("a CANCEL needs the Stream-Id of a request, not 0")
    return encode_v2(CANCEL, stream_id, b"", encoding, 0, header_size, byteorder)


def encode_push(payload: bytes, encoding: int, header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big") -> bytes:
    """A PUSH: a packet the server sends that answers no request (Stream-Id 0)."""
    return encode_v2(PUSH, 0, payload, encoding, 0, header_size, byteorder)


@functools.lru_cache(maxsize=None)
def v2_header_packer(
    header_size: int = DEFAULT_HEADER_SIZE, byteorder: Byteorder = "big"
) -> Callable[[int, int, int, int, int, int], bytes]:
    """``pack(content_length, version, encoding, kind, stream_id, deadline_ms)``: a v2 header
    in one C call when Content-Length is big-endian and of a usual size (no range checks).
    One per framing, shared (every v2 connection of a server uses the same)."""
    code = _STRUCT_CODES.get(header_size)
    if code is not None and byteorder == "big":
        return struct.Struct(">" + code + "BBBII").pack
    tail = V2_HEADER.pack

    def pack(content_length: int, version: int, encoding: int, kind: int, stream_id: int, deadline_ms: int) -> bytes:
        return content_length.to_bytes(header_size, byteorder) + tail(version, encoding, kind, stream_id, deadline_ms)

    return pack


_UNPACKERS: dict[tuple[int, str], Callable[[bytes | bytearray, int], tuple[int]]] = {}


def _length_unpacker(header_size: int, byteorder: Byteorder) -> Callable[[bytes | bytearray, int], tuple[int]] | None:
    """A precompiled reader of the Content-Length field (faster than slicing + int.from_bytes)."""
    code = _STRUCT_CODES.get(header_size)
    if code is None:
        return None
    unpack = _UNPACKERS.get((header_size, byteorder))
    if unpack is None:  # a decoder per connection: compile each format once
        unpack = _UNPACKERS[header_size, byteorder] = struct.Struct((">" if byteorder == "big" else "<") + code).unpack_from
    return unpack


@functools.lru_cache(maxsize=None)
def _stream_kinds(kinds: frozenset[int] | None) -> tuple[frozenset[int], frozenset[int]]:
    """The Kinds a decoder takes with a non-zero Stream-Id, and with Stream-Id 0: shared by
    every decoder of the same kinds (a connection holds no sets of its own)."""
    kinds = kinds or frozenset()
    return kinds - {PUSH}, kinds & {REPLY, PUSH}


class FrameDecoder(Generic[F]):
    """Turns a byte stream into frames; see the module docstring.

    Args:
        header_size: size of the Content-Length field, 1 to 8 bytes.
        byteorder: "big" or "little".
        max_packet_size: the largest Content-Length accepted; a larger one is a
            fatal ERR_PAYLOAD_TOO_LARGE, reported before any of the body is read.
        encodings: the Content-Encoding bytes this side understands.
        kinds: read v2 too, accepting these Kinds (``SENT_BY_CLIENT`` on a server,
            ``SENT_BY_SERVER`` on a client). The connection's first frame with a known
            Protocol-Version fixes its version; a frame of the other version afterwards
            is ERR_HEADER_INVALID. v2 frames come as ``RawV2Frame``/``V2Frame``.
            Without ``kinds`` (v1 only) Protocol-Version 23 is unknown, as it was before v2.
    """

    __slots__ = (
        "_buf", "_pos", "_skip", "_hs", "_order", "_max", "_encodings", "_closed", "_unpack", "_fast_min",
        "_v1", "_v2", "_version", "_kinds", "_nonzero", "_zero", "in_frame",
    )  # fmt: skip

    @overload
    def __init__(
        self: FrameDecoder[RawFrame],
        header_size: int = ...,
        byteorder: Byteorder = ...,
        max_packet_size: int = ...,
        encodings: frozenset[int] = ...,
        kinds: None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: FrameDecoder[RawFrame | RawV2Frame],
        header_size: int = ...,
        byteorder: Byteorder = ...,
        max_packet_size: int = ...,
        encodings: frozenset[int] = ...,
        *,
        kinds: frozenset[int] | None,
    ) -> None: ...

    def __init__(
        self,
        header_size: int = DEFAULT_HEADER_SIZE,
        byteorder: Byteorder = "big",
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        encodings: frozenset[int] = frozenset({0, 1}),
        kinds: frozenset[int] | None = None,
    ) -> None:
        self._hs = check_header_size(header_size)
        self._order: Byteorder = check_byteorder(byteorder)
        self._unpack = _length_unpacker(header_size, byteorder)
        #: ``receive``'s one-frame path needs the unpacker and more than a header.
        self._fast_min = header_size + FRAME_TAIL if self._unpack is not None else sys.maxsize
        if max_packet_size < FRAME_TAIL:
            raise ValueError(f"max_packet_size must be at least {FRAME_TAIL}")
        self._max = max_packet_size
        self._encodings = encodings
        if kinds is not None and not kinds <= SENT_BY_CLIENT | SENT_BY_SERVER:
            raise ValueError(f"kinds must be v2 Kinds (0 to {len(KIND_NAMES) - 1}), not {sorted(kinds)!r}")
        self._kinds = kinds
        #: The Kinds taken with a non-zero Stream-Id, and with Stream-Id 0 (REPLY: a connection error; PUSH).
        self._nonzero, self._zero = _stream_kinds(kinds)
        #: The connection's Protocol-Version once a frame fixed it (a v1-only decoder: 22 from the start).
        self._version: int | None = PROTOCOL_VERSION if kinds is None else None
        #: The version byte the v1 loops take as theirs: -1 (none) until the connection is known to speak v1.
        self._v1 = PROTOCOL_VERSION if kinds is None else -1
        #: The same for v2: 23 once the connection is known to speak it.
        self._v2 = -1
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0
        self._closed = False
        #: True when part of a frame has arrived (or is being skipped); read-only.
        self.in_frame = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as a frame."""
        return len(self._buf) - self._pos

    @property
    def version(self) -> int | None:
        """The connection's Protocol-Version (22 or 23), None until its first frame said."""
        return self._version

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer (after a fatal error they are ignored)."""
        if self._closed:
            return
        if self._skip:
            data = self._discard(data)
        if data:
            self._buf += data
        self.in_frame = self._skip > 0 or len(self._buf) > self._pos

    def next_event(self) -> Event:
        """The next frame or error, or ``NEED_DATA`` until more bytes are fed."""
        events = self.pull(1)
        if not events:
            return NEED_DATA
        event: Any = events[0]
        if type(event) is tuple:
            try:
                return Frame(*event)
            except TypeError:  # five fields: a v2 frame (v1 pays nothing for the check)
                return V2Frame(*event)
        return event  # type: ignore[no-any-return]

    def pull(self, limit: int) -> list[F | FrameError]:
        """Up to ``limit`` events from the bytes fed so far; an empty list means: feed more.

        Frames come as plain ``(encoding, payload)`` tuples (``RawFrame``), and v2 frames
        as ``RawV2Frame``. A fatal error is always the last event: the decoder is closed after it.
        """
        if self._closed:
            return []
        events, self._pos = self._parse(self._buf, self._pos, limit)
        self._compact()
        self.in_frame = self._skip > 0 or len(self._buf) > self._pos
        return events

    def receive(self, data: bytes, limit: int) -> list[F | FrameError]:
        """``feed(data)`` then ``pull(limit)``, without copying ``data`` when nothing is buffered.

        The common read holds whole frames only: they are sliced out of ``data``
        directly, and only a trailing partial frame is kept.
        """
        if self.in_frame or self._closed:
            if self._closed:
                return []
            self.feed(data)
            return self.pull(limit)
        size = len(data)
        if size > self._fast_min and limit > 0:
            # The common read: exactly one whole, well-formed frame.
            hs = self._hs
            length = self._unpack(data, 0)[0]  # type: ignore[misc]  # _fast_min is maxsize without it
            if hs + length == size and length <= self._max:
                if data[hs] == self._v1:
                    encoding = data[hs + 1]
                    if encoding in self._encodings:
                        return [(encoding, data[hs + FRAME_TAIL :])]  # type: ignore[list-item]
                elif data[hs] == self._v2 and length >= V2_TAIL:  # the same on a v2 connection
                    _, encoding, kind, stream_id, deadline_ms = V2_HEADER.unpack_from(data, hs)
                    if encoding in self._encodings and kind in (self._nonzero if stream_id else self._zero):
                        return [(encoding, kind, stream_id, deadline_ms, data[hs + V2_TAIL :])]  # type: ignore[list-item]
        events, pos = self._parse(data, 0, limit)
        if pos < size and not self._closed:
            self._buf += memoryview(data)[pos:]
        self.in_frame = self._skip > 0 or len(self._buf) > 0
        return events

    def _parse(self, src: bytes | bytearray, pos: int, limit: int) -> tuple[list[Any], int]:
        """Decode up to ``limit`` events from ``src[pos:]``; the events and where parsing stopped.

        This is the v1 loop; a two-version decoder hands over to ``_parse_mixed`` at the
        first frame it does not take as a well-formed v1 frame.
        """
        events: list[Any] = []
        hs = self._hs
        unpack = self._unpack
        encodings = self._encodings
        v1 = self._v1
        size = len(src)
        copy = type(src) is not bytes  # a slice of a bytearray is a bytearray: make it bytes
        while len(events) < limit:
            avail = size - pos
            if avail < hs:
                break
            length = unpack(src, pos)[0] if unpack is not None else int.from_bytes(src[pos : pos + hs], self._order)
            if length > self._max:
                events.append(self._too_large(length))
                return events, 0  # the buffer was dropped; the decoder is closed
            if length < FRAME_TAIL:
                if self._kinds is not None:
                    return self._parse_mixed(src, pos, limit, events)
                events.append(FrameError(ERR_HEADER_INVALID, f"Content-Length {length} is under 2", None, False))
                pos = self._skip_body(pos + hs, length, size)
                continue
            if avail < hs + FRAME_TAIL:
                break
            version = src[pos + hs]
            encoding = src[pos + hs + 1]
            if version != v1 or encoding not in encodings:
                if self._kinds is not None:
                    return self._parse_mixed(src, pos, limit, events)
                events.append(self._bad_header(version, encoding))
                pos = self._skip_body(pos + hs, length, size)
                continue
            end = pos + hs + length
            if size < end:
                break
            payload = src[pos + hs + FRAME_TAIL : end]
            events.append((encoding, bytes(payload) if copy else payload))
            pos = end
        return events, pos

    def _parse_mixed(self, src: bytes | bytearray, pos: int, limit: int, events: list[Any]) -> tuple[list[Any], int]:
        """``_parse`` for a two-version decoder: either version, the first one read fixing the connection's."""
        hs = self._hs
        encodings, nonzero, zero = self._encodings, self._nonzero, self._zero
        size = len(src)
        copy = type(src) is not bytes
        while len(events) < limit:
            avail = size - pos
            if avail < hs:
                break
            length = self._unpack(src, pos)[0] if self._unpack is not None else int.from_bytes(src[pos : pos + hs], self._order)
            if length > self._max:
                events.append(self._too_large(length))
                return events, 0
            if length < FRAME_TAIL:
                events.append(self._invalid(f"Content-Length {length} is under {FRAME_TAIL}", -1, 0))
                pos = self._skip_body(pos + hs, length, size)
                continue
            if avail < hs + FRAME_TAIL:
                break
            version = src[pos + hs]
            if version == PROTOCOL_VERSION_2:
                if length < V2_TAIL:
                    detail = self._settle(version) or f"Content-Length {length} is under {V2_TAIL}, the least of a v2 frame"
                    events.append(self._invalid(detail, src[pos + hs + 1], 0))
                    pos = self._skip_body(pos + hs, length, size)
                    continue
                if avail < hs + V2_TAIL:
                    break
                _, encoding, kind, stream_id, deadline_ms = V2_HEADER.unpack_from(src, pos + hs)
                if version != self._v2 or encoding not in encodings or kind not in (nonzero if stream_id else zero):
                    problem = self._settle(version) or self._v2_problem(encoding, kind, stream_id)
                    if problem is not None:
                        events.append(self._invalid(problem, encoding, stream_id))
                        pos = self._skip_body(pos + hs, length, size)
                        continue
                end = pos + hs + length
                if size < end:
                    break
                payload = src[pos + hs + V2_TAIL : end]
                events.append((encoding, kind, stream_id, deadline_ms, bytes(payload) if copy else payload))
                pos = end
            elif version == PROTOCOL_VERSION:
                encoding = src[pos + hs + 1]
                problem = self._settle(version)
                if problem is None and encoding not in encodings:
                    problem = f"unknown Content-Encoding {encoding}"
                if problem is not None:
                    events.append(self._invalid(problem, encoding, 0))
                    pos = self._skip_body(pos + hs, length, size)
                    continue
                end = pos + hs + length
                if size < end:
                    break
                payload = src[pos + hs + FRAME_TAIL : end]
                events.append((encoding, bytes(payload) if copy else payload))
                pos = end
            else:
                # Until a v2 frame came, the words of a v1-only decoder: a v1 peer sees v1 unchanged.
                expected = PROTOCOL_VERSION_2 if self._version == PROTOCOL_VERSION_2 else PROTOCOL_VERSION
                events.append(self._invalid(f"unknown Protocol-Version {version} (expected {expected})", src[pos + hs + 1], 0))
                pos = self._skip_body(pos + hs, length, size)
        return events, pos

    def _settle(self, version: int) -> str | None:
        """Fix the connection's version at its first frame; why a frame of the other one is refused."""
        if self._version is None:
            self._version = version
            if version == PROTOCOL_VERSION:
                self._v1 = version
            else:
                self._v2 = version
            return None
        if version != self._version:
            return f"Protocol-Version {version} on a connection that speaks {self._version} (its first frame fixed it)"
        return None

    def _v2_problem(self, encoding: int, kind: int, stream_id: int) -> str | None:
        """Why a v2 header is refused, or None."""
        if encoding not in self._encodings:
            return f"unknown Content-Encoding {encoding}"
        assert self._kinds is not None
        if kind not in self._kinds:
            if kind < len(KIND_NAMES):
                return f"Kind {kind} ({KIND_NAMES[kind]}) is not sent to this side"
            return f"unknown Kind {kind}"
        if stream_id == 0 and kind in _STREAM_KINDS:
            return f"a {KIND_NAMES[kind]} needs a non-zero Stream-Id (0 is the connection's)"
        if stream_id != 0 and kind == PUSH:
            return f"a PUSH has Stream-Id 0, not {stream_id}"
        return None

    def _invalid(self, detail: str, encoding: int, stream_id: int) -> FrameError:  # encoding -1: not read
        """ERR_HEADER_INVALID, answered in the connection's version (the framing goes on)."""
        known = encoding if encoding in self._encodings else None
        return FrameError(ERR_HEADER_INVALID, detail, known, False, self._reply_version(), stream_id)

    def _reply_version(self) -> int:
        return PROTOCOL_VERSION_2 if self._version == PROTOCOL_VERSION_2 else PROTOCOL_VERSION

    def _too_large(self, length: int) -> FrameError:
        self._closed = True
        self._reset()
        detail = f"Content-Length {length} is over the limit of {self._max}"
        return FrameError(ERR_PAYLOAD_TOO_LARGE, detail, None, True, self._reply_version())

    def _bad_header(self, version: int, encoding: int) -> FrameError:
        known = encoding if encoding in self._encodings else None
        if version != PROTOCOL_VERSION:
            detail = f"unknown Protocol-Version {version} (expected {PROTOCOL_VERSION})"
        else:
            detail = f"unknown Content-Encoding {encoding}"
        return FrameError(ERR_HEADER_INVALID, detail, known, False)

    def _skip_body(self, start: int, body: int, size: int) -> int:
        """Skip ``body`` bytes from ``start``: those at hand now, the rest as they arrive (never buffered)."""
        here = min(body, size - start)
        self._skip = body - here
        return start + here

    def _discard(self, data: bytes) -> bytes:
        n = min(self._skip, len(data))
        self._skip -= n
        return data[n:]

    def _compact(self) -> None:
        """Drop what was handed out: all of it when the buffer is used up, else a large prefix."""
        pos = self._pos
        if pos:
            if pos == len(self._buf):
                self._reset()
            elif pos >= _COMPACT_AT:
                del self._buf[:pos]
                self._pos = 0

    def _reset(self) -> None:
        self._buf.clear()  # frames were copied out as bytes: no one holds a view of it
        self._pos = 0
