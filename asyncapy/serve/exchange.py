"""The one way out: every reply and error reply of a connection leaves through its ``Exchange``.

A connection moves bytes; its exchange knows what they mean. The connection hands it
each frame (``begin``), the result of each handler coroutine (``finish``) or what it
raised (``failed``), frame errors and timeouts; the exchange decodes, runs the
pipeline's packet layers (``asyncapy.pipeline``), and writes every answer through
``_write``, which knows the request it answers, its outcome code and the
``error_details`` policy. Observers (``asyncapy.observe.Record``) are told the outcome
here; nothing parses sent bytes to learn it.

Exactly one answer per request: an error that comes after something was already sent
for the packet (a middleware that raises after ``call_next()``, a teardown, an exception
handler) is logged, never sent as a second packet, which a pipelining client would read
as the answer to its next request. Whatever a handler raises, ``BaseException``s
included, the packet gets its answer and the server goes on.

The ``Client`` writes straight to the connection, which counts the frames it writes;
the exchange reads that count to know whether the packet being handled was answered.

A streaming handler (DESIGN §9) answers with items (``item``) then an end (``end``):
while its stream is open, an error is not a second answer but the one that ends the
stream (an END with the error map on v2, an ordinary error packet on v1); once it
ended, anything failing is logged. A link that writes v2 frames has ``write_item`` and
``write_end``; on v1 each item is an ordinary packet and nothing marks a clean end.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from time import perf_counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..ops.logs import clean
from ..wire.codecs import CODEC_IDS, CODECS, DecodeError, EncodeError
from ..wire.errors import (
    ERR_INTERNAL,
    ERR_NO_HANDLER,
    ERR_REQUEST_MALFORMED,
    ERR_TIMED_OUT,
    ApiError,
    StopPropagation,
    error_payload,
)
from ..model.answers import StreamClosed
from .liveness import peer_left
from ..model.packet import received_packet
from ..model.peer import CLOSED_LINK, REPLY_ENCODERS, Client, reply_encoder
from ..wire.protocol import FrameError, RawFrame
from ..app.routing import Miss

if TYPE_CHECKING:
    from ..ops.observe import Record

logger = logging.getLogger("asyncapy")

#: ERR_INTERNAL's detail: what failed is in the log, never in the reply.
INTERNAL_DETAIL = "the handler failed; the error is in the server's log"

#: A layer of the packet path (``asyncapy.pipeline``): (client, packet) -> ``Started``.
Layer = Callable[[Client, Any], Any]
#: What a packet layer returns: the coroutine that handles the packet (its result is the
#: reply, a ``Miss`` or None), a ``Miss`` (no handler), or None (answered already).
Started = Coroutine[Any, Any, Any] | Miss | None


class HandlerTimedOut(Exception):
    """The handlers of one packet ran past ``handler_timeout`` (``asyncapy.pipeline``)."""


class Rules(Protocol):
    """What an ``Exchange`` needs from its pipeline (``asyncapy.serve.pipeline.Pipeline``)."""

    @property
    def entry(self) -> Layer: ...
    @property
    def default_encoding(self) -> int: ...
    @property
    def error_details(self) -> bool: ...
    @property
    def debug(self) -> bool: ...
    @property
    def handler_timeout(self) -> float | None: ...

    def close_session(self, ex: Exchange) -> None: ...


class Link(Protocol):
    """What an ``Exchange`` needs from the connection under it (``asyncapy.serve.connection``)."""

    closing: bool
    #: Frames written for the packet being handled (the exchange resets it as a packet begins).
    writes: int

    def write_payload(self, payload: bytes, encoding: int) -> None: ...
    def close(self) -> None: ...
    def drain(self) -> Awaitable[None]: ...
    def cancelled_by_server(self) -> bool: ...


class StreamLink(Link, Protocol):
    """A link that marks streamed answers (v2): ITEM frames, then one END.

    A link without these methods (v1's ``Connection``) gets each item as an ordinary
    packet (``write_payload``) and an error that ends a stream as an error packet.
    """

    def write_item(self, payload: bytes, encoding: int) -> None:
        """One ITEM frame of the request's stream (counts in ``writes``)."""

    def write_end(self, payload: bytes | None, encoding: int) -> None:
        """The stream's END frame: ``payload`` None for an END without error, else the
        encoded error map that ended it (counts in ``writes``). The request's terminal frame."""


#: ``Exchange.stream`` values: no stream open, or a streaming handler's stream is open.
NO_STREAM: Final = 0
STREAM_OPEN: Final = 1
#: v1: how often an open stream looks whether its peer left (DESIGN §9: closed within 1 s).
PEER_CHECK_EVERY: Final = 0.5


class _Gone(Link):
    """What an exchange writes through once its connection is gone: nothing."""

    closing = True
    writes = 0

    def write_payload(self, payload: bytes, encoding: int) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> Awaitable[None]:
        return CLOSED_LINK.drain()

    def cancelled_by_server(self) -> bool:
        return True  # the connection went away under the handler: nothing to answer


GONE: Link = _Gone()


class Exchange:
    """One connection's packets as requests and answers; see the module docstring.

    One per connection: AsyncAProto v1 handles a connection's packets one at a time,
    so ``writes``, ``code`` and the record describe the packet being handled. It is the
    ``Answers`` of ``asyncapy.model.answers``.
    """

    __slots__ = (
        "client", "code", "conn", "encoding_id", "member", "record", "stream", "_entry", "_pipeline",
        "_session_open", "_stream_task", "_stream_watch",
    )  # fmt: skip

    def __init__(self, pipeline: Rules, conn: Link, client: Client, record: Record | None) -> None:
        self._pipeline = pipeline
        self._entry = pipeline.entry
        self.conn = conn
        self.client = client
        self.record = record
        #: The session's encoding (its first packet's), once known.
        self.encoding_id: int | None = None
        #: The outcome code of the packet being handled when it is an error (None: OK).
        self.code: str | None = None
        self._session_open = False
        #: The session's name in the shared admission (``SharedSessions``), if it was counted there.
        self.member: str | None = None
        #: ``STREAM_OPEN`` while a streaming handler's stream is open (``open_stream`` to its end).
        self.stream = NO_STREAM
        #: The task the open stream runs in: a lost connection cancels it (v1).
        self._stream_task: asyncio.Task[Any] | None = None
        #: v1: the timer that looks whether the peer of an open stream left (``_watch_peer``).
        self._stream_watch: asyncio.TimerHandle | None = None

    @property
    def writes(self) -> int:
        """Frames written for the packet being handled (its reply, its sends, its error)."""
        return self.conn.writes

    def note(self, handler: str) -> None:
        """A handler started for the packet being handled (observation names it)."""
        record = self.record
        if record is not None:
            record.ran = handler if record.ran is None else f"{record.ran},{handler}"

    # -- packets -------------------------------------------------------------------------

    def begin(self, frame: RawFrame) -> Coroutine[Any, Any, Any] | None:
        """Decode ``frame`` and run the packet layers: the coroutine to run, or None when answered."""
        record = self.record
        if record is not None:  # Record.begin, inlined: this runs for every observed packet
            record.started = perf_counter()
            record.ran = record.named = None
            self.code = None  # what the record reports (set by ``error``)
        self.conn.writes = 0
        client = self.client
        encoding, raw = frame
        codec = CODECS[encoding]
        if self.encoding_id is None:
            self.encoding_id = encoding
            client.encoding = codec.name
        try:
            payload = codec.decode(raw)
        except DecodeError as exc:
            self.error(ERR_REQUEST_MALFORMED, str(exc), encoding)
            self._end()
            return None
        if type(payload) is not dict:
            self.error(ERR_REQUEST_MALFORMED, f"the payload must be a map, not {_kind(payload)}", encoding)
            self._end()
            return None
        packet = received_packet(payload, codec.name, client, raw)
        try:
            started = self._entry(client, packet)
        except BaseException as exc:  # a filter or validator of the application raised (not a miss)
            self.failed(exc, encoding)
            return None
        if started is None:
            self._end()
            return None
        if type(started) is Miss:
            self.error(ERR_NO_HANDLER, started.detail, encoding, started.errors)
            self._end()
            return None
        if record is not None and record.names is not None:  # the route's name, looked up once
            named = record.named = record.names.get(getattr(started, "__qualname__", None))  # type: ignore[arg-type]
            if named is not None:
                record.ran = named.name
        return started  # type: ignore[no-any-return]

    def finish(self, result: Any, encoding: int, report: bool = True) -> None:
        """A packet's coroutine returned ``result``: write it if it is a reply (a dict or a
        model; anything else is ignored), answer a ``Miss``; then report the packet."""
        if result is not None:
            kind = type(result)
            if kind is Miss:
                self.error(ERR_NO_HANDLER, result.detail, encoding, result.errors)
            else:
                name = self.client.encoding
                try:
                    try:
                        encode = REPLY_ENCODERS[name][kind]
                    except KeyError:
                        encode = reply_encoder(kind, name)  # a first reply of this type (or an unknown encoding)
                    conn = self.conn
                    if encode is not None and not conn.closing:
                        # A reply the codec cannot carry, or too long for header_size, is the handler's failure.
                        conn.write_payload(encode(result), CODEC_IDS[name])
                except Exception as exc:
                    self._fail(exc, encoding)
        record = self.record
        if record is not None and report:
            record.end(self)

    def reply(self, result: Any, encoding: int) -> None:
        """Write what a handler returned, without ending the packet (a layer answers for it)."""
        self.finish(result, encoding, False)

    def failed(self, exc: BaseException, encoding: int) -> None:
        """A packet's handling raised ``exc``: its answer (at most one), then the record."""
        self._fail(exc, encoding)
        record = self.record
        if record is not None:
            record.end(self)

    def _fail(self, exc: BaseException, encoding: int) -> None:
        if isinstance(exc, StopPropagation):
            return
        if isinstance(exc, ApiError):  # the application's own error reply
            self.error(exc.code, exc.detail, encoding)
            return
        if isinstance(exc, HandlerTimedOut):
            timeout = self._pipeline.handler_timeout
            logger.warning("(%s) A handler ran past handler_timeout (%s s) and was cancelled", self._sid(), timeout)
            self.error(ERR_TIMED_OUT, f"the handler did not finish within {timeout} seconds", encoding)
            return
        if isinstance(exc, asyncio.CancelledError) and self.conn.cancelled_by_server():
            self.code = self.code or "CANCELLED"
            logger.info("(%s) A handler was cancelled", self._sid())
            return
        if isinstance(exc, EncodeError):  # a reply its encoding cannot carry: the reason says it all
            logger.error("(%s) A reply could not be sent: %s", self._sid(), clean(exc))
        elif isinstance(exc, asyncio.CancelledError):
            logger.error("(%s) A handler raised CancelledError (it awaited something that was cancelled)",
                         self._sid(), exc_info=exc)  # fmt: skip
        else:
            logger.error("(%s) A handler raised while handling a packet", self._sid(), exc_info=exc)
        self.error(ERR_INTERNAL, INTERNAL_DETAIL, encoding)

    def error(self, code: str, detail: Any = None, encoding: int | None = None, errors: Any = None) -> None:
        """The error reply of the packet being handled, unless it was answered already.

        While a stream is open, the error ends it (whatever items were sent).
        """
        if self.stream:
            self.code = code
            self._end_stream_with(code, detail, encoding, errors)
            return
        if self.writes:
            logger.error(
                "(%s) %s after the packet was answered: logged, not sent (one answer per request)", self._sid(), code
            )
            return
        self.code = code
        self.write_error(code, detail, encoding, errors)

    def mapped(self, reply: Any, encoding: int) -> None:
        """An exception handler's reply: the packet's answer unless it was answered already
        (while a stream is open, the reply ends it)."""
        if self.stream:
            if isinstance(reply, dict) and reply.get("status") == "failure":
                error = reply.get("error")
                self.code = error if type(error) is str else ERR_INTERNAL
            self._end_stream(reply)
            return
        if self.writes:
            logger.error("(%s) An exception handler's reply after the packet was answered: logged, not sent",
                         self._sid())  # fmt: skip
            return
        if isinstance(reply, dict) and reply.get("status") == "failure":
            error = reply.get("error")
            self.code = error if type(error) is str else ERR_INTERNAL
        self.reply(reply, encoding)

    def write_error(self, code: str, detail: Any = None, encoding: int | None = None, errors: Any = None) -> None:
        """Write an error reply, whatever was sent before (errors of the connection itself)."""
        if encoding is None:
            encoding = self.encoding_id if self.encoding_id is not None else self._pipeline.default_encoding
        codec = CODECS[encoding]
        pipeline = self._pipeline
        if pipeline.debug:
            logger.debug("(%s) Replying %s: %s", self._sid(), code, clean(detail))  # maybe the client's text
        if not pipeline.error_details:
            detail = errors = None
        try:
            self.conn.write_payload(codec.encode(error_payload(code, detail, errors)), encoding)
        except (OverflowError, struct.error):  # the detail is too long for header_size: the bare error fits
            self.conn.write_payload(codec.encode(error_payload(code)), encoding)
        except EncodeError as exc:  # an ApiError's detail the encoding cannot carry: the app's failure
            logger.error("(%s) A reply could not be sent: %s", self._sid(), clean(exc))
            self.conn.write_payload(codec.encode(error_payload(ERR_INTERNAL, INTERNAL_DETAIL)), encoding)

    def frame_error(self, error: FrameError) -> None:
        """A frame the decoder refused: its error reply is the answer of a packet of its own."""
        record = self.record
        if record is not None:
            record.begin()
            self.code = None
        self.conn.writes = 0
        self.error(error.code, error.detail, error.encoding)
        self._end()

    def connection_error(self, code: str, detail: str) -> None:
        """An error of the connection itself (ERR_TIMED_OUT, a refusal): written, then the connection closes."""
        self.write_error(code, detail)
        record = self.record
        if record is not None:
            record.refused(code)

    def _end(self) -> None:
        record = self.record
        if record is not None:
            record.end(self)

    def _sid(self) -> Any:
        return self.client.session.id

    # -- streamed answers (DESIGN §9) -------------------------------------------------------

    def open_stream(self) -> None:
        """A streaming handler starts answering the packet being handled."""
        self.stream = STREAM_OPEN
        self._stream_task = asyncio.current_task()
        if not hasattr(self.conn, "write_item"):  # v1: nothing else tells a gone peer from a quiet one
            self._stream_watch = asyncio.get_running_loop().call_later(PEER_CHECK_EVERY, self._watch_peer)

    def _watch_peer(self) -> None:
        """v1, while a stream is open: a peer that left (EOF, reset) closes the connection, whose
        loss cancels the stream (``lost``), even while its generator waits for its next item."""
        self._stream_watch = None
        conn = self.conn
        transport = getattr(conn, "transport", None)
        if not self.stream or transport is None:
            return
        if peer_left(transport):
            logger.info("(%s) The peer left during a stream: closing it", self._sid())
            getattr(conn, "abort", conn.close)()
            return
        self._stream_watch = asyncio.get_running_loop().call_later(PEER_CHECK_EVERY, self._watch_peer)

    def item(self, obj: Any) -> Awaitable[None]:
        """Write one item of the open stream (encoded as a reply is); await the result to
        wait while the connection's write buffer is over its high-water mark.

        Raises:
            StreamClosed: the connection is closing: the stream has no one to go to.
            EncodeError: the item cannot be encoded (NaN in JSON, an integer too big).
        """
        conn = self.conn
        if conn.closing:
            raise StreamClosed("the connection is closing")
        name = self.client.encoding
        try:
            encode = REPLY_ENCODERS[name][type(obj)]
        except KeyError:
            encode = reply_encoder(type(obj), name)
        if encode is None:
            raise TypeError(f"a stream item must be a dict or a pydantic model, not {type(obj).__name__}")
        payload = encode(obj)
        write_item = getattr(conn, "write_item", None)
        if write_item is None:
            conn.write_payload(payload, CODEC_IDS[name])  # v1: an ordinary packet
        else:
            write_item(payload, CODEC_IDS[name])
        return conn.drain()

    def end(self, error: Any = None) -> None:
        """End the open stream: ``error`` None when it ended well, else the map (a dict or
        a model) that ends it. Nothing happens when no stream is open (it ended already)."""
        if self.stream:
            self._end_stream(error)

    def _end_stream(self, error: Any) -> None:
        self.stream = NO_STREAM
        self._stream_task = None
        watch, self._stream_watch = self._stream_watch, None
        if watch is not None:
            watch.cancel()
        conn = self.conn
        encoding = CODEC_IDS[self.client.encoding]
        payload = None
        if error is not None:
            encode = reply_encoder(type(error), self.client.encoding)
            if encode is None:
                logger.error("(%s) A stream ended with a %s, not a map: ended without it",
                             self._sid(), type(error).__name__)  # fmt: skip
            else:
                try:
                    payload = encode(error)
                except Exception as exc:
                    logger.error("(%s) The error that ended a stream could not be encoded: %s", self._sid(), clean(exc))
                    payload = CODECS[encoding].encode(error_payload(ERR_INTERNAL, INTERNAL_DETAIL))
        if conn.closing:
            return
        write_end = getattr(conn, "write_end", None)
        try:
            if write_end is not None:
                write_end(payload, encoding)
            elif payload is not None:
                conn.write_payload(payload, encoding)  # v1: the error is an ordinary packet
            else:
                conn.writes += 1  # v1: nothing marks the end, but the packet was answered
        except (OverflowError, struct.error):  # the detail is too long for header_size: the bare error fits
            bare = CODECS[encoding].encode(error_payload(self.code or ERR_INTERNAL))
            if write_end is not None:
                write_end(bare, encoding)
            else:
                conn.write_payload(bare, encoding)

    def _end_stream_with(self, code: str, detail: Any, encoding: int | None, errors: Any) -> None:
        """End the open stream with an error map, under the ``error_details`` policy."""
        pipeline = self._pipeline
        if pipeline.debug:
            logger.debug("(%s) Ending a stream with %s: %s", self._sid(), code, clean(detail))
        if not pipeline.error_details:
            detail = errors = None
        self._end_stream(error_payload(code, detail, errors))

    # -- the connection's life ---------------------------------------------------------------

    def opened(self) -> None:
        """The session was admitted: it counts in the registry until ``lost``."""
        self._session_open = True

    def lost(self) -> None:
        """The connection is gone: its session ends and the client detaches."""
        if self._session_open:
            self._session_open = False
            self._pipeline.close_session(self)
        self.client._detach()  # freed by reference counting, not left to the cycle collector
        self.conn = GONE
        task, self._stream_task = self._stream_task, None
        if self.stream and task is not None and not task.done():
            task.cancel()  # the generator's finally and its teardowns run now, not at its next item


def _kind(value: object) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else type(value).__name__)

