"""The client side of AsyncAProto v2 without I/O: many requests in flight on one connection.

``MuxCore`` is one connection's state. ``send_request`` gives a request a Stream-Id of
its own and queues its frame; ``receive_data`` turns the server's bytes into events
(``Reply``, ``Item``, ``End``, ``Pushed``, ``ConnectionFailure``, ``FellBack``) matched to
requests by Stream-Id; ``cancel`` queues a CANCEL; ``data_to_send`` hands out what to
write. The I/O shells only move bytes and wake the tasks that wait.

Until the server's first frame the version is unknown: only the first request goes out
(as v2), the others wait. A server that answers it with a v1 ERR_HEADER_INVALID speaks
v1 only (AsyncAPY, an older asyncapy): the core sends that request again in v1 and
speaks v1 on this connection from then on, one request at a time, each answered by the
next packet. ``deadline_ms`` and ``propagated_timeout`` turn ``timeout=`` and the
deadline of a request being handled into Deadline-Ms. The wire: docs/protocol.md.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

from .clientcore import Sendable, decode_reply
from ..wire.codecs import CODECS, DecodeError, get_codec
from ..wire.errors import ERR_HEADER_INVALID, ClientTimeout, HeaderInvalid, PayloadTooLarge, ProtocolError
from ..model.peer import encode_payload
from ..wire.protocol import (
    CLIENT_MAX_PACKET_SIZE,
    FRAME_TAIL,
    ITEM,
    MAX_DEADLINE_MS,
    MAX_STREAM_ID,
    PROTOCOL_VERSION,
    PROTOCOL_VERSION_2,
    PUSH,
    REPLY,
    SENT_BY_SERVER,
    V2_TAIL,
    Byteorder,
    Frame,
    FrameDecoder,
    FrameError,
    check_byteorder,
    check_header_size,
    encode_cancel,
    encode_frame,
    encode_request,
)

#: Items of one stream held for an application that reads them slower than they come.
#: Past this the core says ``reading_paused``: the shell stops reading the connection,
#: TCP pushes back, and the server stops resuming the stream's generator (DESIGN §9).
#: One socket read past it is still decoded, so a stream holds at most this plus one read.
MAX_STREAM_ITEMS = 256

#: Pushed packets kept for a client that does not read them; past this the oldest are
#: dropped (and counted in ``MuxCore.pushed_dropped``): a server that pushes faster than
#: the application reads must not grow the client's memory without bound.
MAX_PUSHED = 10_000


class Reply(NamedTuple):
    """The answer to the request on ``stream_id``: its REPLY (on v1: the next packet)."""

    stream_id: int
    frame: Frame


class Item(NamedTuple):
    """One ITEM of the stream that answers the request on ``stream_id``."""

    stream_id: int
    frame: Frame


class End(NamedTuple):
    """The END of that stream: ``frame`` is None when it ended without an error."""

    stream_id: int
    frame: Frame | None


class Pushed(NamedTuple):
    """A packet that answers no request (also appended to ``MuxCore.pushed``)."""

    frame: Frame


class ConnectionFailure(NamedTuple):
    """A REPLY on Stream-Id 0: an error about the connection itself (the server may close it)."""

    frame: Frame


class FellBack(NamedTuple):
    """The server speaks v1 only: the request on ``stream_id`` goes out again in v1."""

    stream_id: int


MuxEvent = Union[Reply, Item, End, Pushed, ConnectionFailure, FellBack]


class Pending(NamedTuple):
    """A request that never reached the server, to send on another connection (``MuxCore.resend``)."""

    stream_id: int
    encoding: int
    payload: bytes
    deadline_ms: int


@dataclass(slots=True)
class StreamState:
    """What arrived for a streamed request and the application has not taken yet (``next_in_stream``)."""

    items: deque[Frame]
    #: The terminal event once it arrived: ``End`` or ``Reply``; None while the stream runs.
    end: End | Reply | None = None
    #: The server speaks v1 only, which cannot mark the end of a stream: it never went out.
    refused: bool = False


@dataclass(slots=True)
class _Call:
    stream_id: int
    encoding: int
    payload: bytes
    deadline_ms: int
    #: Its frame is queued in ``_out`` (to go out with the next ``data_to_send``).
    framed: bool = False
    #: ``data_to_send`` handed its frame out: the server may have it.
    sent: bool = False
    #: The caller gave up; its terminal frame is still awaited before the Stream-Id is reused.
    cancelled: bool = False
    #: A streamed request (``open_stream``): its items wait here.
    stream: StreamState | None = None


def deadline_ms(timeout: float | None) -> int:
    """The Deadline-Ms of a request that waits ``timeout`` seconds (None: 0, no deadline).

    Rounded up to a whole millisecond, so that the server never gives up first; at most
    ``MAX_DEADLINE_MS`` (about 49.7 days).
    """
    if timeout is None:
        return 0
    if not timeout > 0:  # also NaN
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    return min(MAX_DEADLINE_MS, max(1, math.ceil(timeout * 1000)))


def propagated_timeout(timeout: float | None, caller_deadline: float | None, now: float) -> float | None:
    """How long a request made while handling another may wait: its own ``timeout``, or
    less when the caller of the request being handled gives up first.

    Args:
        timeout: the client's own timeout in seconds (None: none).
        caller_deadline: when the request being handled expires (``packet.deadline``), on
            the clock of ``now``; None when it has no deadline (or is not a v2 request).
        now: the current time on that clock (``loop.time()``).

    Raises:
        ClientTimeout: that deadline has passed: the answer could no longer be used.
    """
    if caller_deadline is None:
        return timeout
    remaining = caller_deadline - now
    if remaining <= 0:
        raise ClientTimeout("the deadline of the request being handled passed before this request was sent")
    return remaining if timeout is None else min(timeout, remaining)


def is_header_invalid(frame: Frame) -> bool:
    """True when ``frame`` is an ERR_HEADER_INVALID error reply (any encoding, any details)."""
    try:
        value = CODECS[frame.encoding].decode(frame.payload)
    except (DecodeError, KeyError):
        return False
    return isinstance(value, dict) and value.get("status") == "failure" and value.get("error") == ERR_HEADER_INVALID


class MuxCore:
    """One connection's requests, by Stream-Id; see the module docstring.

    Args:
        encoding: the default encoding of requests.
        header_size, byteorder: the Content-Length field, as the server has it.
        protocol: 2 to speak v2 (falling back to v1 when the server answers so), 1 for v1.
        max_packet_size: the largest frame accepted from the server.
        first_stream_id: where Stream-Ids start (1; tests start near the wrap).
    """

    def __init__(
        self,
        encoding: str = "json",
        header_size: int = 4,
        byteorder: str = "big",
        protocol: int = 2,
        max_packet_size: int = CLIENT_MAX_PACKET_SIZE,
        first_stream_id: int = 1,
    ) -> None:
        if protocol not in (1, 2):
            raise ValueError(f"protocol must be 1 or 2, not {protocol!r}")
        if not 1 <= first_stream_id <= MAX_STREAM_ID:
            raise ValueError(f"first_stream_id must be 1 to {MAX_STREAM_ID}, not {first_stream_id!r}")
        self.encoding = get_codec(encoding).name
        self.header_size = check_header_size(header_size)
        self.byteorder: Byteorder = check_byteorder(byteorder)
        self.protocol = protocol
        #: The connection's Protocol-Version: None until the server's first frame (v2), else 22 or 23.
        self.version: int | None = None if protocol == 2 else PROTOCOL_VERSION
        kinds = SENT_BY_SERVER if protocol == 2 else None
        self._decoder = FrameDecoder(self.header_size, self.byteorder, max_packet_size, frozenset(CODECS), kinds=kinds)
        self._calls: dict[int, _Call] = {}
        self._queue: deque[int] = deque()  # Stream-Ids of requests not sent yet, in order
        self._out: list[tuple[int, bytes]] = []  # (Stream-Id of a REQUEST, or 0; frame) to write
        self._next_id = first_stream_id
        self._probe: int | None = None  # the first request, sent before the version was known
        self._v1_current: int | None = None  # v1: the request the next packet answers
        self.pushed: deque[Frame] = deque()
        self.pushed_dropped = 0
        #: Frames for a Stream-Id with no request in flight (a server bug); ignored.
        self.unmatched = 0
        self.eof = False
        #: Streamed requests, by Stream-Id, until the application took their end.
        self._streams: dict[int, StreamState] = {}

    # -- requests ---------------------------------------------------------------------------

    def send_request(self, obj: Sendable, encoding: str | None = None, timeout: float | None = None) -> int:
        """Queue ``obj`` as a request; its Stream-Id, the key of the events that answer it.

        ``timeout`` (seconds) is sent as its Deadline-Ms. The frame goes out with the
        next ``data_to_send()``, at once on v2, after the requests before it on v1 or
        while the version is not known yet.

        Raises:
            OverflowError: the request does not fit in a ``header_size``-byte length.
        """
        codec = get_codec(encoding or self.encoding)
        payload = encode_payload(obj, codec.name)
        if len(payload) + (V2_TAIL if self.protocol == 2 else FRAME_TAIL) >= 256**self.header_size:
            raise OverflowError(f"a {len(payload)}-byte payload does not fit in a {self.header_size}-byte Content-Length")
        return self.resend(Pending(0, codec.id, payload, deadline_ms(timeout)))

    def open_stream(self, obj: Sendable, encoding: str | None = None, timeout: float | None = None) -> int:
        """Queue ``obj`` as a request answered by a stream (ITEMs then an END); its Stream-Id.

        Its items are held by the core (``next_in_stream``); a REPLY also ends it (an
        error, or a handler that does not stream). v2 only: on a connection known to
        speak v1 it raises ``ProtocolError``; a probe answered in v1 is refused (its
        state says ``refused``) rather than sent again.
        """
        if self.version == PROTOCOL_VERSION:
            raise ProtocolError("the server speaks AsyncAProto v1 only, which cannot mark the end of a stream")
        stream_id = self.send_request(obj, encoding, timeout)
        state = self._streams[stream_id] = StreamState(deque())
        self._calls[stream_id].stream = state
        return stream_id

    def next_in_stream(self, stream_id: int) -> Item | End | Reply | None:
        """The next event of the stream on ``stream_id``: an ``Item``, then its ``End`` (or the
        ``Reply`` that ended it); None when nothing is there yet (read more). Once its end was
        taken the stream is forgotten."""
        state = self._streams.get(stream_id)
        if state is None:
            raise KeyError(f"no stream on Stream-Id {stream_id}")
        if state.items:
            return Item(stream_id, state.items.popleft())
        end = state.end
        if end is not None:
            del self._streams[stream_id]
        return end

    def stream_refused(self, stream_id: int) -> bool:
        """The stream on ``stream_id`` was refused: the server speaks v1 only."""
        state = self._streams.get(stream_id)
        return state is not None and state.refused

    def close_stream(self, stream_id: int) -> bool:
        """The application stops reading the stream on ``stream_id``: drop what it holds and
        CANCEL it when it is still running (``cancel``)."""
        state = self._streams.pop(stream_id, None)
        if state is not None:
            state.items.clear()
            if state.end is not None or state.refused:
                return True
        return self.cancel(stream_id)

    @property
    def reading_paused(self) -> bool:
        """True while a stream holds ``MAX_STREAM_ITEMS`` items the application has not taken:
        the shell should stop reading the connection until it takes some."""
        return any(len(state.items) >= MAX_STREAM_ITEMS for state in self._streams.values())

    def resend(self, pending: Pending) -> int:
        """Queue a request taken from another connection (``detach_unsent``); its new Stream-Id."""
        call = _Call(self._allocate(), pending.encoding, pending.payload, pending.deadline_ms)
        self._calls[call.stream_id] = call
        if self.version == PROTOCOL_VERSION_2:
            self._write(call)
        elif self.version is None and self._probe is None:
            self._probe = call.stream_id
            self._write(call)
        else:
            self._queue.append(call.stream_id)
            self._next_v1()
        return call.stream_id

    def cancel(self, stream_id: int) -> bool:
        """The caller of the request on ``stream_id`` gave up; False when the connection is no longer in step.

        A request not sent yet is forgotten. On v2 a CANCEL goes out (once the version is
        known) and the Stream-Id stays taken until its terminal frame arrives, which is
        then dropped. On v1 nothing can stop a request the server has: its answer would
        be taken for the next request's, so the connection must be dropped (False).
        """
        call = self._calls.get(stream_id)
        if call is None or call.cancelled:
            return True
        if not call.sent:
            self._unqueue(call)
            return True
        call.cancelled = True
        if self.version == PROTOCOL_VERSION_2:
            self._out.append((0, encode_cancel(stream_id, call.encoding, self.header_size, self.byteorder)))
            return True
        return self.version is None  # the probe: CANCEL once the server proves it speaks v2

    def _unqueue(self, call: _Call) -> None:
        """Forget a request whose frame was not handed out; the next one takes its turn."""
        del self._calls[call.stream_id]
        if call.framed:
            self._out = [item for item in self._out if item[0] != call.stream_id]
        else:
            self._queue.remove(call.stream_id)
        if call.stream_id == self._probe and self.version is None:
            self._probe = None
            if self._queue:  # the next request probes instead
                self._probe = self._queue[0]
                self._write(self._calls[self._queue.popleft()])
        elif call.stream_id == self._v1_current:
            self._v1_current = None
            self._next_v1()

    def data_to_send(self) -> bytes:
        """The frames to write now, in order (b"" when there are none)."""
        out, self._out = self._out, []
        calls = self._calls
        for stream_id, _ in out:
            call = calls.get(stream_id)
            if call is not None:
                call.sent = True
        return b"".join(frame for _, frame in out)

    # -- what the server sent ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[MuxEvent]:
        """Bytes read from the server (``b""``: it closed the connection); the events they complete.

        Raises:
            ProtocolError: the server's bytes are not valid frames (drop the connection).
        """
        if not data:
            self.eof = True
            return []
        events: list[MuxEvent] = []
        for raw in self._decoder.receive(data, 1 << 30):
            if isinstance(raw, FrameError):
                raise (PayloadTooLarge if raw.fatal else HeaderInvalid)(f"the server sent a bad frame: {raw.detail}")
            if len(raw) == 2:
                self._v1_frame(Frame(*raw), events)
            else:
                self._v2_frame(raw, events)
        return events

    def _v2_frame(self, raw: tuple[int, int, int, int, bytes], events: list[MuxEvent]) -> None:
        encoding, kind, stream_id, _, payload = raw
        frame = Frame(encoding, payload)
        first = self.version is None
        self.version = PROTOCOL_VERSION_2
        if kind == PUSH:
            self._push(frame, events)
        elif stream_id == 0:
            events.append(ConnectionFailure(frame))
        else:
            call = self._calls.get(stream_id)
            if call is None:
                self.unmatched += 1
            elif kind == ITEM:
                if not call.cancelled:
                    if call.stream is not None:
                        call.stream.items.append(frame)
                    events.append(Item(stream_id, frame))
            else:  # REPLY or END: the request's terminal frame frees its Stream-Id
                del self._calls[stream_id]
                if not call.cancelled:
                    end = Reply(stream_id, frame) if kind == REPLY else End(stream_id, frame if payload else None)
                    if call.stream is not None:
                        call.stream.end = end
                    events.append(end)
        if first:
            self._start_v2()

    def _start_v2(self) -> None:
        """The server speaks v2: a cancelled probe gets its CANCEL, the waiting requests go out."""
        probe = self._calls.get(self._probe) if self._probe is not None else None
        if probe is not None and probe.cancelled:
            self._out.append((0, encode_cancel(probe.stream_id, probe.encoding, self.header_size, self.byteorder)))
        while self._queue:
            self._write(self._calls[self._queue.popleft()])

    def _v1_frame(self, frame: Frame, events: list[MuxEvent]) -> None:
        if self.version is None:
            self.version = PROTOCOL_VERSION
            probe = self._probe
            if probe is not None and is_header_invalid(frame):
                self._fall_back(probe, events)
                return
            self._v1_current = probe  # an answer of a v1 server to it (ERR_SERVER_BUSY, ...)
        current = self._v1_current
        if current is None:
            self._push(frame, events)  # v1 packets no request asked for
            return
        call = self._calls.pop(current)
        self._v1_current = None
        if not call.cancelled:
            if call.stream is not None:  # a v1 answer to a stream probe (ERR_SERVER_BUSY...) ends it
                call.stream.end = Reply(current, frame)
            events.append(Reply(current, frame))
        self._next_v1()

    def _fall_back(self, probe: int, events: list[MuxEvent]) -> None:
        """The server did not handle the v2 probe: send it again in v1, first (a stream is
        refused instead, as are the streams that waited: v1 cannot mark their end)."""
        for waiting in [sid for sid in self._queue if self._calls[sid].stream is not None]:
            self._queue.remove(waiting)
            self._refuse(self._calls.pop(waiting), events)
        call = self._calls[probe]
        if call.cancelled:
            del self._calls[probe]
        elif call.stream is not None:
            del self._calls[probe]
            self._refuse(call, events)
        else:
            call.sent = call.framed = False
            self._queue.appendleft(probe)
            events.append(FellBack(probe))
        self._next_v1()

    def _refuse(self, call: _Call, events: list[MuxEvent]) -> None:
        assert call.stream is not None
        call.stream.refused = True
        events.append(FellBack(call.stream_id))

    def _push(self, frame: Frame, events: list[MuxEvent]) -> None:
        if len(self.pushed) >= MAX_PUSHED:
            self.pushed.popleft()
            self.pushed_dropped += 1
        self.pushed.append(frame)
        events.append(Pushed(frame))

    # -- the connection ended -----------------------------------------------------------------

    def in_flight(self) -> list[int]:
        """Stream-Ids of requests handed out to be written and not answered (nor cancelled):
        what a lost connection fails."""
        return [sid for sid, call in self._calls.items() if call.sent and not call.cancelled]

    def open_calls(self) -> int:
        """How many requests hold a Stream-Id (in flight, queued, or cancelled and awaiting
        their terminal frame)."""
        return len(self._calls)

    def detach_unsent(self) -> list[Pending]:
        """The requests never handed out, in order, removed from this core: they can go on
        another connection."""
        order = [sid for sid, _ in self._out if sid in self._calls] + list(self._queue)
        self._out, self._queue = [], deque()
        return [self._pending(self._calls.pop(sid)) for sid in order]

    def detach(self, stream_id: int) -> Pending:
        """Take a written request back to send it on another connection (when TCP proved
        the server never read it: see ``clientcore.maybe_unread``)."""
        return self._pending(self._calls.pop(stream_id))

    @staticmethod
    def _pending(call: _Call) -> Pending:
        return Pending(call.stream_id, call.encoding, call.payload, call.deadline_ms)

    def decode(self, frame: Frame) -> dict[str, Any]:
        """The map carried by ``frame``."""
        return decode_reply(frame)

    # -- internals ----------------------------------------------------------------------------

    def _allocate(self) -> int:
        """The next Stream-Id: never 0, wrapping after ``MAX_STREAM_ID``, skipping ids in flight."""
        calls = self._calls
        for _ in range(len(calls) + 1):  # among len(calls) + 1 consecutive ids one is free
            stream_id = self._next_id
            self._next_id = stream_id + 1 if stream_id < MAX_STREAM_ID else 1
            if stream_id not in calls:
                return stream_id
        raise ProtocolError(f"every Stream-Id is in flight ({len(calls)})")  # pragma: no cover - 2**32 - 1 requests

    def _write(self, call: _Call) -> None:
        if self.version == PROTOCOL_VERSION:
            frame = encode_frame(call.payload, call.encoding, self.header_size, self.byteorder)
            self._v1_current = call.stream_id
        else:
            frame = encode_request(call.stream_id, call.payload, call.encoding, call.deadline_ms, self.header_size, self.byteorder)
        self._out.append((call.stream_id, frame))
        call.framed = True

    def _next_v1(self) -> None:
        """v1: send the next waiting request once the one before it was answered."""
        if self.version == PROTOCOL_VERSION and self._v1_current is None and self._queue:
            self._write(self._calls[self._queue.popleft()])
