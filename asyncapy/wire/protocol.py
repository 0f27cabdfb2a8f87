"""AsyncAProto framing without I/O: bytes in, frames out.

A frame on the wire is ``Content-Length`` (``header_size`` bytes, ``byteorder``),
``Protocol-Version`` (1 byte, 22), ``Content-Encoding`` (1 byte) and the payload;
Content-Length counts the payload plus those two bytes.

``FrameDecoder`` is fed raw bytes and hands back, one at a time, ``Frame`` events,
``FrameError`` events or ``NEED_DATA``. It never buffers more than one frame's
header plus the body of a frame it accepted: a frame too large is rejected from
its header alone, and a frame with a bad header is skipped without buffering it.
Nothing here imports asyncio; the server and both clients share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import struct
import sys
from typing import Final, Literal, NamedTuple, Union

from .errors import ERR_HEADER_INVALID, ERR_PAYLOAD_TOO_LARGE

PROTOCOL_VERSION: Final = 22
#: Protocol-Version and Content-Encoding: the two bytes Content-Length counts besides the payload.
FRAME_TAIL: Final = 2
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


#: What ``pull`` and ``receive`` return for a frame: the ``Frame`` fields as a plain
#: tuple, which costs a fraction of a named tuple to make and to free (one per packet).
RawFrame = tuple[int, bytes]


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame the peer got wrong.

    ``encoding`` is the Content-Encoding byte when it was a known one (the error reply
    should use it), else ``None``. ``fatal`` means the connection must be closed.
    """

    code: str
    detail: str
    encoding: int | None
    fatal: bool


Event = Union[Frame, FrameError, _NeedData]
Batch = list[Union[RawFrame, FrameError]]


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


class FrameDecoder:
    """Turns a byte stream into frames; see the module docstring.

    Args:
        header_size: size of the Content-Length field, 1 to 8 bytes.
        byteorder: "big" or "little".
        max_packet_size: the largest Content-Length accepted; a larger one is a
            fatal ERR_PAYLOAD_TOO_LARGE, reported before any of the body is read.
        encodings: the Content-Encoding bytes this side understands.
    """

    __slots__ = ("_buf", "_pos", "_skip", "_hs", "_order", "_max", "_encodings", "_closed", "_unpack", "_fast_min", "in_frame")

    def __init__(
        self,
        header_size: int = DEFAULT_HEADER_SIZE,
        byteorder: Byteorder = "big",
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        encodings: frozenset[int] = frozenset({0, 1}),
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
        event = events[0]
        return Frame(*event) if type(event) is tuple else event  # type: ignore[return-value]

    def pull(self, limit: int) -> Batch:
        """Up to ``limit`` events from the bytes fed so far; an empty list means: feed more.

        Frames come as plain ``(encoding, payload)`` tuples (``RawFrame``). A fatal
        error is always the last event: the decoder is closed after it.
        """
        if self._closed:
            return []
        events, self._pos = self._parse(self._buf, self._pos, limit)
        self._compact()
        self.in_frame = self._skip > 0 or len(self._buf) > self._pos
        return events

    def receive(self, data: bytes, limit: int) -> Batch:
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
            if hs + length == size and length <= self._max and data[hs] == PROTOCOL_VERSION:
                encoding = data[hs + 1]
                if encoding in self._encodings:
                    return [(encoding, data[hs + FRAME_TAIL :])]
        events, pos = self._parse(data, 0, limit)
        if pos < size and not self._closed:
            self._buf += memoryview(data)[pos:]
        self.in_frame = self._skip > 0 or len(self._buf) > 0
        return events

    def _parse(self, src: bytes | bytearray, pos: int, limit: int) -> tuple[Batch, int]:
        """Decode up to ``limit`` events from ``src[pos:]``; the events and where parsing stopped."""
        events: Batch = []
        hs = self._hs
        unpack = self._unpack
        encodings = self._encodings
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
                events.append(FrameError(ERR_HEADER_INVALID, f"Content-Length {length} is under 2", None, False))
                pos = self._skip_body(pos + hs, length, size)
                continue
            if avail < hs + FRAME_TAIL:
                break
            version = src[pos + hs]
            encoding = src[pos + hs + 1]
            if version != PROTOCOL_VERSION or encoding not in encodings:
                events.append(self._bad_header(version, encoding))
                pos = self._skip_body(pos + hs, length, size)
                continue
            end = pos + hs + length
            if size < end:
                break
            payload = src[pos + hs + FRAME_TAIL : end]
            events.append((encoding, bytes(payload) if copy else payload))  # type: ignore[arg-type]
            pos = end
        return events, pos

    def _too_large(self, length: int) -> FrameError:
        self._closed = True
        self._reset()
        return FrameError(ERR_PAYLOAD_TOO_LARGE, f"Content-Length {length} is over the limit of {self._max}", None, True)

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
